"""Layers. Every layer speaks the same small protocol::

    layer.params  : dict[str, np.ndarray]   e.g. {"weight": W, "bias": b}; empty for ReLU, pooling
    layer.grads   : dict[str, np.ndarray]   same keys, written (overwritten) by backward()
    y  = layer.forward(x)                   caches what backward needs
    dx = layer.backward(dy)                 returns dL/dx (never None), fills layer.grads

``backward`` computes gradients and nothing else; an optimizer (:mod:`cnn_lib.optim`) changes
the weights. Each call to ``backward`` *overwrites* ``grads`` (it does not add to them).

Each layer runs either its ``"fast"`` kernels (:mod:`cnn_lib.functional`) or its loop
``"reference"`` kernels (:mod:`cnn_lib.reference`): set ``layer.impl``. Both give the same
numbers; the reference ones read like the derivations.

Layout and names follow PyTorch: inputs ``(N, C, H, W)``, conv weights
``(C_out, C_in, kH, kW)``, linear weights ``(out_features, in_features)``.
"""

from __future__ import annotations

import numpy as np

from . import _checks
from . import functional as F
from . import reference as R

IMPLEMENTATIONS = {"fast": F, "reference": R}


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
    reference to it sees the change); ``grad`` is whatever the last ``backward`` wrote.
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

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.value.shape}, dtype={self.value.dtype})"


class Layer:
    """Base class: holds ``params``, ``grads``, the forward cache and the implementation."""

    #: True when ``backward(dy, need_input_grad=False)`` is supported: the layer then fills
    #: ``grads`` without computing dL/dx and returns None (Conv2d, ConvTranspose2d, Sequential).
    can_skip_input_grad = False

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.impl = "fast"
        self._cache = None

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str):
        if value not in IMPLEMENTATIONS:
            raise ValueError(f"impl must be one of {sorted(IMPLEMENTATIONS)}, got {value!r}")
        self._impl = value

    @property
    def _k(self):
        return IMPLEMENTATIONS[self._impl]

    @property
    def name(self) -> str:
        return type(self).__name__

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def parameters(self) -> list[Parameter]:
        return [Parameter(self, key, key) for key in self.params]

    def zero_grad(self) -> None:
        self.grads = {key: np.zeros_like(value) for key, value in self.params.items()}

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

    def _store(self, **grads):
        for key, grad in grads.items():
            if key in self.params:
                self.grads[key] = grad.astype(self.params[key].dtype, copy=False)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        return f"{self.name}({self.extra_repr()})"


def _uniform_init(rng, shape, fan_in, dtype):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for conv and linear layers."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def _init_weights(layer, init, rng, w_shape, b_shape, fan_in, bias, dtype):
    rng = as_generator(rng)
    if init == "uniform":
        layer.params["weight"] = _uniform_init(rng, w_shape, fan_in, dtype)
        if bias:
            layer.params["bias"] = _uniform_init(rng, b_shape, fan_in, dtype)
    elif init == "he":
        # He et al. 2015: std = sqrt(2 / fan_in) keeps activations' variance through ReLUs.
        layer.params["weight"] = (rng.standard_normal(w_shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
        if bias:
            layer.params["bias"] = np.zeros(b_shape, dtype=dtype)
    else:
        raise ValueError(f"init must be 'uniform' or 'he', got {init!r}")


class Conv2d(Layer):
    """2-D convolution (cross-correlation, as in every deep-learning library).

    Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
           rng=None, dtype=np.float32, init="uniform")

    x: (N, C_in, H, W) -> y: (N, C_out, H_out, W_out),
    H_out = floor((H + 2*padding - kH) / stride) + 1 (likewise W_out).
    params: weight (C_out, C_in, kH, kW), bias (C_out,).
    """

    can_skip_input_grad = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 rng=None, dtype=np.float32, init="uniform"):
        super().__init__()
        self.in_channels = _checks.positive_int(in_channels, "in_channels")
        self.out_channels = _checks.positive_int(out_channels, "out_channels")
        self.kernel_size = _checks.pair(kernel_size, "kernel_size", minimum=1)
        self.stride = _checks.pair(stride, "stride", minimum=1)
        self.padding = _checks.pair(padding, "padding", minimum=0)
        kh, kw = self.kernel_size
        _init_weights(self, init, rng, (out_channels, in_channels, kh, kw), (out_channels,),
                      in_channels * kh * kw, bias, dtype)

    def output_shape(self, input_shape):
        n, _, h, w = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (n, self.out_channels, F.output_size(h, kh, sh, ph), F.output_size(w, kw, sw, pw))

    def _check_input(self, x):
        _checks.float_array(x, "x", self.name, ndim=4, layout="(N, C_in, H, W)")
        _checks.channels(x, self.in_channels, self.name)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        h, w = x.shape[2] + 2 * ph, x.shape[3] + 2 * pw
        if kh > h or kw > w:
            raise ValueError(
                f"{self.name}: kernel {kh}x{kw} is larger than the padded input {h}x{w} "
                f"(input {x.shape[2]}x{x.shape[3]} plus padding {self.padding} on each side)"
            )

    def forward(self, x):
        self._check_input(x)
        y, cache = self._k.conv2d_forward(x, self._cast("weight", x), self._cast("bias", x),
                                          self.stride, self.padding)
        self._cache = (self._k, cache, y.shape)
        return y

    def backward(self, dy, need_input_grad=True):
        """Fill ``grads`` and return dL/dx. With ``need_input_grad=False`` dL/dx is not
        computed and None is returned (``Sequential.backward`` uses it for a first layer)."""
        kernels, cache = self._start_backward(dy)
        if need_input_grad or kernels is not F:  # (the reference loops always compute dx)
            dx, dweight, dbias = kernels.conv2d_backward(dy, cache)
        else:
            dx, dweight, dbias = F.conv2d_backward(dy, cache, need_input_grad=False)
        self._store(weight=dweight, bias=dbias)
        return dx if need_input_grad else None

    # Fused with the ReLU and/or the MaxPool2d that follow (Sequential does this for the fast
    # kernels): the same results (backward: up to rounding) as
    # ``pool.forward(relu.forward(self.forward(x)))`` and the backward passes one after the
    # other, in one pass over the batch instead of two or three. Each layer keeps what its own
    # forward would have kept, except a ReLU under a pooling, which keeps the smaller mask of
    # the pooled output (see MaskAfterPooling); each layer's own backward still works.

    def forward_fused(self, x, relu: ReLU | None = None, pool: MaxPool2d | None = None):
        """``pool.forward(relu.forward(self.forward(x)))`` in one pass, with ``relu`` or
        ``pool`` None to leave that layer out (fast kernels only: see :meth:`fusable`).
        Neither checks its input for NaN or inf on its own here: the next layer checks the
        block's output."""
        self._check_input(x)
        conv_shape = self.output_shape(x.shape)
        if pool is not None:
            pool._check_window(conv_shape)
        conv_args = (x, self._cast("weight", x), self._cast("bias", x), self.stride, self.padding)
        y, cache, mask, pool_cache = F.conv2d_block_forward(
            *conv_args, relu=relu is not None,
            pool=None if pool is None else (pool.kernel_size, pool.stride))
        self._cache = (F, cache, conv_shape)
        if relu is not None:
            relu._cache = (F, mask if pool is None else MaskAfterPooling(mask, conv_args), conv_shape)
        if pool is not None:
            pool._cache = (F, pool_cache, y.shape)
        return y

    def backward_fused(self, dy, relu: ReLU | None = None, pool: MaxPool2d | None = None,
                       need_input_grad=True):
        """The backward passes of ``pool``, ``relu`` and this layer in one pass (either of the
        first two may be None); ``need_input_grad`` as in :meth:`backward`. Every forward
        pass must have run with the fast kernels (see :meth:`fusable_backward`)."""
        top = pool if pool is not None else relu
        _checks.forward_called(self._cache, self.name)
        if relu is not None:
            _checks.forward_called(relu._cache, relu.name)
        _, top_cache = top._start_backward(dy)  # checks dy against the block's output
        relu_mask = None if relu is None else relu._cache[1]
        if isinstance(relu_mask, MaskAfterPooling):
            relu_mask = relu_mask.pooled if pool is not None else relu_mask.full()
        dx, dweight, dbias = F.conv2d_backward(
            dy, self._cache[1], need_input_grad, relu_mask=relu_mask,
            pool_cache=None if pool is None else top_cache)
        self._store(weight=dweight, bias=dbias)
        return dx if need_input_grad else None

    def fusable(self, after) -> tuple[ReLU | None, MaxPool2d | None] | None:
        """Which of the layers ``after`` this one can run fused with it (:meth:`forward_fused`):
        ``(relu, pool)`` for a ReLU and/or a MaxPool2d that come next, in that order (either
        may be None), or None when none can. Every layer involved must run the fast kernels."""
        if self.impl != "fast":
            return None
        after = list(after)[:2]
        relu = pool = None
        if after and type(after[0]) is ReLU:
            if after[0].impl != "fast":
                return None
            relu = after.pop(0)
        if after and type(after[0]) is MaxPool2d and after[0].impl == "fast":
            pool = after[0]
        return None if relu is None and pool is None else (relu, pool)

    def fusable_backward(self, relu: ReLU | None, pool: MaxPool2d | None) -> bool:
        """Were the caches of this layer and of ``relu`` and ``pool`` (either may be None) all
        made by the fast kernels (the reference ReLU keeps x, not a mask)?"""
        return all(layer is None or (layer._cache is not None and layer._cache[0] is F)
                   for layer in (self, relu, pool))

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={'bias' in self.params}")


class ConvTranspose2d(Layer):
    """Transposed convolution: the backward pass of a Conv2d, used as a forward pass.

    It upsamples (the generator of a GAN uses it). For the same settings it maps a
    Conv2d's output shape back to its input shape.

    x: (N, C_in, H, W) -> y: (N, C_out, (H-1)*stride - 2*padding + kH, ...).
    params: weight (C_in, C_out, kH, kW) (PyTorch's layout), bias (C_out,).
    """

    can_skip_input_grad = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 rng=None, dtype=np.float32, init="uniform"):
        super().__init__()
        self.in_channels = _checks.positive_int(in_channels, "in_channels")
        self.out_channels = _checks.positive_int(out_channels, "out_channels")
        self.kernel_size = _checks.pair(kernel_size, "kernel_size", minimum=1)
        self.stride = _checks.pair(stride, "stride", minimum=1)
        self.padding = _checks.pair(padding, "padding", minimum=0)
        kh, kw = self.kernel_size
        # PyTorch computes fan_in from weight.shape[1] * kH * kW for transposed convs too.
        _init_weights(self, init, rng, (in_channels, out_channels, kh, kw), (out_channels,),
                      out_channels * kh * kw, bias, dtype)

    def forward(self, x):
        _checks.float_array(x, "x", self.name, ndim=4, layout="(N, C_in, H, W)")
        _checks.channels(x, self.in_channels, self.name)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = (x.shape[2] - 1) * sh - 2 * ph + kh, (x.shape[3] - 1) * sw - 2 * pw + kw
        if ho < 1 or wo < 1:
            raise ValueError(f"{self.name}: padding {self.padding} crops the whole output "
                             f"({ho}x{wo}) for input {x.shape[2]}x{x.shape[3]}")
        y, cache = self._k.conv_transpose2d_forward(
            x, self._cast("weight", x), self._cast("bias", x), self.stride, self.padding)
        self._cache = (self._k, cache, y.shape)
        return y

    def backward(self, dy, need_input_grad=True):
        """Fill ``grads`` and return dL/dx (None, and not computed, if ``need_input_grad=False``)."""
        kernels, cache = self._start_backward(dy)
        if need_input_grad or kernels is not F:  # (the reference loops always compute dx)
            dx, dweight, dbias = kernels.conv_transpose2d_backward(dy, cache)
        else:
            dx, dweight, dbias = F.conv_transpose2d_backward(dy, cache, need_input_grad=False)
        self._store(weight=dweight, bias=dbias)
        return dx if need_input_grad else None

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={'bias' in self.params}")


class _Pool2d(Layer):
    op = ""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = _checks.pair(kernel_size, "kernel_size", minimum=1)
        self.stride = self.kernel_size if stride is None else _checks.pair(stride, "stride", minimum=1)

    def _check_window(self, x_shape):
        kh, kw = self.kernel_size
        if kh > x_shape[2] or kw > x_shape[3]:
            raise ValueError(f"{self.name}: window {kh}x{kw} is larger than the input "
                             f"{x_shape[2]}x{x_shape[3]}")

    def forward(self, x):
        _checks.float_array(x, "x", self.name, ndim=4, layout="(N, C, H, W)")
        self._check_window(x.shape)
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

    x: (N, C, H, W) -> y: (N, C, floor((H - kH)/sH) + 1, floor((W - kW)/sW) + 1).
    Rows/columns that no window reaches (stride does not tile H) get zero gradient.
    Backward sends each window's gradient to exactly one input: its maximum, and on a tie
    the first maximal element in row-major order (MNIST's flat zero background ties a lot).
    Overlapping windows (stride < kernel) add their gradients.
    """

    op = "maxpool2d"


class AvgPool2d(_Pool2d):
    """Average pooling: y = mean over each window; backward spreads dy / (kH*kW) evenly."""

    op = "avgpool2d"


class Linear(Layer):
    """Fully connected layer: y = x W^T + b.

    x: (N, in_features) -> y: (N, out_features).
    params: weight (out_features, in_features), bias (out_features,).
    """

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32,
                 init="uniform"):
        super().__init__()
        self.in_features = _checks.positive_int(in_features, "in_features")
        self.out_features = _checks.positive_int(out_features, "out_features")
        _init_weights(self, init, rng, (out_features, in_features), (out_features,),
                      in_features, bias, dtype)

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
        self._store(weight=dweight, bias=dbias)
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

    def backward(self, dy):
        kernels, cache = self._start_backward(dy)
        if isinstance(cache, MaskAfterPooling):  # it ran fused under a pooling: rebuild its mask
            cache = cache.full()
        return kernels.relu_backward(dy, cache)


class MaskAfterPooling:
    """What a ReLU keeps when it ran fused between a Conv2d and a MaxPool2d
    (:meth:`Conv2d.forward_fused`, which pools first and applies the ReLU to the pooled
    numbers: the two commute, see :func:`cnn_lib.functional.conv2d_block_forward`).

    ``pooled`` is the ReLU's 0/1 mask of the *pooled* output: all that the fused backward
    needs, a quarter of the numbers with 2x2 windows. The mask that ``ReLU.forward`` would
    have kept, of the convolution's output, is never made; should the ReLU's own backward be
    called, :meth:`full` rebuilds it by running the convolution again on the input and the
    parameters it had (like the Conv2d's backward, it assumes that the weights have not been
    changed in between).
    """

    __slots__ = ("pooled", "conv_args")

    def __init__(self, pooled: np.ndarray, conv_args: tuple):
        self.pooled, self.conv_args = pooled, conv_args  # conv_args: x, weight, bias, stride, padding

    def full(self) -> np.ndarray:
        y, _ = F.conv2d_forward(*self.conv_args)
        return F.relu_forward(y)[1]


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
