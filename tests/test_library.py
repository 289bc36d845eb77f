"""The library's behaviour beyond gradients: clear errors on bad input (with state left
untouched), gradcheck's diagnostics for broken layers, dtypes, Sequential, optimizers, a
tiny network that really learns, and the training protocol (the gradient rule, train/eval,
buffers) and the conv layers' shapes."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from cnn_lib import (
    SGD,
    Adam,
    AvgPool2d,
    Conv2d,
    ConvTranspose2d,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
    check_layer,
)
from cnn_lib.kernels import KERNELS, TIERS, conv_output_size, conv_transpose_output_size

F64 = np.float64


# ----------------------------------------------------------------------------- bad input


def snapshot(layer):
    return {k: v.copy() for k, v in layer.params.items()}, layer._cache


def assert_untouched(layer, before):
    params, cache = before
    assert layer._cache is cache
    for k, v in params.items():
        np.testing.assert_array_equal(layer.params[k], v)


@pytest.mark.parametrize("x, error, words", [
    (np.zeros((28, 28), np.float32), ValueError, ["4 dimensions", "(28, 28)", "x[None, None]"]),
    (np.zeros((5, 28, 28), np.float32), ValueError, ["4 dimensions", "x[:, None]"]),
    (np.zeros((2, 3, 28, 28), np.float32), ValueError, ["1 channel", "3 channel"]),
    (np.zeros((2, 1, 2, 2), np.float32), ValueError, ["kernel 3x3", "larger than the padded input 2x2"]),
    (np.zeros((2, 1, 28, 28), np.uint8), TypeError, ["floating dtype", "uint8", "/ 255"]),
    ([[1.0]], TypeError, ["NumPy array", "list"]),
    (np.full((1, 1, 5, 5), np.nan, np.float32), ValueError, ["25 NaN or inf"]),
])
def test_conv_rejects_bad_input_clearly_and_keeps_state(x, error, words):
    conv = Conv2d(1, 2, 3, rng=0)
    conv.forward(np.ones((1, 1, 5, 5), np.float32))
    before = snapshot(conv)
    with pytest.raises(error) as info:
        conv.forward(x)
    for word in words:
        assert word in str(info.value)
    assert_untouched(conv, before)
    conv.backward(np.ones((1, 2, 3, 3), np.float32))  # the earlier forward is still usable


def test_backward_errors_name_the_problem():
    conv = Conv2d(1, 2, 3, rng=0)
    with pytest.raises(RuntimeError, match="before forward"):
        conv.backward(np.ones((1, 2, 3, 3)))
    conv.forward(np.ones((1, 1, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"shape of the forward output \(1, 2, 3, 3\)"):
        conv.backward(np.ones((1, 2, 4, 4)))
    with pytest.raises(TypeError, match="return None from its backward"):
        conv.backward(None)
    assert conv.grads == {}


@pytest.mark.parametrize("layer, x, words", [
    (MaxPool2d(3), np.zeros((1, 1, 2, 5)), ["window 3x3", "larger than the input 2x5"]),
    (AvgPool2d(2), np.zeros((4, 4)), ["4 dimensions"]),
    (Linear(10, 2, rng=0), np.zeros((3, 1, 2, 5), np.float32), ["Flatten()"]),
    (Linear(10, 2, rng=0), np.zeros((3, 11), np.float32), ["(N, 10)", "(3, 11)"]),
    (Flatten(), np.zeros(3), ["at least 2 dimensions"]),
    (ReLU(), np.array([1.0, np.inf]), ["NaN or inf"]),
    (ConvTranspose2d(2, 1, 3, rng=0), np.zeros((1, 1, 3, 3), np.float32), ["2 channel"]),
])
def test_other_layers_reject_bad_input(layer, x, words):
    with pytest.raises((ValueError, TypeError)) as info:
        layer.forward(x)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("labels, error, words", [
    (np.array([0, 1, 10]), ValueError, ["[0, 10)", "[10]"]),
    (np.array([0, -1, 2]), ValueError, ["[-1]"]),
    (np.array([0.0, 1.0, 2.0]), TypeError, ["integers", "float64"]),
    (np.array([0, 1]), ValueError, ["shape (3,)"]),
    (np.eye(10)[[0, 1, 2]], ValueError, ["one-hot", "argmax"]),
])
def test_loss_rejects_bad_labels(labels, error, words):
    loss = SoftmaxCrossEntropy()
    with pytest.raises(error) as info:
        loss.forward(np.zeros((3, 10)), labels)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("kwargs, words", [
    (dict(kernel_size=0), ["kernel_size must be >= 1"]),
    (dict(kernel_size=(3, 3, 3)), ["int or a pair"]),
    (dict(kernel_size=3, stride=0), ["stride must be >= 1"]),
    (dict(kernel_size=3, padding=-1), ["padding must be >= 0"]),
    (dict(kernel_size=3, rng="seed"), ["np.random.Generator"]),
    (dict(kernel_size=3, init="zeros"), ["init must be one of", "'xavier'"]),
])
def test_constructor_arguments_are_checked(kwargs, words):
    with pytest.raises((ValueError, TypeError)) as info:
        Conv2d(1, 2, **kwargs)
    for word in words:
        assert word in str(info.value)


# ----------------------------------------------------------------------------- gradcheck talks


class TutorialStyleSoftmax:
    """A layer written like question.txt's own adaptation: single examples, weights updated
    inside backprop, and a backprop that computes nothing and returns None."""

    def __init__(self, n_in, n_out, rng):
        self.weights = rng.standard_normal((n_in, n_out)) / n_in
        self.biases = np.zeros(n_out)

    def feedforward(self, x):
        self.last_input = x.flatten()
        totals = self.last_input @ self.weights + self.biases
        e = np.exp(totals)
        return e / e.sum()

    def backprop(self, d_out, learn_rate):
        for g in d_out:  # (the adaptation's loop computes S and N, then drops them)
            if g == 0:
                pass


def test_gradcheck_explains_a_backprop_that_returns_none():
    layer = TutorialStyleSoftmax(6, 3, np.random.default_rng(0))
    report = check_layer(layer, np.random.default_rng(1).standard_normal((2, 3)),
                         forward="feedforward", backward="backprop", backward_args=(0.005,),
                         params=["weights", "biases"])
    assert not report.passed
    text = str(report)
    assert "backward's return value is None" in text and "without `return`" in text
    assert "Did backward fill the layer's grads dict?" in text


class UpdatesInsideBackward:
    """The tutorial's pattern: a right gradient, applied immediately inside backprop."""

    def __init__(self):
        self.params = {"w": np.array([1.0, -2.0, 0.5])}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return x * self.params["w"]

    def backward(self, dy, lr=0.1):
        self.grads["w"] = dy * self.x
        self.params["w"] -= lr * self.grads["w"]
        return dy * self.params["w"]  # uses the *updated* weights: subtly wrong as well


def test_gradcheck_flags_an_update_hidden_in_backward_and_restores_weights():
    layer = UpdatesInsideBackward()
    report = check_layer(layer, np.array([0.3, 0.2, -1.0]))
    assert "backward changed the weights ['w']" in str(report)
    assert not report.passed
    np.testing.assert_array_equal(layer.params["w"], [1.0, -2.0, 0.5])


class Scaled(Linear):
    def __init__(self, factor, **kw):
        super().__init__(4, 3, rng=0, dtype=F64, **kw)
        self.factor = factor

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["weight"] = self.grads["weight"] * self.factor
        return dx


@pytest.mark.parametrize("factor, words", [
    (0.5, ["0.5 x the numerical one", "constant factor"]),
    (-1.0, ["wrong sign"]),
    (0.0, ["all zeros"]),
])
def test_gradcheck_names_a_constant_factor_or_sign(factor, words):
    report = check_layer(Scaled(factor), np.random.default_rng(0).standard_normal((2, 4)))
    assert report["input x"].passed and report["bias"].passed and not report["weight"].passed
    for word in words:
        assert word in str(report)


def test_gradcheck_reports_wrong_shape_nan_and_float32():
    class WrongShape(Linear):
        def backward(self, dy):
            return super().backward(dy).T

    class NaNGrad(Linear):
        def backward(self, dy):
            return super().backward(dy) * np.nan

    x = np.random.default_rng(0).standard_normal((2, 4))
    assert "has shape (4, 2), expected (2, 4)" in str(check_layer(WrongShape(4, 3, rng=0, dtype=F64), x))
    assert "NaN or inf" in str(check_layer(NaNGrad(4, 3, rng=0, dtype=F64), x))
    report = check_layer(Linear(4, 3, rng=0), x.astype(np.float32))
    assert "float64" in str(report) and not report.passed


def test_gradcheck_report_passes_a_right_layer_and_reads_well():
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5))
    report = check_layer(Conv2d(1, 2, 3, rng=0, dtype=F64), x)
    assert report.passed and report.max_error < 1e-8
    text = str(report)
    assert text.startswith("gradient check of Conv2d: PASSED") and "weight" in text


# ----------------------------------------------------------------------------- dtypes, models


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_follows_the_input(dtype):
    model = Sequential(Conv2d(1, 2, 3, rng=0), ReLU(), MaxPool2d(2), Flatten(), Linear(8, 3, rng=0))
    y = model.forward(np.ones((2, 1, 6, 6), dtype))
    assert y.dtype == dtype
    dx = model.backward(np.ones_like(y))
    assert dx.dtype == dtype
    assert all(g.dtype == np.float32 for g in model.grads.values())  # grads match the params


def test_same_seed_same_weights_and_explicit_generators():
    a = Conv2d(3, 4, 3, rng=np.random.default_rng(7))
    b = Conv2d(3, 4, 3, rng=7)
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    assert not np.array_equal(a.params["weight"], Conv2d(3, 4, 3, rng=8).params["weight"])


def test_sequential_state_dict_save_load_roundtrip(tmp_path):
    def net(seed):
        return Sequential(Conv2d(1, 2, 3, rng=seed), ReLU(), Flatten(), Linear(18, 3, rng=seed + 1))

    a, b = net(0), net(10)
    assert list(a.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    path = tmp_path / "weights.npz"
    a.save(path)
    b.load(path)
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    with np.load(path, allow_pickle=False) as f:  # plain arrays only
        assert sorted(f.files) == sorted(a.state_dict())
    umask = os.umask(0o022)
    try:
        a.save(path)   # readable by others like any file the user writes (mkstemp alone gives 0600)
        assert path.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(umask)


def test_load_state_dict_mismatch_leaves_model_untouched():
    model = Sequential(Linear(3, 2, rng=0), ReLU(), Linear(2, 1, rng=1))
    before = model.state_dict()
    bad = model.state_dict()
    bad["0.weight"] = np.zeros((9, 9))
    bad["2.weight"] += 1  # a valid change that must NOT be applied because of the bad one
    with pytest.raises(ValueError, match=r"state\['0.weight'\] has shape \(9, 9\)"):
        model.load_state_dict(bad)
    with pytest.raises(KeyError, match="missing"):
        model.load_state_dict({"0.weight": before["0.weight"]})
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_sequential_names_a_layer_whose_backward_returns_none():
    class Forgetful(ReLU):
        def backward(self, dy):
            super().backward(dy)

    model = Sequential(Linear(3, 2, rng=0), Forgetful(), Linear(2, 1, rng=1))
    y = model.forward(np.ones((1, 3), np.float32))
    with pytest.raises(TypeError, match=r"layer 1 \(Forgetful\(\)\) backward returned NoneType"):
        model.backward(np.ones_like(y))


# ----------------------------------------------------------------------------- optimizers


def test_sgd_momentum_and_adam_follow_their_formulas():
    layer = Linear(2, 1, bias=False, rng=0, dtype=F64)
    w0 = layer.params["weight"].copy()
    g = np.array([[0.5, -1.0]])
    opt = SGD(layer.parameters(), lr=0.1, momentum=0.9)
    layer.grads["weight"] = g.copy()
    opt.step()
    layer.grads["weight"] = g.copy()
    opt.step()
    np.testing.assert_allclose(layer.params["weight"], w0 - 0.1 * g - 0.1 * (0.9 * g + g))

    layer = Linear(2, 1, bias=False, rng=0, dtype=F64)
    w0 = layer.params["weight"].copy()
    adam = Adam(layer.parameters(), lr=0.01)
    layer.grads["weight"] = g.copy()
    adam.step()  # the first Adam step moves every weight by lr * sign(g)
    np.testing.assert_allclose(layer.params["weight"], w0 - 0.01 * np.sign(g), rtol=1e-6)


def test_optimizer_refuses_missing_or_nan_gradients_without_updating():
    model = Sequential(Linear(2, 2, rng=0), Linear(2, 1, rng=1))
    opt = SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="no gradient for parameter '0.weight'"):
        opt.step()
    model.forward(np.ones((1, 2), np.float32))
    model.backward(np.ones((1, 1), np.float32))
    model.layers[1].grads["bias"] = np.array([np.nan], np.float32)
    before = model.state_dict()
    with pytest.raises(FloatingPointError, match="'1.bias'"):
        opt.step()
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="lr must be a positive number"):
        SGD(model.parameters(), lr=-1)


def test_backward_never_updates_weights():
    model = Sequential(Conv2d(1, 2, 3, rng=0), MaxPool2d(2), Flatten(), Linear(2, 3, rng=1))
    before = model.state_dict()
    y = model.forward(np.ones((1, 1, 4, 4), np.float32))
    model.backward(np.ones_like(y))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


# ----------------------------------------------------------------------------- it learns


def test_tutorial_network_overfits_16_mnist_digits():
    """conv 8x3x3 -> max-pool 2 -> linear 10, trained on 16 real digits: the loss must fall
    to near zero, which needs every piece's gradient to be right *together*."""
    from cnn_lib.data import load_mnist, normalize

    data = load_mnist()
    x = normalize(data.x_train[:16], "tutorial").astype(np.float32)
    y = data.y_train[:16]
    model = Sequential(Conv2d(1, 8, 3, rng=0), MaxPool2d(2), Flatten(), Linear(8 * 13 * 13, 10, rng=1))
    loss_fn = SoftmaxCrossEntropy()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        losses.append(loss_fn.forward(model.forward(x), y))
        model.backward(loss_fn.backward())
        opt.step()
    assert losses[0] > 2.0  # chance level is log(10) = 2.30
    assert losses[-1] < 0.01, losses[-10:]
    assert np.all(loss_fn.probs.argmax(axis=1) == y)


# ----------------------------------------------------------------------------- training protocol


def small_model(dtype=np.float64):
    return Sequential(Conv2d(1, 2, 3, padding=1, rng=0, dtype=dtype), ReLU(), MaxPool2d(2), Flatten(),
                      Linear(2 * 3 * 3, 3, rng=1, dtype=dtype))


def test_backward_adds_into_grads_and_zero_grad_clears_them():
    """The gradient rule: two backward passes add up to the gradient of both batches at once
    (a GAN discriminator's real and fake batch), and zero_grad() starts again from nothing."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 1, 6, 6)), rng.standard_normal((3, 1, 6, 6))
    model = small_model()
    for x in (a, b):
        y = model.forward(x)
        model.backward(np.ones(y.shape))
    summed = {k: v.copy() for k, v in model.grads.items()}
    model.zero_grad()
    assert model.grads == {} and all(p.grad is None for p in model.parameters())
    y = model.forward(np.concatenate([a, b]))
    model.backward(np.ones(y.shape))
    assert summed.keys() == model.grads.keys() == model.params.keys()
    for k, v in model.grads.items():
        np.testing.assert_allclose(summed[k], v, rtol=1e-12, atol=1e-12, err_msg=k)


def test_a_step_warns_when_the_gradients_were_not_cleared():
    model = small_model()
    opt = SGD(model.parameters(), lr=0.01)
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6))
    for _ in range(2):  # the right loop: no warning
        opt.zero_grad()
        model.backward(np.ones(model.forward(x).shape))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            opt.step()
    model.backward(np.ones(model.forward(x).shape))  # zero_grad forgotten
    with pytest.warns(UserWarning, match=r"were not cleared since the last step.*zero_grad\(\)"):
        opt.step()


def test_train_and_eval_reach_every_layer():
    model = Sequential(small_model(), ReLU())
    assert model.training and all(layer.training for layer in model[0])
    assert model.eval() is model
    assert not model.training and not model[1].training and not any(layer.training for layer in model[0])
    model.train()
    assert all(layer.training for layer in model[0])


class RunningMean(Layer):
    """A layer with a buffer, as BatchNorm will have: in training mode it passes x on and
    updates a running mean of what it sees; in evaluation mode it subtracts that mean."""

    def __init__(self):
        super().__init__()
        self.buffers["running_mean"] = np.zeros(1)

    def forward(self, x):
        self._cache = x.shape
        if self.training:
            self.buffers["running_mean"] += 0.5 * (x.mean() - self.buffers["running_mean"])
            return x.copy()
        return x - self.buffers["running_mean"]

    def backward(self, dy):
        return dy


def test_buffers_are_saved_and_loaded_but_never_trained(tmp_path):
    model = Sequential(Linear(3, 2, rng=0, dtype=np.float64), RunningMean())
    model.forward(np.ones((4, 3)))
    assert list(model.buffers) == ["1.running_mean"] and "1.running_mean" not in model.params
    assert [p.name for p in model.parameters()] == ["0.weight", "0.bias"]
    model.save(tmp_path / "m.npz")
    saved = model.state_dict()
    other = Sequential(Linear(3, 2, rng=5, dtype=np.float64), RunningMean())
    other.load(tmp_path / "m.npz")
    for k, v in saved.items():
        np.testing.assert_array_equal(other.state_dict()[k], v, err_msg=k)
    with pytest.raises(KeyError, match=r"missing \['1.running_mean'\]"):
        other.load_state_dict({k: v for k, v in saved.items() if k != "1.running_mean"})


def test_check_layer_restores_buffers_around_its_probes():
    layer = RunningMean()
    layer.buffers["running_mean"][...] = 0.25
    check_layer(layer, np.random.default_rng(0).standard_normal((2, 3))).assert_ok()
    assert layer.buffers["running_mean"][0] == 0.25


# ----------------------------------------------------------------------------- conv shapes


@pytest.mark.parametrize("h, k, s, p, op",
                         [(4, 4, 2, 1, 0), (4, 3, 2, 1, 1), (5, 3, 3, 0, 2), (7, 1, 1, 0, 0)])
def test_transposed_conv_output_padding_gives_back_every_input_size(h, k, s, p, op):
    """A strided Conv2d maps several sizes onto one; output_padding picks the one wanted."""
    conv_out = conv_output_size(h + op, k, s, p)
    tconv = ConvTranspose2d(2, 3, k, stride=s, padding=p, output_padding=op, rng=0, dtype=np.float64)
    y = tconv.forward(np.zeros((1, 2, conv_out, conv_out)))
    assert y.shape == tconv.output_shape((1, 2, conv_out, conv_out))
    assert y.shape[2:] == (conv_transpose_output_size(conv_out, k, s, p, op),) * 2
    assert "output_padding" in repr(tconv) or op == 0


def test_impossible_transposed_conv_sizes_are_refused_clearly():
    with pytest.raises(ValueError, match="output_padding must be smaller than stride"):
        ConvTranspose2d(1, 1, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="output_padding must be >= 0"):
        ConvTranspose2d(1, 1, 3, stride=2, output_padding=-1)
    with pytest.raises(ValueError, match="crops the whole output"):
        ConvTranspose2d(1, 1, 3, padding=2).forward(np.zeros((1, 1, 1, 1), dtype=np.float32))


def test_every_tier_has_every_kernel_and_documents_its_shapes():
    for name, module in TIERS.items():
        for kernel in KERNELS:
            fn = getattr(module, kernel, None)
            assert callable(fn), f"{name} has no {kernel}"
            doc = fn.__doc__ or ""
            assert "->" in doc or "returns:" in doc, f"{name}.{kernel} documents no shapes"


def test_an_interrupted_save_keeps_the_weights_saved_before(tmp_path, monkeypatch):
    model = small_model()
    path = tmp_path / "weights.npz"
    model.save(path)
    good = path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == good  # the earlier file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["weights.npz"]  # no temporary file left behind
    monkeypatch.undo()
    other = small_model()
    other.load(path)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], v)
