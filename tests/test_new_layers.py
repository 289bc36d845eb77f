"""The layers of lessons 10 and 11: BatchNorm1d/2d, Dropout, Unflatten, and the named
initialisers. Gradients against finite differences (float64, train and eval mode, every
tier), the tiers against each other, and the behaviour a student relies on."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TOL
from hypothesis import assume, given
from hypothesis import strategies as st
from test_gradients import agree

from cnn_lib import (
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    ReLU,
    Sequential,
    Tanh,
    Unflatten,
    check_layer,
)
from cnn_lib import init as initialisers
from cnn_lib.kernels import TIERS

F64 = np.float64


def random_bn(cls, c, seed, training=True):
    rng = np.random.default_rng(seed)
    bn = cls(c, dtype=F64)
    bn.params["weight"][...] = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)
    bn.params["bias"][...] = rng.standard_normal(c)
    bn.buffers["running_mean"][...] = rng.standard_normal(c)
    bn.buffers["running_var"][...] = rng.uniform(0.5, 2.0, c)
    return bn.train(training)


# ----------------------------------------------------------------------------- batch norm


@given(n=st.integers(2, 4), c=st.integers(1, 5), h=st.integers(1, 4), w=st.integers(1, 4),
       training=st.booleans(), scale=st.sampled_from([0.01, 1.0, 30.0]),
       seed=st.integers(0, 2**16))
def test_batchnorm2d_gradients_and_tiers(n, c, h, w, training, scale, seed):
    # with only 2 values per channel, x_hat is always +-1: y does not depend on x at all and
    # dx is round-off (a degenerate case, checked apart in the by-hand test below)
    assume(not training or n * h * w >= 3)
    bn = random_bn(BatchNorm2d, c, seed, training)
    x = np.random.default_rng(seed + 1).standard_normal((n, c, h, w)) * scale + 3.0
    report = check_layer(bn, x, tol=TOL, h=1e-6 * max(scale, 1.0))  # the step also moves gamma, beta
    report.assert_ok()
    assert {r.name for r in report.results} == {"input x", "weight", "bias"}
    agree(bn, x)


@given(shape=st.sampled_from([(3, 3), (5, 1), (3, 4, 2), (2, 2, 5)]), training=st.booleans(),
       seed=st.integers(0, 2**16))
def test_batchnorm1d_gradients_and_tiers(shape, training, seed):
    bn = random_bn(BatchNorm1d, shape[1], seed, training)
    x = np.random.default_rng(seed + 1).standard_normal(shape) * 2 - 1
    check_layer(bn, x, tol=TOL).assert_ok()
    agree(bn, x)


@pytest.mark.parametrize("impl", list(TIERS))
def test_batchnorm_each_tier_on_its_own(impl):
    for cls, shape in ((BatchNorm2d, (3, 4, 3, 2)), (BatchNorm1d, (6, 3))):
        for training in (True, False):
            bn = random_bn(cls, shape[1], 0, training)
            bn.impl = impl
            check_layer(bn, np.random.default_rng(1).standard_normal(shape), tol=TOL).assert_ok()


def test_batchnorm_normalises_and_tracks_running_statistics_by_hand():
    x = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 40.0], [7.0, 40.0]])   # (N=4, C=2)
    bn = BatchNorm1d(2, momentum=0.5, dtype=F64)
    y = bn.forward(x)
    # column 0: mean 4, biased variance 5; column 1: mean 25, biased variance 225
    np.testing.assert_allclose(y[:, 0], (x[:, 0] - 4) / np.sqrt(5 + 1e-5))
    np.testing.assert_allclose(y[:, 1], (x[:, 1] - 25) / np.sqrt(225 + 1e-5))
    # running = 0.5 * initial + 0.5 * batch, with the unbiased variance (M/(M-1) = 4/3)
    np.testing.assert_allclose(bn.buffers["running_mean"], [2.0, 12.5])
    np.testing.assert_allclose(bn.buffers["running_var"], [0.5 + 0.5 * 5 * 4 / 3, 0.5 + 0.5 * 225 * 4 / 3])
    bn.eval()
    one = bn.forward(x[:1])          # evaluation: one example alone, running statistics
    rm, rv = bn.buffers["running_mean"], bn.buffers["running_var"]
    np.testing.assert_allclose(one[0], (x[0] - rm) / np.sqrt(rv + 1e-5))
    before = {k: v.copy() for k, v in bn.buffers.items()}
    bn.forward(x)
    assert all(np.array_equal(before[k], bn.buffers[k]) for k in before), \
        "eval must not move the running statistics"
    # two values per channel: they normalise to -1 and +1, whatever they are
    two = BatchNorm1d(1, dtype=F64).forward(np.array([[3.0], [8.0]]))
    np.testing.assert_allclose(two[:, 0], [-1, 1], atol=1e-6)


def test_batchnorm_gradient_of_a_sum_is_zero_in_training():
    """Shifting every input of a channel changes nothing after normalisation: so dx sums to
    zero over each channel, whatever dy is (a property worth checking on its own)."""
    bn = random_bn(BatchNorm2d, 3, 5)
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5))
    bn.forward(x)
    dx = bn.backward(np.random.default_rng(1).standard_normal(x.shape))
    np.testing.assert_allclose(dx.sum(axis=(0, 2, 3)), 0, atol=1e-12)


def test_batchnorm_float32_stays_float32_and_matches_float64():
    x = np.random.default_rng(0).standard_normal((8, 4, 6, 6)) * 5 + 2
    dy = np.random.default_rng(1).standard_normal(x.shape)
    out = {}
    for dtype in (np.float32, F64):
        bn = BatchNorm2d(4, dtype=dtype)
        y = bn.forward(x.astype(dtype))
        dx = bn.backward(dy.astype(dtype))
        assert y.dtype == dx.dtype == bn.grads["weight"].dtype == bn.buffers["running_var"].dtype == dtype
        out[dtype] = (y, dx, bn.grads["weight"], bn.buffers["running_var"])
    for a, b in zip(out[np.float32], out[F64]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_batchnorm_errors_name_what_was_expected():
    bn = BatchNorm2d(3)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        bn.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="3"):
        bn.forward(np.zeros((2, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match="more than 1 value"):
        BatchNorm1d(3).forward(np.zeros((1, 3), np.float32))
    BatchNorm1d(3).eval().forward(np.zeros((1, 3), np.float32))   # fine in evaluation mode
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm2d(3, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        BatchNorm2d(3, eps=0)


def test_batchnorm_state_is_saved_and_loaded_and_train_eval_reach_it(tmp_path):
    net = Sequential(Conv2d(1, 4, 3, rng=0), BatchNorm2d(4), ReLU(), Flatten(),
                     Linear(4 * 6 * 6, 3, rng=1), BatchNorm1d(3))
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    for _ in range(3):
        net.forward(x)
    assert set(net.buffers) == {"1.running_mean", "1.running_var", "5.running_mean", "5.running_var"}
    net.eval()
    assert not any(layer.training for layer in net.layers)
    y = net.forward(x)
    net.save(tmp_path / "bn.npz")
    other = Sequential(Conv2d(1, 4, 3, rng=5), BatchNorm2d(4), ReLU(), Flatten(),
                       Linear(4 * 6 * 6, 3, rng=6), BatchNorm1d(3)).eval()
    other.load(tmp_path / "bn.npz")
    np.testing.assert_array_equal(other.forward(x), y)
    net.train()
    assert all(layer.training for layer in net.layers)


def test_batchnorm_network_gradients_end_to_end():
    """Conv -> BN -> ReLU stacked twice, then a linear layer with BatchNorm1d: the input
    gradient crosses both batch norms (the statistics depend on every image)."""
    model = Sequential(
        Conv2d(2, 3, 3, padding=1, bias=False, rng=0, dtype=F64), BatchNorm2d(3, dtype=F64), LeakyReLU(0.2),
        Conv2d(3, 2, 3, stride=2, bias=False, rng=1, dtype=F64), BatchNorm2d(2, dtype=F64), Tanh(), Flatten(),
        Linear(2 * 2 * 2, 4, bias=False, rng=2, dtype=F64), BatchNorm1d(4, dtype=F64),
    )
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6))
    check_layer(model, x, tol=1e-6).assert_ok()


def test_a_bias_before_batch_norm_learns_nothing():
    """Batch norm subtracts each channel's mean, so a per-channel bias just before it cancels:
    its gradient is 0 (why DCGAN-style layers before batch norm have bias=False)."""
    model = Sequential(Conv2d(2, 3, 3, rng=0, dtype=F64), BatchNorm2d(3, dtype=F64))
    x = np.random.default_rng(0).standard_normal((4, 2, 5, 5))
    model.forward(x)
    model.backward(np.random.default_rng(1).standard_normal((4, 3, 3, 3)))
    assert np.abs(model.grads["0.bias"]).max() < 1e-12
    assert np.abs(model.grads["0.weight"]).max() > 1e-3


# ----------------------------------------------------------------------------- dropout


@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
       p=st.sampled_from([0.0, 0.2, 0.5, 0.9]), seed=st.integers(0, 2**16))
def test_dropout_gradient_uses_the_forward_mask(shape, p, seed):
    drop = Dropout(p, rng=seed)
    x = np.random.default_rng(seed).standard_normal(shape)
    check_layer(drop, x, tol=TOL).assert_ok()
    y = drop.forward(x)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    dx = drop.backward(dy)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p))
    np.testing.assert_allclose(dx, np.where(kept, dy / (1 - p), 0.0))


def test_dropout_statistics_eval_and_seeding():
    x = np.ones((400, 500), np.float32)
    drop = Dropout(0.3, rng=7)
    y = drop.forward(x)
    assert y.dtype == np.float32
    share = np.mean(y == 0)
    assert abs(share - 0.3) < 4 * np.sqrt(0.3 * 0.7 / x.size)   # 4 standard errors
    assert abs(y.mean() - 1.0) < 0.01                            # scaled: the expected output is x
    assert not np.array_equal(drop.forward(x), y)                 # a new mask every batch
    np.testing.assert_array_equal(Dropout(0.3, rng=7).forward(x), y)   # the same seed, the same masks
    drop.eval()
    assert drop.forward(x) is x
    np.testing.assert_array_equal(drop.backward(x), x)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)
    with pytest.raises(ValueError, match="probability"):
        Dropout("0.5")


def test_gradient_check_through_a_network_with_dropout():
    model = Sequential(Linear(6, 8, rng=0, dtype=F64), ReLU(), Dropout(0.5, rng=1),
                       Linear(8, 3, rng=2, dtype=F64))
    x = np.random.default_rng(0).uniform(0.2, 1.0, (4, 6))
    check_layer(model, x, tol=1e-6).assert_ok()


# ----------------------------------------------------------------------------- unflatten


def test_unflatten_is_flattens_inverse():
    unflatten = Unflatten((2, 3, 4))
    x = np.random.default_rng(0).standard_normal((5, 24))
    y = unflatten.forward(x)
    assert y.shape == (5, 2, 3, 4)
    np.testing.assert_array_equal(Flatten().forward(y), x)
    check_layer(unflatten, x, tol=TOL).assert_ok()
    with pytest.raises(ValueError, match=r"\(N, 24\)"):
        unflatten.forward(np.zeros((5, 23)))
    with pytest.raises(ValueError):
        Unflatten(())


def test_a_small_generator_runs_and_checks():
    """Linear -> Unflatten -> ConvTranspose2d with batch norm -> tanh: the DCGAN generator's
    shape, gradient-checked end to end."""
    gen = Sequential(
        Linear(4, 3 * 3 * 3, rng=0, dtype=F64), Unflatten((3, 3, 3)), BatchNorm2d(3, dtype=F64),
        ReLU(),
        ConvTranspose2d(3, 2, 4, stride=2, padding=1, bias=False, rng=1, dtype=F64),
        BatchNorm2d(2, dtype=F64), ReLU(),
        ConvTranspose2d(2, 1, 3, stride=2, padding=1, output_padding=1, rng=2, dtype=F64), Tanh(),
    )
    z = np.random.default_rng(0).standard_normal((3, 4))
    assert gen.forward(z).shape == (3, 1, 12, 12)
    check_layer(gen, z, tol=1e-6).assert_ok()


# ----------------------------------------------------------------------------- initialisers


@pytest.mark.parametrize("shape,fan_in,fan_out",
                         [((10, 7), 7, 10), ((8, 3, 5, 5), 75, 200), ((3, 8, 4, 4), 128, 48)])
def test_fans_follow_pytorchs_rule(shape, fan_in, fan_out):
    assert initialisers.fans(shape) == (fan_in, fan_out)


@pytest.mark.parametrize("name,expected_std", [
    ("uniform", lambda fi, fo: 1 / np.sqrt(3 * fi)),
    ("he", lambda fi, fo: np.sqrt(2 / fi)),
    ("xavier", lambda fi, fo: np.sqrt(2 / (fi + fo))),
    ("normal", lambda fi, fo: 0.02),
])
def test_each_initialiser_has_its_documented_spread(name, expected_std):
    for layer in (Conv2d(16, 32, 3, rng=0, init=name), ConvTranspose2d(32, 16, 4, rng=0, init=name),
                  Linear(300, 200, rng=0, init=name)):
        w = layer.params["weight"]
        fi, fo = initialisers.fans(w.shape)
        assert abs(w.std() / expected_std(fi, fo) - 1) < 0.05, (name, layer)
        assert abs(w.mean()) < 0.1 * expected_std(fi, fo)
        bias = layer.params["bias"]
        if name == "uniform":
            assert np.abs(bias).max() <= 1 / np.sqrt(fi) and np.abs(bias).max() > 0
        else:
            assert not bias.any()
    if name in ("uniform", "xavier"):
        w = Linear(300, 200, rng=0, init=name).params["weight"]
        bound = 1 / np.sqrt(300) if name == "uniform" else np.sqrt(6 / 500)
        assert np.abs(w).max() <= bound


def test_unknown_initialiser_is_named():
    with pytest.raises(ValueError, match="xavier"):
        Linear(3, 2, init="glorot_normal")
