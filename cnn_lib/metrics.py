"""Measuring generated digits with a classifier (lesson 11): is every digit there, and does a
batch of samples look like real MNIST to a network that reads digits well?

The classifier is the course's own (``models.pretrained("lenet_small")``, 99.3% on the MNIST
test set). Three numbers:

``inception_score(probs)``
    ``exp(mean over images of KL(p(y|x) || p(y)))``, with ``p(y|x)`` the classifier's
    probabilities for one image and ``p(y)`` their mean over all images (Salimans et al.,
    2016). It is large when each image is read as one digit with confidence *and* all digits
    occur equally often; its maximum is the number of classes, 10. Real MNIST test digits
    score close to it; a generator that draws only one digit, however well, scores 1.
``class_shares(probs)``
    the share of the images read as each digit: mode collapse (a generator that forgot some
    digits) shows as shares near 0. ``effective_classes(shares)`` sums them up in one number,
    ``exp(entropy of the shares)``: 10 for ten equal shares, 3 when three digits share every
    image equally. Given the mean probabilities ``p(y)`` instead of the shares, it bounds the
    inception score from above: the score is ``exp`` of the entropy of ``p(y)`` *minus* the
    mean entropy of one image's probabilities.
``frechet_distance(features_a, features_b)``
    the Fréchet distance between two Gaussians fitted to the classifier's penultimate
    features of two sets of images (Heusel et al., 2017, with the course's classifier in the
    place of Inception-v3): ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^(1/2) S_b S_a^(1/2))^(1/2))``.
    0 for identical statistics; it sees blurry or odd strokes that the class scores miss.
"""

from __future__ import annotations

import numpy as np

from .training import predict

__all__ = ["class_shares", "effective_classes", "frechet_distance", "inception_score", "penultimate_features",
           "softmax"]


def softmax(logits) -> np.ndarray:
    """Row-wise softmax of ``(N, K)`` logits, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _probabilities(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"expected probabilities of shape (N, K) with N >= 1, got shape {p.shape}")
    if np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("expected probabilities: rows of non-negative numbers that sum to 1 "
                         "(apply metrics.softmax to logits first)")
    return p


def inception_score(probs) -> float:
    """``exp(mean_x KL(p(y|x) || p(y)))`` over the rows of ``probs`` ``(N, K)``; between 1
    and K."""
    p = _probabilities(probs)
    marginal = p.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(marginal)), 0.0)
    return float(np.exp(terms.sum(axis=1).mean()))


def class_shares(probs) -> np.ndarray:
    """The share of the rows of ``probs`` ``(N, K)`` whose most probable class is each class:
    ``(K,)``, summing to 1."""
    p = _probabilities(probs)
    return np.bincount(p.argmax(axis=1), minlength=p.shape[1]) / len(p)


def effective_classes(shares) -> float:
    """``exp(-sum_k s_k log s_k)`` of class shares ``(K,)`` (e.g. :func:`class_shares`): how many
    equally common classes would be as varied; between 1 and K."""
    s = np.asarray(shares, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or np.any(s < 0) or not np.isclose(s.sum(), 1.0, atol=1e-6):
        raise ValueError(f"expected shares: a 1-d array of non-negative numbers that sum to 1, got {s!r}")
    nonzero = s[s > 0]
    return float(np.exp(-np.sum(nonzero * np.log(nonzero))))


def _sqrt_psd(matrix) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(features_a, features_b) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets ``(N_a, D)`` and
    ``(N_b, D)`` (means and covariances, see the module)."""
    a, b = (np.asarray(f, dtype=np.float64) for f in (features_a, features_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two feature arrays (N, D) with the same D, got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < 2:
        raise ValueError("each feature set needs at least 2 rows for a covariance")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrt_psd(cov_a)
    # tr((S_a^1/2 S_b S_a^1/2)^1/2): the middle matrix is symmetric PSD, so its eigenvalues
    # are >= 0 and the trace of its root is the sum of their square roots
    middle = root_a @ cov_b @ root_a
    trace_root = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def penultimate_features(model, x, *, batch_size=256) -> np.ndarray:
    """The input of a ``Sequential`` classifier's last layer for every image of ``x``, in
    evaluation mode: ``(N, D)`` (128 numbers per image for ``lenet_small``)."""
    body = type(model)(*model.layers[:-1])
    return predict(body, x, batch_size=batch_size)
