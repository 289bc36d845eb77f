"""Layers. Every layer speaks the same small protocol::

    layer.params   : dict[str, np.ndarray]  what an optimizer trains, e.g. {"weight": W, "bias": b}
    layer.buffers  : dict[str, np.ndarray]  state that is saved but never trained (running
                                            statistics); empty for most layers
    layer.grads    : dict[str, np.ndarray]  dL/d(param), same keys as params
    y  = layer.forward(x)                   caches what backward needs
    dx = layer.backward(dy)                 returns dL/dx, adds dL/d(param) into layer.grads
    layer.train() / layer.eval()            sets layer.training (dropout and batch norm care)

**The gradient rule** (PyTorch's): ``backward`` *adds* its gradients into ``grads``, and
``zero_grad()`` (of a layer, a model or an optimizer) clears them. So a training step is
``zero_grad(); forward; backward; step``, and two backward passes before one step (a GAN's
discriminator sees a real batch and a fake one) give the sum of their gradients, exactly as
for one pass over both batches together. ``backward`` computes gradients and nothing else;
only an optimizer (:mod:`cnn_lib.optim`) changes the weights.

Each layer runs the kernels of the tier that ``layer.impl`` names (:mod:`cnn_lib.kernels`):
``"fast"`` (the default), ``"vectorized"`` (what the lessons print) or ``"reference"`` (loops
that read like the derivations). All three give the same numbers.

Layout and names follow PyTorch: inputs ``(N, C, H, W)``, conv weights
``(C_out, C_in, kH, kW)``, transposed-conv weights ``(C_in, C_out, kH, kW)``, linear weights
``(out_features, in_features)``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np

from . import _checks
from .init import initialise
from .kernels import TIERS, conv_output_hw, conv_transpose_output_hw


def as_generator(rng) -> np.random.Generator:
    """Accept a ``np.random.Generator``, an int seed, or None (fresh, unseeded generator)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a np.random.Generator, an int seed or None, got {type(rng).__name__}")


class Parameter:
    """A handle on one entry of a layer's ``params``/``grads``, for optimizers.

    ``value`` is the parameter array itself (optimizers update it in place, so every
    reference to it sees the change); ``grad`` is what the backward passes since the last
    ``zero_grad()`` added up (None before the first).
    """

    __slots__ = ("layer", "key", "name")

    def __init__(self, layer: Layer, key: str, name: str):
        self.layer, self.key, self.name = layer, key, name

    @property
    def value(self) -> np.ndarray:
        return self.layer.params[self.key]

    @property
    def grad(self) -> np.ndarray | None:
        return self.layer.grads.get(self.key)

    def zero_grad(self) -> None:
        self.layer.grads.pop(self.key, None)

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.value.shape}, dtype={self.value.dtype})"


class Layer:
    """Base class: ``params``, ``buffers``, ``grads``, the training flag, the kernel tier,
    and saving and loading of the state (params and buffers)."""

    #: True when ``backward(dy, need_input_grad=False)`` is supported: the layer then fills
    #: ``grads`` without computing dL/dx and returns None (the conv layers, Sequential).
    can_skip_input_grad = False

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training = True
        self.impl = "fast"
        self._cache = None

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str):
        if value not in TIERS:
            raise ValueError(f"impl must be one of {sorted(TIERS)}, got {value!r}")
        self._impl = value

    @property
    def _k(self):
        return TIERS[self._impl]

    @property
    def name(self) -> str:
        return type(self).__name__

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def train(self, mode: bool = True):
        """Training mode (``mode=True``, the default) or evaluation mode; returns the layer."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Evaluation mode: ``train(False)``. Returns the layer."""
        return self.train(False)

    def parameters(self) -> list[Parameter]:
        return [Parameter(self, key, key) for key in self.params]

    def zero_grad(self) -> None:
        """Clear the gradients: the next backward starts from nothing."""
        self.grads.clear()

    # saving and loading ---------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter and buffer, by name."""
        return {name: value.copy() for name, value in {**self.params, **self.buffers}.items()}

    def load_state_dict(self, state) -> None:
        """Copy arrays into the parameters and buffers in place; all names and shapes are
        checked first, so a mismatch leaves the layer untouched."""
        own = {**self.params, **self.buffers}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"state does not match {self.name}: missing {missing}, unexpected {unexpected}")
        for name, value in own.items():
            if np.shape(state[name]) != value.shape:
                raise ValueError(f"state[{name!r}] has shape {np.shape(state[name])}, "
                                 f"the {self.name}'s array has {value.shape}")
        for name, value in own.items():
            np.copyto(value, state[name], casting="same_kind")

    def save(self, path) -> None:
        """Save the parameters and buffers to a ``.npz`` file (plain arrays, no pickle).

        Atomic: the arrays go into a temporary file beside ``path``, which then replaces it in
        one step, so an interrupted save (Ctrl-C, a full disk) never destroys weights saved
        earlier under the same name.
        """
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private (0600); a save should not
        try:
            with os.fdopen(fd, "wb") as f:  # an open file keeps np.savez from appending ".npz"
                np.savez(f, **self.state_dict())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise

    def load(self, path) -> None:
        """Load what :meth:`save` saved (never unpickles anything)."""
        with np.load(os.fspath(path), allow_pickle=False) as data:
            self.load_state_dict({name: data[name] for name in data.files})

    # helpers shared by the subclasses -------------------------------------------------
    def _cast(self, key, x):
        """The parameter in x's dtype (a no-op when they already match)."""
        value = self.params.get(key)
        return None if value is None else value.astype(x.dtype, copy=False)

    def _start_backward(self, dy):
        _checks.forward_called(self._cache, self.name)
        kernels, cache, y_shape = self._cache
        _checks.upstream(dy, y_shape, self.name)
        return kernels, cache

    def add_grads(self, **grads) -> None:
        """Add gradients into ``grads`` (the gradient rule above), each in its parameter's
        dtype; None values and keys that are not parameters are ignored."""
        for key, grad in grads.items():
            if key not in self.params or grad is None:
                continue
            grad = grad.astype(self.params[key].dtype, copy=False)
            if key in self.grads:
                self.grads[key] += grad
            else:
                self.grads[key] = grad  # kernels return new arrays: this one is ours to keep

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        return f"{self.name}({self.extra_repr()})"


def _init_weights(layer, init, rng, w_shape, b_shape, bias, dtype):
    """Fill ``layer.params`` with the initialiser named ``init`` (:mod:`cnn_lib.init`)."""
    weight, b = initialise(as_generator(rng), init, w_shape, b_shape, bias, dtype)
    layer.params["weight"] = weight
    if b is not None:
        layer.params["bias"] = b


class _ConvBase(Layer):
    """What Conv2d and ConvTranspose2d share: hyper-parameters, weights, backward, repr.

    The two are one operation seen from its two sides: a ConvTranspose2d's forward is a
    Conv2d's input gradient, and its backward a Conv2d's forward (lesson 11). Their weights
    differ only in the order of the channel axes: ``(C_out, C_in, kH, kW)`` for Conv2d,
    ``(C_in, C_out, kH, kW)`` for ConvTranspose2d (PyTorch's layouts, so weights transfer).
    """

    can_skip_input_grad = True
    transposed = False
    op = ""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, bias=True, rng=None, dtype=np.float32, init="uniform"):
        super().__init__()
        self.in_channels = _checks.positive_int(in_channels, "in_channels")
        self.out_channels = _checks.positive_int(out_channels, "out_channels")
        self.kernel_size = _checks.pair(kernel_size, "kernel_size", minimum=1)
        self.stride = _checks.pair(stride, "stride", minimum=1)
        self.padding = _checks.pair(padding, "padding", minimum=0)
        self.output_padding = _checks.pair(output_padding, "output_padding", minimum=0)
        if any(op >= s for op, s in zip(self.output_padding, self.stride)):
            raise ValueError(f"{self.name}: output_padding must be smaller than stride, got "
                             f"output_padding={self.output_padding} with stride={self.stride} "
                             "(it picks one of the stride sizes a strided convolution maps onto "
                             "the same output size)")
        channels = (in_channels, out_channels) if self.transposed else (out_channels, in_channels)
        _init_weights(self, init, rng, (*channels, *self.kernel_size), (out_channels,), bias, dtype)

    def output_shape(self, input_shape) -> tuple[int, int, int, int]:
        """The shape of ``forward``'s output for an input of ``input_shape`` (N, C_in, H, W)."""
        n, _, h, w = input_shape
        if self.transposed:
            hw = conv_transpose_output_hw((h, w), self.kernel_size, self.stride, self.padding,
                                          self.output_padding)
        else:
            hw = conv_output_hw((h, w), self.kernel_size, self.stride, self.padding)
        return (n, self.out_channels, *hw)

    def check_input(self, x):
        """Raise a clear error unless ``forward(x)`` can run (changes nothing)."""
        _checks.float_array(x, "x", self.name, ndim=4, layout="(N, C_in, H, W)")
        _checks.channels(x, self.in_channels, self.name)
        _, _, ho, wo = self.output_shape(x.shape)
        if ho < 1 or wo < 1:
            (kh, kw), (h, w) = self.kernel_size, x.shape[2:]
            if self.transposed:
                raise ValueError(f"{self.name}: padding {self.padding} crops the whole output "
                                 f"({ho}x{wo}) for input {h}x{w}")
            raise ValueError(
                f"{self.name}: kernel {kh}x{kw} is larger than the padded input "
                f"{h + 2 * self.padding[0]}x{w + 2 * self.padding[1]} "
                f"(input {h}x{w} plus padding {self.padding} on each side)")

    def conv_args(self, x):
        """The arguments after x of this layer's forward kernel (the weights in x's dtype)."""
        args = (self._cast("weight", x), self._cast("bias", x), self.stride, self.padding)
        return args + (self.output_padding,) if self.transposed else args

    def forward(self, x):
        self.check_input(x)
        y, cache = getattr(self._k, f"{self.op}_forward")(x, *self.conv_args(x))
        self._cache = (self._k, cache, y.shape)
        return y

    def backward(self, dy, need_input_grad=True):
        """Add dL/dweight and dL/dbias into ``grads`` and return dL/dx. With
        ``need_input_grad=False`` dL/dx is not computed and None is returned
        (``Sequential.backward`` uses it for a network's first layer)."""
        kernels, cache = self._start_backward(dy)
        dx, dweight, dbias = getattr(kernels, f"{self.op}_backward")(dy, cache, need_input_grad)
        self.add_grads(weight=dweight, bias=dbias)
        return dx if need_input_grad else None

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")
        if self.transposed and any(self.output_padding):
            text += f", output_padding={self.output_padding}"
        return text + f", bias={'bias' in self.params}"


class Conv2d(_ConvBase):
    """2-D convolution (cross-correlation, as in every deep-learning library).

    Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
           rng=None, dtype=np.float32, init="uniform")

    Shape:
        x: (N, C_in, H, W) -> y: (N, C_out, H_out, W_out) with
        H_out = floor((H + 2*padding[0] - kernel_size[0]) / stride[0]) + 1
        W_out = floor((W + 2*padding[1] - kernel_size[1]) / stride[1]) + 1
        params: weight (C_out, C_in, kH, kW), bias (C_out,)
    """

    op = "conv2d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 rng=None, dtype=np.float32, init="uniform"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, 0, bias, rng,
                         dtype, init)


class ConvTranspose2d(_ConvBase):
    """Transposed convolution: the backward pass of a Conv2d, used as a forward pass.

    ConvTranspose2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
                    output_padding=0, bias=True, rng=None, dtype=np.float32, init="uniform")

    It upsamples (the generator of a GAN uses it). For the same kernel_size, stride and
    padding it maps a Conv2d's output shape back to its input shape; where a strided Conv2d
    maps several input sizes onto one output size, ``output_padding`` (0 <= output_padding <
    stride, PyTorch's meaning) says which: it adds that many rows (columns) at the bottom
    (right) of the output.

    Shape:
        x: (N, C_in, H, W) -> y: (N, C_out, H_out, W_out) with
        H_out = (H - 1)*stride[0] - 2*padding[0] + kernel_size[0] + output_padding[0]
        W_out = (W - 1)*stride[1] - 2*padding[1] + kernel_size[1] + output_padding[1]
        params: weight (C_in, C_out, kH, kW) (PyTorch's layout), bias (C_out,)
    """

    transposed = True
    op = "conv_transpose2d"


class _Pool2d(Layer):
    op = ""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = _checks.pair(kernel_size, "kernel_size", minimum=1)
        self.stride = self.kernel_size if stride is None else _checks.pair(stride, "stride", minimum=1)

    def output_shape(self, input_shape) -> tuple[int, int, int, int]:
        """The shape of ``forward``'s output for an input of ``input_shape`` (N, C, H, W);
        a clear error if the window does not fit."""
        kh, kw = self.kernel_size
        if kh > input_shape[2] or kw > input_shape[3]:
            raise ValueError(f"{self.name}: window {kh}x{kw} is larger than the input "
                             f"{input_shape[2]}x{input_shape[3]}")
        return (*input_shape[:2], *conv_output_hw(input_shape[2:], self.kernel_size, self.stride))

    def forward(self, x):
        _checks.float_array(x, "x", self.name, ndim=4, layout="(N, C, H, W)")
        self.output_shape(x.shape)
        y, cache = getattr(self._k, f"{self.op}_forward")(x, self.kernel_size, self.stride)
        self._cache = (self._k, cache, y.shape)
        return y

    def backward(self, dy):
        kernels, cache = self._start_backward(dy)
        return getattr(kernels, f"{self.op}_backward")(dy, cache)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2d(_Pool2d):
    """Max pooling: y = max over each kH x kW window, windows ``stride`` apart (no padding).

    MaxPool2d(kernel_size, stride=None)   (stride None: = kernel_size, windows that tile)

    Shape:
        x: (N, C, H, W) -> y: (N, C, H_out, W_out) with
        H_out = floor((H - kernel_size[0]) / stride[0]) + 1, likewise W_out

    Rows/columns that no window reaches (stride does not tile H) get zero gradient.
    Backward sends each window's gradient to exactly one input: its maximum, and on a tie
    the first maximal element in row-major order (MNIST's flat zero background ties a lot).
    Overlapping windows (stride < kernel) add their gradients.
    """

    op = "maxpool2d"


class AvgPool2d(_Pool2d):
    """Average pooling: y = mean over each window; backward spreads dy / (kH*kW) evenly.

    AvgPool2d(kernel_size, stride=None); shapes as for :class:`MaxPool2d`.
    """

    op = "avgpool2d"


class Linear(Layer):
    """Fully connected layer: y = x W^T + b.

    Linear(in_features, out_features, bias=True, rng=None, dtype=np.float32, init="uniform")

    Shape:
        x: (N, in_features) -> y: (N, out_features)
        params: weight (out_features, in_features), bias (out_features,)
    """

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32,
                 init="uniform"):
        super().__init__()
        self.in_features = _checks.positive_int(in_features, "in_features")
        self.out_features = _checks.positive_int(out_features, "out_features")
        _init_weights(self, init, rng, (out_features, in_features), (out_features,), bias, dtype)

    def forward(self, x):
        layout = f"(N, {self.in_features})"
        if isinstance(x, np.ndarray) and x.ndim > 2:
            layout += f" (got an image-shaped batch {x.shape}: put Flatten() before Linear)"
        _checks.float_array(x, "x", self.name, ndim=2, layout=layout)
        if x.shape[1] != self.in_features:
            raise ValueError(f"{self.name}: expected x of shape (N, {self.in_features}), got {x.shape}")
        y, cache = self._k.linear_forward(x, self._cast("weight", x), self._cast("bias", x))
        self._cache = (self._k, cache, y.shape)
        return y

    def backward(self, dy):
        kernels, cache = self._start_backward(dy)
        dx, dweight, dbias = kernels.linear_backward(dy, cache)
        self.add_grads(weight=dweight, bias=dbias)
        return dx

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={'bias' in self.params}"


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...); backward reshapes the gradient back."""

    def forward(self, x):
        _checks.float_array(x, "x", self.name)
        if x.ndim < 2:
            raise ValueError(f"{self.name}: expected at least 2 dimensions (N, ...), got shape {x.shape}")
        y = x.reshape(x.shape[0], -1)
        self._cache = (None, x.shape, y.shape)
        return y

    def backward(self, dy):
        _, x_shape = self._start_backward(dy)
        return dy.reshape(x_shape)


class Unflatten(Layer):
    """(N, d) -> (N, *shape) with d = prod(shape): Flatten's inverse (PyTorch's
    ``nn.Unflatten(1, shape)``). A GAN's generator uses it between its Linear and its first
    ConvTranspose2d. Backward reshapes the gradient back to (N, d).

    Unflatten(shape)      e.g. Unflatten((128, 7, 7)) turns (N, 6272) into (N, 128, 7, 7)
    """

    def __init__(self, shape):
        super().__init__()
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        self.shape = tuple(_checks.positive_int(d, "shape entries") for d in shape)
        if not self.shape:
            raise ValueError("Unflatten: shape must have at least one entry, e.g. (128, 7, 7)")
        self.size = int(np.prod(self.shape))

    def forward(self, x):
        _checks.float_array(x, "x", self.name, ndim=2, layout=f"(N, {self.size})")
        if x.shape[1] != self.size:
            raise ValueError(f"{self.name}: expected x of shape (N, {self.size}) to reshape to "
                             f"(N, {', '.join(map(str, self.shape))}), got {x.shape}")
        y = x.reshape(x.shape[0], *self.shape)
        self._cache = (None, x.shape, y.shape)
        return y

    def backward(self, dy):
        _, x_shape = self._start_backward(dy)
        return dy.reshape(x_shape)

    def extra_repr(self):
        return f"{self.shape}"


class _BatchNorm(Layer):
    """What BatchNorm1d and BatchNorm2d share; they differ only in the input layout."""

    ndims: tuple = ()
    layout = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=np.float32):
        super().__init__()
        self.num_features = _checks.positive_int(num_features, "num_features")
        self.eps = float(eps)
        if not self.eps > 0:
            raise ValueError(f"{self.name}: eps must be > 0, got {eps!r}")
        self.momentum = float(momentum)
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"{self.name}: momentum must be between 0 and 1 (PyTorch's meaning: "
                             f"the weight of the new batch in the running averages), got {momentum!r}")
        self.params = {"weight": np.ones(num_features, dtype), "bias": np.zeros(num_features, dtype)}
        self.buffers = {"running_mean": np.zeros(num_features, dtype),
                        "running_var": np.ones(num_features, dtype)}

    def forward(self, x):
        _checks.float_array(x, "x", self.name, layout=self.layout)
        if x.ndim not in self.ndims:
            raise ValueError(f"{self.name}: expected x of shape {self.layout}, got shape {x.shape}")
        _checks.channels(x, self.num_features, self.name)
        gamma, beta = self._cast("weight", x), self._cast("bias", x)
        if not self.training:
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            y, _, _, cache = self._k.batchnorm_forward(x, gamma, beta, self.eps,
                                                       rm.astype(x.dtype), rv.astype(x.dtype))
        else:
            m = x.size // self.num_features
            if m < 2:
                raise ValueError(
                    f"{self.name}: in training mode each channel needs more than 1 value to take "
                    f"a variance over, got x of shape {x.shape}: use a batch of 2 or more, or "
                    "call eval() to normalise with the running statistics")
            y, mean, var, cache = self._k.batchnorm_forward(x, gamma, beta, self.eps)
            # PyTorch's convention: new = (1 - momentum) * old + momentum * batch, with the
            # batch's *unbiased* variance (M/(M-1) times the one used to normalise)
            for name, batch in (("running_mean", mean), ("running_var", var * (m / (m - 1)))):
                buf = self.buffers[name]
                buf *= 1.0 - self.momentum
                buf += (self.momentum * batch).astype(buf.dtype, copy=False)
        self._cache = (self._k, cache, y.shape)
        return y

    def backward(self, dy):
        kernels, cache = self._start_backward(dy)
        dx, dgamma, dbeta = kernels.batchnorm_backward(dy, cache)
        self.add_grads(weight=dgamma, bias=dbeta)
        return dx

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of features: each feature (column) scaled to mean 0, variance 1
    over the batch, then by a learned ``weight`` (gamma) and ``bias`` (beta).

    BatchNorm1d(num_features, eps=1e-5, momentum=0.1, dtype=np.float32)

    Training mode: the batch's mean and biased variance normalise; the running statistics
    (buffers ``running_mean``, ``running_var``) move towards the batch's,
    ``new = (1 - momentum) * old + momentum * batch`` (PyTorch's convention, unbiased variance).
    Evaluation mode: the running statistics normalise, so one example's output no longer
    depends on the rest of its batch.

    Shape:
        x: (N, C) or (N, C, L) -> y: the same; statistics per channel C
        params: weight (C,) (starts at 1), bias (C,) (starts at 0); buffers the same shapes
    """

    ndims = (2, 3)
    layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of image channels: each channel normalised over the batch *and*
    every position (N*H*W values), then scaled and shifted by its ``weight`` and ``bias``.

    BatchNorm2d(num_features, eps=1e-5, momentum=0.1, dtype=np.float32)

    Train and eval modes, and the running statistics, as for :class:`BatchNorm1d`.

    Shape:
        x: (N, C, H, W) -> y: (N, C, H, W)
        params: weight (C,), bias (C,); buffers running_mean (C,), running_var (C,)
    """

    ndims = (4,)
    layout = "(N, C, H, W)"


class Dropout(Layer):
    """In training mode, zero each input with probability ``p`` and scale the rest by
    1/(1 - p) (so the expected output is the input); in evaluation mode, do nothing.

    Dropout(p=0.5, rng=None)    rng: a np.random.Generator or an int seed; the masks are drawn
                                from it, so a seeded run drops the same units every time

    Backward multiplies dy by the same mask (zero or 1/(1 - p)) that the forward pass used.

    Shape: x (any) -> y (the same).
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = as_generator(rng)

    def forward(self, x):
        _checks.float_array(x, "x", self.name)
        if not self.training or self.p == 0.0:
            self._cache = (None, None, x.shape)
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        self._cache = (None, mask, x.shape)
        return x * mask

    def backward(self, dy):
        _, mask = self._start_backward(dy)
        return dy if mask is None else dy * mask

    def extra_repr(self):
        return f"p={self.p}"


class _Activation(Layer):
    op = ""

    def _args(self):
        return ()

    def forward(self, x):
        _checks.float_array(x, "x", self.name)
        y, cache = getattr(self._k, f"{self.op}_forward")(x, *self._args())
        self._cache = (self._k, cache, y.shape)
        return y

    def backward(self, dy):
        kernels, cache = self._start_backward(dy)
        return getattr(kernels, f"{self.op}_backward")(dy, cache, *self._args())


class ReLU(_Activation):
    """y = max(x, 0); dx = dy where x > 0, else 0 (the derivative at exactly 0 is taken as 0)."""

    op = "relu"

    @property
    def last_active(self) -> np.ndarray | None:
        """Where the input of the last forward pass was > 0 (a bool array of its shape), or None
        before the first. In a fused Sequential the ReLU runs inside its convolution's block and
        keeps nothing: use ``Sequential(..., fuse=False)`` to look at it."""
        if self._cache is None:
            return None
        return np.asarray(self._cache[1]) > 0  # a 0/1 mask (fast, vectorized) or x (reference)


class LeakyReLU(_Activation):
    """y = x if x > 0 else negative_slope * x."""

    op = "leaky_relu"

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def _args(self):
        return (self.negative_slope,)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x)); dx = dy * y * (1 - y)."""

    op = "sigmoid"


class Tanh(_Activation):
    """y = tanh(x); dx = dy * (1 - y^2)."""

    op = "tanh"
