"""Fast kernels: no Python loop over pixels or batch items.

Every function here has a loop twin in :mod:`cnn_lib.reference` with the same signature and
the same results (the tests hold them to 1e-10 in float64). The reference reads like the
derivation; this module reads like the reference *reorganised* so that NumPy and BLAS do the
work. Lesson 09 walks through the tricks:

* Convolution is one matrix product. ``im2col`` copies, for each of the ``kH*kW`` kernel taps,
  one shifted (and strided) view of the padded input into a column block, so the inner loop
  over taps has ``kH*kW`` iterations, each moving a whole batch at once. Channels are the
  innermost axis (NHWC), so every copy is a long contiguous run.
* The input gradient of a convolution is the same walk in reverse (``col2im``): one matrix
  product and ``kH*kW`` shifted *adds*, never a scatter with ``np.add.at``.
* Pooling takes ``np.maximum`` / sums over the ``kH*kW`` strided sub-grids of the input.

Shapes follow PyTorch: images ``(N, C, H, W)``, conv weights ``(C_out, C_in, kH, kW)``.
"""

from __future__ import annotations

import numpy as np


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length along one axis: ``floor((size + 2*padding - kernel) / stride) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def _taps(kh: int, kw: int):
    """Kernel taps ``(i, j)`` in row-major order (the order the tie rule refers to)."""
    return [(i, j) for i in range(kh) for j in range(kw)]


# --------------------------------------------------------------------------- convolution


def _padded_nhwc(x: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """Copy ``x`` (N, C, H, W) into a zero-padded channels-last array (N, H+2ph, W+2pw, C)."""
    n, c, h, w = x.shape
    xp = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)
    xp[:, ph : ph + h, pw : pw + w, :] = x.transpose(0, 2, 3, 1)
    return xp


def im2col(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """Gather every receptive field of a padded NHWC input into a row.

    xp:      (N, Hp, Wp, C) padded input, channels last
    returns: (N, H_out, W_out, kH, kW, C); reshaped to (N*H_out*W_out, kH*kW*C) it is the
             matrix whose product with the flattened kernel is the convolution.
    """
    n, hp, wp, c = xp.shape
    kh, kw = kernel
    sh, sw = stride
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    cols = np.empty((n, ho, wo, kh, kw, c), dtype=xp.dtype)
    for i, j in _taps(kh, kw):
        cols[:, :, :, i, j, :] = xp[:, i : i + sh * ho : sh, j : j + sw * wo : sw, :]
    return cols


def col2im(dcols: np.ndarray, padded_shape: tuple, stride: tuple[int, int]) -> np.ndarray:
    """Adjoint of :func:`im2col`: add every row of ``dcols`` back where it was gathered from.

    dcols:   (N, H_out, W_out, kH, kW, C)
    returns: (N, Hp, Wp, C), overlapping receptive fields summed
    """
    n, ho, wo, kh, kw, c = dcols.shape
    sh, sw = stride
    dxp = np.zeros(padded_shape, dtype=dcols.dtype)
    for i, j in _taps(kh, kw):
        dxp[:, i : i + sh * ho : sh, j : j + sw * wo : sw, :] += dcols[:, :, :, i, j, :]
    return dxp


def _weight_matrix(weight: np.ndarray) -> np.ndarray:
    """(C_out, C_in, kH, kW) -> (kH*kW*C_in, C_out), matching the column order of im2col."""
    c_out = weight.shape[0]
    return weight.transpose(2, 3, 1, 0).reshape(-1, c_out)


def conv2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0)):
    """Cross-correlation (what deep learning calls convolution), vectorised.

    x:       (N, C_in, H, W)
    weight:  (C_out, C_in, kH, kW)
    bias:    (C_out,) or None
    returns: y (N, C_out, H_out, W_out) and a cache for :func:`conv2d_backward`
    """
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    ph, pw = padding
    cols = im2col(_padded_nhwc(x, ph, pw), (kh, kw), stride)
    _, ho, wo = cols.shape[:3]
    cols = cols.reshape(n * ho * wo, kh * kw * c_in)
    y = cols @ _weight_matrix(weight)
    if bias is not None:
        y += bias
    y = y.reshape(n, ho, wo, c_out).transpose(0, 3, 1, 2)
    return y, (x.shape, cols, weight, bias is not None, stride, padding)


def conv2d_backward(dy, cache):
    """Gradients of a convolution.

    dy:      (N, C_out, H_out, W_out) upstream gradient dL/dy
    returns: dx (N, C_in, H, W), dweight (C_out, C_in, kH, kW), dbias (C_out,) or None
    """
    x_shape, cols, weight, has_bias, stride, padding = cache
    n, c_in, h, w = x_shape
    c_out, _, kh, kw = weight.shape
    ph, pw = padding
    ho, wo = dy.shape[2:]
    dy_mat = dy.transpose(0, 2, 3, 1).reshape(n * ho * wo, c_out)
    # dW = sum over every output position of (receptive field) x (its upstream gradient)
    dweight = (cols.T @ dy_mat).reshape(kh, kw, c_in, c_out).transpose(3, 2, 0, 1)
    dbias = dy_mat.sum(axis=0) if has_bias else None
    # dx: each output position sends dy * W back to the receptive field it read from
    dcols = (dy_mat @ _weight_matrix(weight).T).reshape(n, ho, wo, kh, kw, c_in)
    dxp = col2im(dcols, (n, h + 2 * ph, w + 2 * pw, c_in), stride)
    dx = dxp[:, ph : ph + h, pw : pw + w, :].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(dx), np.ascontiguousarray(dweight), dbias


def conv_transpose2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0)):
    """Transposed convolution: the input-gradient of a convolution, used as a layer.

    x:       (N, C_in, H, W)
    weight:  (C_in, C_out, kH, kW)  (PyTorch's layout for ConvTranspose2d)
    returns: y (N, C_out, (H-1)*sh - 2*ph + kH, (W-1)*sw - 2*pw + kW) and a cache
    """
    n, c_in, h, w = x.shape
    _, c_out, kh, kw = weight.shape
    sh, sw = stride
    ph, pw = padding
    ho, wo = (h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw
    x_mat = x.transpose(0, 2, 3, 1).reshape(n * h * w, c_in)
    # weight seen as a conv kernel from C_out to C_in channels: (C_in, C_out, kH, kW)
    dcols = (x_mat @ _weight_matrix(weight).T).reshape(n, h, w, kh, kw, c_out)
    yp = col2im(dcols, (n, ho + 2 * ph, wo + 2 * pw, c_out), stride)
    y = yp[:, ph : ph + ho, pw : pw + wo, :]
    if bias is not None:
        y = y + bias
    cache = (x_mat, x.shape, weight, bias is not None, stride, padding)
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)), cache


def conv_transpose2d_backward(dy, cache):
    """dy: (N, C_out, H_out, W_out) -> dx (N, C_in, H, W), dweight (C_in, C_out, kH, kW), dbias."""
    x_mat, x_shape, weight, has_bias, stride, padding = cache
    n, c_in, h, w = x_shape
    _, c_out, kh, kw = weight.shape
    ph, pw = padding
    # The adjoint of "col2im then crop" is "pad then im2col": a plain convolution of dy.
    cols = im2col(_padded_nhwc(dy, ph, pw), (kh, kw), stride).reshape(n * h * w, kh * kw * c_out)
    dx = (cols @ _weight_matrix(weight)).reshape(n, h, w, c_in).transpose(0, 3, 1, 2)
    dweight = (cols.T @ x_mat).reshape(kh, kw, c_out, c_in).transpose(3, 2, 0, 1)
    dbias = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return np.ascontiguousarray(dx), np.ascontiguousarray(dweight), dbias


# --------------------------------------------------------------------------- pooling


def _subgrids(x, kernel, stride):
    """Yield (tap index, i, j, strided view) for each kernel tap: x[..., i::sh, j::sw] cropped."""
    kh, kw = kernel
    sh, sw = stride
    ho = (x.shape[2] - kh) // sh + 1
    wo = (x.shape[3] - kw) // sw + 1
    for t, (i, j) in enumerate(_taps(kh, kw)):
        yield t, (slice(None), slice(None), slice(i, i + sh * ho, sh), slice(j, j + sw * wo, sw))


def maxpool2d_forward(x, kernel, stride):
    """Max pooling without padding.

    x:       (N, C, H, W)
    returns: y (N, C, H_out, W_out) and a cache holding, per window, the tap that won.
    Tie rule: the *first* maximal element in row-major window order wins (like np.argmax),
    so exactly one input per window receives that window's gradient.
    """
    y = None
    winner = None
    for t, window in _subgrids(x, kernel, stride):
        sub = x[window]
        if y is None:
            y = sub.copy()
            winner = np.zeros(y.shape, dtype=np.int32)
            continue
        better = sub > y  # strict: an equal later element never displaces an earlier one
        np.copyto(y, sub, where=better)
        winner[better] = t
    return y, (x.shape, x.dtype, winner, kernel, stride)


def maxpool2d_backward(dy, cache):
    """dy: (N, C, H_out, W_out) -> dx (N, C, H, W); each window's gradient goes to its winner."""
    x_shape, dtype, winner, kernel, stride = cache
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for t, window in _subgrids(dx, kernel, stride):
        dx[window] += np.where(winner == t, dy, 0)
    return dx


def avgpool2d_forward(x, kernel, stride):
    """Average pooling without padding. x: (N, C, H, W) -> y (N, C, H_out, W_out)."""
    y = None
    for _, window in _subgrids(x, kernel, stride):
        y = x[window].copy() if y is None else y + x[window]
    y /= kernel[0] * kernel[1]
    return y, (x.shape, kernel, stride)


def avgpool2d_backward(dy, cache):
    """dy: (N, C, H_out, W_out) -> dx (N, C, H, W); each window spreads dy evenly."""
    x_shape, kernel, stride = cache
    dx = np.zeros(x_shape, dtype=dy.dtype)
    share = dy / (kernel[0] * kernel[1])
    for _, window in _subgrids(dx, kernel, stride):
        dx[window] += share
    return dx


# --------------------------------------------------------------------------- dense + softmax


def linear_forward(x, weight, bias):
    """x: (N, in), weight: (out, in), bias: (out,) or None -> y = x W^T + b: (N, out)."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y, (x, weight, bias is not None)


def linear_backward(dy, cache):
    """dy: (N, out) -> dx = dy W (N, in), dweight = dy^T x (out, in), dbias = sum_n dy (out,)."""
    x, weight, has_bias = cache
    return dy @ weight, dy.T @ x, (dy.sum(axis=0) if has_bias else None)


def log_softmax(z, axis=-1):
    """log(softmax(z)) computed as z - max - log(sum(exp(z - max))): never overflows."""
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(z, axis=-1):
    """Stable softmax: exp(z - max) / sum(exp(z - max))."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels, and dL/dlogits.

    logits: (N, K), labels: (N,) ints in [0, K)
    returns: loss (float), dlogits (N, K) = (softmax(logits) - onehot(labels)) / N
    """
    n = logits.shape[0]
    logp = log_softmax(logits)
    loss = -logp[np.arange(n), labels].mean()
    dlogits = np.exp(logp)
    dlogits[np.arange(n), labels] -= 1
    return float(loss), dlogits / n


def sigmoid(z):
    """Stable logistic function: never evaluates exp of a large positive number."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1 / (1 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1 + ez)
    return out


# --------------------------------------------------------------------------- activations
# Same signatures as the loop versions in reference.py: forward returns (y, cache).


def relu_forward(x):
    return np.maximum(x, 0), x


def relu_backward(dy, x):
    return dy * (x > 0)


def leaky_relu_forward(x, slope):
    return np.where(x > 0, x, slope * x), x


def leaky_relu_backward(dy, x, slope):
    return dy * np.where(x > 0, 1.0, slope).astype(dy.dtype, copy=False)


def sigmoid_forward(x):
    y = sigmoid(x)
    return y, y


def sigmoid_backward(dy, y):
    return dy * y * (1 - y)


def tanh_forward(x):
    y = np.tanh(x)
    return y, y


def tanh_backward(dy, y):
    return dy * (1 - y * y)
