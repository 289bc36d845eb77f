"""Every layer's backward pass against finite differences (float64), over many generated
configurations, and the three kernel tiers against each other (to 1e-10)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TOL, close, conv_configs, pool_configs, separated
from hypothesis import given
from hypothesis import strategies as st

from cnn_lib import (
    AvgPool2d,
    BCEWithLogits,
    Conv2d,
    ConvTranspose2d,
    Flatten,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    check_layer,
)
from cnn_lib.kernels import TIERS

F64 = np.float64


def agree(layer, x, *forward_args):
    """Run the three kernel tiers on the same input and upstream gradient; compare everything
    with the reference loops (1e-10, float64)."""
    out = {}
    for impl in TIERS:
        layer.impl = impl
        if hasattr(layer, "zero_grad"):
            layer.zero_grad()
        y = layer.forward(x.copy(), *forward_args)
        if np.ndim(y) == 0:
            dx = layer.backward()
        else:
            dy = np.random.default_rng(2).standard_normal(np.shape(y))
            dx = layer.backward(dy)
        grads = {k: v.copy() for k, v in getattr(layer, "grads", {}).items()}
        out[impl] = (np.asarray(y), dx, grads)
    yr, dxr, gr = out["reference"]
    for impl in ("vectorized", "fast"):
        y, dx, g = out[impl]
        np.testing.assert_allclose(y, yr, rtol=1e-10, atol=1e-10, err_msg=impl)
        np.testing.assert_allclose(dx, dxr, rtol=1e-10, atol=1e-10, err_msg=impl)
        assert g.keys() == gr.keys()
        for k in g:
            np.testing.assert_allclose(g[k], gr[k], rtol=1e-10, atol=1e-10, err_msg=f"{impl} {k}")


def make_conv(cfg, cls=Conv2d):
    extra = {"output_padding": cfg["output_padding"]} if cls is ConvTranspose2d else {}
    return cls(cfg["c_in"], cfg["c_out"], cfg["kernel"], stride=cfg["stride"],
               padding=cfg["padding"], bias=cfg["bias"], rng=cfg["seed"], dtype=F64, **extra)


# ----------------------------------------------------------------------------- convolution


@given(conv_configs())
def test_conv2d_gradients(cfg):
    conv = make_conv(cfg)
    x = np.random.default_rng(cfg["seed"]).standard_normal((cfg["n"], cfg["c_in"], cfg["h"], cfg["w"]))
    report = check_layer(conv, x, tol=TOL)
    report.assert_ok()
    assert {r.name for r in report.results} == {"input x", "weight"} | ({"bias"} if cfg["bias"] else set())


@given(conv_configs())
def test_conv2d_reference_agrees_with_fast(cfg):
    x = np.random.default_rng(cfg["seed"]).standard_normal((cfg["n"], cfg["c_in"], cfg["h"], cfg["w"]))
    agree(make_conv(cfg), x)


@given(conv_configs(transpose=True))
def test_conv_transpose2d_gradients(cfg):
    layer = make_conv(cfg, ConvTranspose2d)
    x = np.random.default_rng(cfg["seed"]).standard_normal((cfg["n"], cfg["c_in"], cfg["h"], cfg["w"]))
    check_layer(layer, x, tol=TOL).assert_ok()


@given(conv_configs(transpose=True))
def test_conv_transpose2d_reference_agrees_with_fast(cfg):
    x = np.random.default_rng(cfg["seed"]).standard_normal((cfg["n"], cfg["c_in"], cfg["h"], cfg["w"]))
    agree(make_conv(cfg, ConvTranspose2d), x)


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), ((1, 2), (2, 0))])
def test_reference_conv_gradients_directly(stride, padding):
    """The loop kernels are gradient-checked on their own too, not only through agreement."""
    conv = Conv2d(2, 3, (3, 2), stride=stride, padding=padding, rng=0, dtype=F64)
    conv.impl = "reference"
    check_layer(conv, np.random.default_rng(0).standard_normal((2, 2, 6, 5)), tol=TOL).assert_ok()


@pytest.mark.parametrize("kernel,padding,bias", [
    (3, 1, False),            # the shipped generator's refining layer
    (3, 0, True), (1, 0, True), (2, 1, False), ((3, 2), (2, 1), True), (5, 2, True),
    (1, 1, False), (2, 2, True),  # padding > kernel - 1: no plain convolution, the taps path
])
def test_stride_1_transposed_convolution_as_a_flipped_convolution(kernel, padding, bias):
    """The fast tier runs a stride-1 transposed convolution as a convolution with the flipped
    kernel; all three tiers must agree, on a channels-last and on a channels-first input."""
    rng = np.random.default_rng(7)
    layer = ConvTranspose2d(6, 5, kernel, stride=1, padding=padding, bias=bias, rng=1, dtype=F64)
    x = rng.standard_normal((3, 6, 7, 6))
    agree(layer, x)
    agree(layer, np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2))
    check_layer(layer, x[:2], tol=TOL).assert_ok()


def test_stride_1_transposed_convolution_in_float32_matches_float64():
    """The DCGAN refining layer's shape in float32, against float64, scaled to the output's size."""
    from cnn_lib.kernels import fast

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 64, 14, 14))
    weight = 0.02 * rng.standard_normal((64, 64, 3, 3))
    y64, cache64 = fast.conv_transpose2d_forward(x, weight, None, (1, 1), (1, 1))
    y32, cache32 = fast.conv_transpose2d_forward(x.astype(np.float32), weight.astype(np.float32), None,
                                                 (1, 1), (1, 1))
    assert y32.dtype == np.float32 and y32.shape == (8, 64, 14, 14)
    close(y32, y64, np.float32, "y")
    dy = rng.standard_normal(y64.shape)
    for got, want in zip(fast.conv_transpose2d_backward(dy.astype(np.float32), cache32)[:2],
                         fast.conv_transpose2d_backward(dy, cache64)[:2]):
        close(got, want, np.float32, "gradient")


def test_conv_transpose_is_the_adjoint_of_conv():
    """<conv(x), y> == <x, conv_transpose(y)> with the same weights: the transpose really is
    the transpose (this is the view lesson 11's generator builds on)."""
    rng = np.random.default_rng(0)
    conv = Conv2d(3, 2, 4, stride=2, padding=1, bias=False, rng=0, dtype=F64)
    tconv = ConvTranspose2d(2, 3, 4, stride=2, padding=1, bias=False, rng=0, dtype=F64)
    tconv.params["weight"][...] = conv.params["weight"]
    x = rng.standard_normal((2, 3, 8, 8))
    y = rng.standard_normal((2, 2, 4, 4))
    assert np.isclose(np.sum(conv.forward(x) * y), np.sum(x * tconv.forward(y)), rtol=1e-12)


# ----------------------------------------------------------------------------- pooling


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
@given(cfg=pool_configs())
def test_pool_gradients(cls, cfg):
    pool = cls(cfg["kernel"], cfg["stride"])
    x = separated(np.random.default_rng(cfg["seed"]), (cfg["n"], cfg["c"], cfg["h"], cfg["w"]))
    check_layer(pool, x, tol=TOL).assert_ok()


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
@given(cfg=pool_configs(), ties=st.booleans())
def test_pool_reference_agrees_with_fast(cls, cfg, ties):
    rng = np.random.default_rng(cfg["seed"])
    shape = (cfg["n"], cfg["c"], cfg["h"], cfg["w"])
    # with ties: few distinct values, so most windows have several equal maxima
    x = rng.integers(0, 3, shape).astype(F64) if ties else rng.standard_normal(shape)
    agree(cls(cfg["kernel"], cfg["stride"]), x)


def test_maxpool_tie_rule_first_in_row_major_order():
    """A flat window (MNIST's background) sends its whole gradient to its top-left element."""
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 2, 3] = x[0, 0, 3, 2] = 5.0  # bottom-right window: two maxima, (2,3) comes first
    pool = MaxPool2d(2)
    pool.forward(x)
    dx = pool.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    expected = np.zeros((4, 4))
    expected[0, 0], expected[0, 2], expected[2, 0], expected[2, 3] = 1, 2, 3, 4
    np.testing.assert_array_equal(dx[0, 0], expected)


@given(cfg=pool_configs())
def test_maxpool_sends_each_window_to_exactly_one_element(cfg):
    """With all-equal inputs every window ties; the total gradient is still conserved
    (one element per window, overlapping windows add)."""
    shape = (cfg["n"], cfg["c"], cfg["h"], cfg["w"])
    pool = MaxPool2d(cfg["kernel"], cfg["stride"])
    y = pool.forward(np.zeros(shape))
    dx = pool.backward(np.ones(y.shape))
    assert dx.sum() == y.size
    if cfg["stride"][0] >= cfg["kernel"][0] and cfg["stride"][1] >= cfg["kernel"][1]:
        assert np.count_nonzero(dx) == y.size  # disjoint windows: one receiver each


def test_maxpool_overlapping_windows_add_up():
    """stride < kernel: the 99 lies in all four 3x3 windows and collects all four gradients."""
    x = np.arange(16, dtype=F64).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = 99.0
    pool = MaxPool2d(3, stride=1)
    pool.forward(x)
    dx = pool.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    expected = np.zeros((4, 4))
    expected[1, 1] = 1 + 2 + 3 + 4
    np.testing.assert_array_equal(dx[0, 0], expected)


# ----------------------------------------------------------------------------- dense, activations


@given(n=st.integers(1, 4), n_in=st.integers(1, 12), n_out=st.integers(1, 6),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_gradients_and_reference(n, n_in, n_out, bias, seed):
    layer = Linear(n_in, n_out, bias=bias, rng=seed, dtype=F64)
    x = np.random.default_rng(seed).standard_normal((n, n_in))
    check_layer(layer, x, tol=TOL).assert_ok()
    agree(layer, x)


@pytest.mark.parametrize("layer", [ReLU(), LeakyReLU(0.1), Sigmoid(), Tanh(), Flatten()],
                         ids=lambda layer: layer.name)
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4), seed=st.integers(0, 2**16))
def test_elementwise_and_flatten(layer, shape, seed):
    x = separated(np.random.default_rng(seed), shape, spacing=0.1)
    check_layer(layer, x, tol=TOL).assert_ok()
    if layer.name != "Flatten":
        agree(layer, x)


# ----------------------------------------------------------------------------- losses


@given(n=st.integers(1, 5), k=st.integers(2, 10), scale=st.sampled_from([0.1, 1.0, 3.0]),
       seed=st.integers(0, 2**16))
def test_softmax_cross_entropy_gradients(n, k, scale, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, k)) * scale
    labels = rng.integers(0, k, n)
    loss = SoftmaxCrossEntropy()
    # h = 1e-5: saturated softmaxes have gradients near 1e-4, where round-off with a
    # smaller step would reach the tolerance
    check_layer(loss, logits, labels, tol=TOL, h=1e-5).assert_ok()
    agree(loss, logits, labels)


def test_softmax_cross_entropy_value_and_gradient_formula():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    labels = np.array([2, 0])
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.isclose(loss, -(np.log(p[0, 2]) + np.log(p[1, 0])) / 2)
    onehot = np.eye(3)[labels]
    np.testing.assert_allclose(loss_fn.backward(), (p - onehot) / 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_is_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype)
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(logits, np.array([1, 0]))
    grad = loss_fn.backward()
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert np.isclose(loss, (2e4 + 2e4 + np.log(2)) / 2, rtol=1e-6)
    np.testing.assert_allclose(grad, [[0.5, -0.5, 0.0], [-0.5, 0.25, 0.25]], atol=1e-6)


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_bce_with_logits_gradients(shape, seed):
    rng = np.random.default_rng(seed)
    targets = rng.uniform(0, 1, shape)
    check_layer(BCEWithLogits(), rng.standard_normal(shape) * 3, targets, tol=TOL).assert_ok()


def test_bce_with_logits_matches_definition_and_is_stable():
    z = np.array([-3.0, 0.0, 2.0])
    t = np.array([0.0, 1.0, 1.0])
    s = 1 / (1 + np.exp(-z))
    expected = -np.mean(t * np.log(s) + (1 - t) * np.log(1 - s))
    assert np.isclose(BCEWithLogits().forward(z, t), expected)
    assert np.isfinite(BCEWithLogits().forward(np.array([1e4, -1e4]), np.array([0.0, 1.0])))


# ----------------------------------------------------------------------------- whole networks


def tutorial_net(dtype=F64, seed=0):
    """The network of question.txt: conv 8x3x3 -> max-pool 2 -> linear 10 (here batched)."""
    return Sequential(Conv2d(1, 8, 3, rng=seed, dtype=dtype), MaxPool2d(2), Flatten(),
                      Linear(8 * 13 * 13, 10, rng=seed + 1, dtype=dtype))


def test_sequential_network_gradients_end_to_end():
    rng = np.random.default_rng(0)
    model = Sequential(
        Conv2d(1, 3, 3, padding=1, rng=0, dtype=F64), ReLU(), MaxPool2d(2),
        Conv2d(3, 4, 3, stride=2, rng=1, dtype=F64), Tanh(), AvgPool2d(2, stride=1), Flatten(),
        Linear(4, 5, rng=2, dtype=F64), LeakyReLU(0.2), Linear(5, 3, rng=3, dtype=F64),
    )
    x = rng.standard_normal((2, 1, 10, 10))
    report = check_layer(model, x, tol=1e-6)
    report.assert_ok()
    assert len(report.results) == 1 + 8  # input + 4 weight/bias pairs


def test_tutorial_network_with_loss_end_to_end():
    """The tutorial's network and the loss, on real-sized 28x28 inputs: every gradient right."""

    class WithLoss:
        def __init__(self):
            self.model, self.loss = tutorial_net(), SoftmaxCrossEntropy()
            self.params, self.grads = self.model.params, {}

        def forward(self, x, labels):
            return self.loss.forward(self.model.forward(x), labels)

        def backward(self):
            dx = self.model.backward(self.loss.backward())
            self.grads = self.model.grads
            return dx

    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, (2, 1, 28, 28))
    net = WithLoss()
    # The 13,520 linear weights would take ~10 s of finite differences; the Linear layer's
    # weights are checked inside a network above, so here: conv weights and both biases.
    chosen = {k: net.params[k] for k in ("0.weight", "0.bias", "3.bias")}
    check_layer(net, x, np.array([3, 7]), params=chosen, tol=1e-6, check_input=False).assert_ok()


# ----------------------------------------------------------------------------- every tier on its own


TIER_LAYERS = {
    "conv": (lambda: Conv2d(5, 4, 3, stride=2, padding=1, rng=0, dtype=F64), (2, 5, 7, 6)),
    "conv one channel": (lambda: Conv2d(1, 3, (2, 3), stride=(1, 2), rng=1, dtype=F64), (2, 1, 6, 7)),
    "conv transpose": (lambda: ConvTranspose2d(3, 5, 3, stride=2, padding=1, output_padding=1, rng=2,
                                               dtype=F64), (2, 3, 4, 3)),
    "maxpool overlapping": (lambda: MaxPool2d(3, stride=2), (2, 3, 7, 6)),
    "avgpool": (lambda: AvgPool2d(2), (2, 3, 6, 4)),
    "linear": (lambda: Linear(7, 4, rng=3, dtype=F64), (3, 7)),
    "relu": (lambda: ReLU(), (2, 3, 4, 4)),
    "leaky relu": (lambda: LeakyReLU(0.2), (2, 5)),
    "sigmoid": (lambda: Sigmoid(), (2, 5)),
    "tanh": (lambda: Tanh(), (2, 5)),
}


@pytest.mark.parametrize("impl", list(TIERS))
@pytest.mark.parametrize("name", list(TIER_LAYERS))
def test_every_tier_passes_the_gradient_check_on_its_own(impl, name):
    """Agreement between tiers is not enough (all three could share a mistake): each tier's
    kernels are checked against finite differences directly too."""
    make, shape = TIER_LAYERS[name]
    layer = make()
    layer.impl = impl
    check_layer(layer, separated(np.random.default_rng(0), shape, spacing=0.05), tol=TOL).assert_ok()
