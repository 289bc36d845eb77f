"""The sample-quality measures of lesson 11: values known in closed form, and the shipped
classifier on real digits."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_lib import metrics, models, predict
from cnn_lib.data import load_mnist


def test_inception_score_limits():
    sure_and_balanced = np.eye(10)[np.arange(1000) % 10]
    assert metrics.inception_score(sure_and_balanced) == pytest.approx(10.0)
    one_digit = np.eye(10)[np.full(500, 3)]
    assert metrics.inception_score(one_digit) == pytest.approx(1.0)
    unsure = np.full((200, 10), 0.1)
    assert metrics.inception_score(unsure) == pytest.approx(1.0)
    # two digits, each read with certainty: exp(log 2) = 2
    assert metrics.inception_score(np.eye(10)[np.arange(100) % 2]) == pytest.approx(2.0)


def test_inception_score_matches_its_definition():
    rng = np.random.default_rng(0)
    probs = metrics.softmax(rng.standard_normal((50, 4)) * 3)
    marginal = probs.mean(axis=0)
    kl = [np.sum(p * np.log(p / marginal)) for p in probs]
    assert metrics.inception_score(probs) == pytest.approx(np.exp(np.mean(kl)))


def test_class_shares_and_bad_input():
    probs = np.eye(3)[[0, 0, 1, 2, 2, 2]]
    np.testing.assert_allclose(metrics.class_shares(probs), [2 / 6, 1 / 6, 3 / 6])
    with pytest.raises(ValueError, match="softmax"):
        metrics.inception_score(np.array([[2.0, -1.0]]))
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        metrics.class_shares(np.ones(3) / 3)


def test_effective_classes():
    assert metrics.effective_classes(np.full(10, 0.1)) == pytest.approx(10.0)
    assert metrics.effective_classes([0.5, 0.5, 0.0]) == pytest.approx(2.0)
    assert metrics.effective_classes([1.0, 0.0]) == pytest.approx(1.0)
    probs = np.random.default_rng(0).dirichlet(np.ones(10), size=200)     # the bound on the inception score
    assert metrics.inception_score(probs) <= metrics.effective_classes(probs.mean(axis=0)) + 1e-12
    with pytest.raises(ValueError, match="sum to 1"):
        metrics.effective_classes([0.5, 0.6])


def test_frechet_distance_in_closed_form():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((20000, 3))
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # a shifted copy: only the means differ
    assert metrics.frechet_distance(a, a + [1.0, 2.0, 0.0]) == pytest.approx(5.0, rel=1e-9)
    # independent axes with standard deviations s and t: sum of (s - t)^2 (+ the means' term)
    b = a * [1.0, 2.0, 3.0]
    c = a * [2.0, 2.0, 1.0]
    cov_b, cov_c = np.diag(np.cov(b, rowvar=False)), np.diag(np.cov(c, rowvar=False))
    expected = np.sum((np.sqrt(cov_b) - np.sqrt(cov_c)) ** 2) + np.sum((b.mean(0) - c.mean(0)) ** 2)
    assert metrics.frechet_distance(b, c) == pytest.approx(expected, rel=1e-3, abs=1e-3)
    # symmetric, and a rotation of both sets changes nothing
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    assert metrics.frechet_distance(c, b) == pytest.approx(metrics.frechet_distance(b, c), rel=1e-6)
    assert metrics.frechet_distance(b @ q, c @ q) == pytest.approx(metrics.frechet_distance(b, c), rel=1e-6)
    with pytest.raises(ValueError, match="same D"):
        metrics.frechet_distance(a, a[:, :2])


def test_the_shipped_classifier_scores_real_digits_near_ten():
    data = load_mnist(normalize="standard")
    net = models.pretrained("lenet_small")
    probs = metrics.softmax(predict(net, data.x_test))
    score = metrics.inception_score(probs)
    assert 9.3 < score <= 10.0, score
    np.testing.assert_allclose(metrics.class_shares(probs), 0.1, atol=0.01)   # 100 of each digit
    features = metrics.penultimate_features(net, data.x_test)
    assert features.shape == (1000, 128)
    same_kind = metrics.frechet_distance(features[::2], features[1::2])
    flipped = metrics.frechet_distance(features, metrics.penultimate_features(net, data.x_test[:, :, ::-1]))
    assert same_kind < flipped / 5, (same_kind, flipped)   # upside-down digits are far from real ones
