"""Dense layers and activations, fast: products and elementwise passes shared out between threads.

Only the kernels that gain from threads live here; the others (sigmoid, tanh, softmax
cross-entropy) are the vectorized tier's, re-exported by :mod:`cnn_lib.kernels.fast`.
Elementwise ufuncs keep their input's memory layout, so channels-last stays channels-last.
"""

from __future__ import annotations

import numpy as np

from .. import vectorized as _vectorized
from .threads import for_each_slice, matmul


def linear_forward(x, weight, bias):
    """y = x W^T + b, its products on every core.

    x (N, in), weight (out, in), bias (out,) or None -> y (N, out), cache (x, weight, has bias)
    """
    y = matmul(x, weight.T)  # x @ weight.T, on every core
    if bias is not None:
        y += bias
    return y, (x, weight, bias is not None)


def linear_backward(dy, cache):
    """dy (N, out) -> dx = dy W (N, in), dweight = dy^T x (out, in), dbias = sum_n dy (out,) or None."""
    x, weight, has_bias = cache
    return matmul(dy, weight), matmul(dy.T, x), (dy.sum(axis=0) if has_bias else None)


def relu_forward(x):
    """y = max(x, 0). x (any shape) -> y (x's shape, and memory layout), cache the mask
    x > 0 as 1.0/0.0 in x's dtype."""
    if x.ndim == 0:
        return np.maximum(x, 0), x > 0
    # The cache is the mask "x > 0" stored as 1.0 / 0.0 in x's dtype (not as bools), and
    # y = x * mask. Multiplying two float arrays runs NumPy's vector loop; np.maximum(x, 0)
    # and float-times-bool products run scalar loops, 2-3 times slower (measured).
    # empty_like keeps x's memory layout (channels-last stays channels-last).
    y, mask = np.empty_like(x), np.empty_like(x)

    def work(part):
        np.greater(x[part], 0, out=mask[part])
        np.multiply(x[part], mask[part], out=y[part])

    for_each_slice(work, len(x), 3 * x[0].nbytes)  # x, y and mask
    return y, mask


def relu_backward(dy, mask):
    """dy (x's shape) -> dx = dy * mask."""
    if dy.ndim == 0:
        return dy * mask
    dx = np.empty_like(dy)

    def work(part):
        np.multiply(dy[part], mask[part], out=dx[part])

    for_each_slice(work, len(dy), 3 * dy[0].nbytes)  # dy, mask and dx
    return dx


def leaky_relu_forward(x, slope):
    """y = x where x > 0, else slope * x. x (any shape) -> y (x's shape and memory layout),
    cache the factor dy/dx (1.0 or slope, in x's dtype).

    For 0 <= slope <= 1 the factor is max(x > 0, slope): two vector passes instead of
    ``np.where``'s slow scalar loop, and y = x * factor is exactly the vectorized tier's
    ``where(x > 0, x, slope * x)``. Other slopes go to the vectorized tier."""
    if x.ndim == 0 or not 0.0 <= slope <= 1.0:
        return _vectorized.leaky_relu_forward(x, slope)
    y, factor = np.empty_like(x), np.empty_like(x)
    slope = x.dtype.type(slope)

    def work(part):
        np.greater(x[part], 0, out=factor[part])
        np.maximum(factor[part], slope, out=factor[part])
        np.multiply(x[part], factor[part], out=y[part])

    for_each_slice(work, len(x), 3 * x[0].nbytes)  # x, y and the factor
    return y, factor


def leaky_relu_backward(dy, cache, slope):
    """dy (x's shape) -> dx = dy * factor (the forward pass's cache)."""
    if dy.ndim == 0 or not 0.0 <= slope <= 1.0:              # as in the forward pass
        return _vectorized.leaky_relu_backward(dy, cache, slope)  # the cache is x there
    return relu_backward(dy, cache)
