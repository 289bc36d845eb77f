"""Vectorized kernels: the loops of :mod:`cnn_lib.kernels.reference`, as whole-array NumPy.

No Python loop runs over images, channels or pixels; the only loops left run over the
kH*kW taps of a kernel or a pooling window (9 iterations for a 3x3 kernel). Two ideas do
all the work:

* **A convolution is one matrix product.** :func:`im2col` copies every receptive field of
  the input into a row of a matrix ``cols``; with the kernel reshaped to a matrix, ``cols @
  W_mat.T`` is every output number at once, computed by BLAS. Backward is two more
  products: ``dy_mat.T @ cols`` is dL/dW, and ``dy_mat @ W_mat`` is dL/dcols, which
  :func:`col2im` adds back to the input positions each row was copied from (that adding back
  *is* the "full convolution with the flipped kernel" of lesson 06).
* **Pooling works on a strided view of the windows** (``sliding_window_view``, no copy):
  ``max``/``argmax``/``mean`` over its last axes pool every window at once.

Everything here keeps PyTorch's layout ``(N, C, H, W)``; a cache holds what backward needs
and nothing is threaded or fused. Same calling convention, same numbers as the other two
tiers (see :mod:`cnn_lib.kernels`).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .shapes import conv_output_hw, conv_transpose_output_hw


def pad(x, padding):
    """Zero-pad the two spatial axes of x (N, C, H, W) by padding = (P_H, P_W) on each side."""
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def crop(xp, padding, hw):
    """The inverse of :func:`pad`: the (H, W) inside of a padded (N, C, H + 2P_H, W + 2P_W) array."""
    (ph, pw), (h, w) = padding, hw
    return xp[:, :, ph : ph + h, pw : pw + w]


# --------------------------------------------------------------------------- convolution


def windows(xp, kernel, stride):
    """Every kH x kW window of xp, ``stride`` apart, as a read-only view (nothing is copied).

    xp:      (N, C, H, W)
    returns: (N, C, H_out, W_out, kH, kW); element [n, c, i, j, p, q] is
             xp[n, c, i*s_H + p, j*s_W + q]: tap (p, q) of window (i, j)
    """
    (sh, sw) = stride
    return sliding_window_view(xp, kernel, axis=(2, 3))[:, :, ::sh, ::sw]


def im2col(xp, kernel, stride):
    """Copy every receptive field of a padded input into one row of a matrix.

    xp:      (N, C, Hp, Wp) the padded input
    returns: cols (N*H_out*W_out, C*kH*kW); row (n, i, j) holds the window that output
             pixel (i, j) of image n reads, in the order of ``weight.reshape(C_out, -1)``
             (channel, then kernel row, then kernel column)
    """
    view = windows(xp, kernel, stride)  # (N, C, Ho, Wo, kH, kW)
    n, c, ho, wo, kh, kw = view.shape
    return view.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)  # one copy


def col2im(dcols, xp_shape, kernel, stride):
    """The adjoint of :func:`im2col`: add every row back where it was copied from.

    dcols:   (N*H_out*W_out, C*kH*kW)
    returns: (N, C, Hp, Wp) of ``xp_shape``; a position that several windows share
             receives the sum of their contributions
    """
    n, c, hp, wp = xp_shape
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = conv_output_hw((hp, wp), kernel, stride)
    d = dcols.reshape(n, ho, wo, c, kh, kw).transpose(0, 3, 1, 2, 4, 5)  # (N, C, Ho, Wo, kH, kW)
    dxp = np.zeros(xp_shape, dtype=dcols.dtype)
    for p in range(kh):  # tap (p, q) of every window at once: a strided sub-grid of dxp
        for q in range(kw):
            dxp[:, :, p : p + sh * ho : sh, q : q + sw * wo : sw] += d[:, :, :, :, p, q]
    return dxp


def conv2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0)):
    """y = cols @ W_mat.T + b: every output number of the convolution in one matrix product.

    x (N, C_in, H, W), weight (C_out, C_in, kH, kW), bias (C_out,) or None
    -> y (N, C_out, H_out, W_out),
       cache (x.shape, cols (N*H_out*W_out, C_in*kH*kW), weight, has bias, stride, padding)
    """
    n = x.shape[0]
    c_out, _, kh, kw = weight.shape
    ho, wo = conv_output_hw(x.shape[2:], (kh, kw), stride, padding)
    cols = im2col(pad(x, padding), (kh, kw), stride)
    y_mat = cols @ weight.reshape(c_out, -1).T  # (N*Ho*Wo, C_out): one row per output pixel
    if bias is not None:
        y_mat += bias
    y = y_mat.reshape(n, ho, wo, c_out).transpose(0, 3, 1, 2)  # rows back into images
    return y, (x.shape, cols, weight, bias is not None, stride, padding)


def conv2d_backward(dy, cache, need_input_grad=True):
    """dW = dy_mat.T @ cols,  db = column sums of dy_mat,  dx = col2im(dy_mat @ W_mat), cropped.

    dy (N, C_out, H_out, W_out) -> dx (N, C_in, H, W) (None if not need_input_grad),
    dweight (C_out, C_in, kH, kW), dbias (C_out,) or None
    """
    x_shape, cols, weight, has_bias, stride, padding = cache
    c_out, _, kh, kw = weight.shape
    dy_mat = dy.transpose(0, 2, 3, 1).reshape(-1, c_out)  # (N*Ho*Wo, C_out), rows as in cols
    dweight = (dy_mat.T @ cols).reshape(weight.shape)
    dbias = dy_mat.sum(axis=0) if has_bias else None
    dx = None
    if need_input_grad:
        (ph, pw), (n, c_in, h, w) = padding, x_shape
        dcols = dy_mat @ weight.reshape(c_out, -1)  # (N*Ho*Wo, C_in*kH*kW)
        dx = crop(col2im(dcols, (n, c_in, h + 2 * ph, w + 2 * pw), (kh, kw), stride), padding, (h, w))
    return dx, dweight, dbias


def conv_transpose2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0), output_padding=(0, 0)):
    """A convolution's input gradient, used as a layer: ``y = crop(col2im(x_mat @ W_mat))``.

    x (N, C_in, H, W), weight (C_in, C_out, kH, kW) (PyTorch's layout), bias (C_out,) or None
    -> y (N, C_out, H_out, W_out) with H_out = (H-1)*s - 2P + kH + output_padding,
       cache (x_mat (N*H*W, C_in), x.shape, weight, has bias, stride, padding)

    Each input pixel stamps its value times the kernel onto the (padded) output; the
    ``output_padding`` extra rows and columns at the bottom and right receive no stamp.
    """
    n, c_in, h, w = x.shape
    _, c_out, kh, kw = weight.shape
    ho, wo = conv_transpose_output_hw((h, w), (kh, kw), stride, padding, output_padding)
    x_mat = x.transpose(0, 2, 3, 1).reshape(n * h * w, c_in)  # one row per input pixel
    stamps = x_mat @ weight.reshape(c_in, -1)  # (N*H*W, C_out*kH*kW): each pixel's stamp
    (ph, pw) = padding
    y = crop(col2im(stamps, (n, c_out, ho + 2 * ph, wo + 2 * pw), (kh, kw), stride), padding, (ho, wo))
    if bias is not None:
        y = y + bias[:, None, None]
    return y, (x_mat, x.shape, weight, bias is not None, stride, padding)


def conv_transpose2d_backward(dy, cache, need_input_grad=True):
    """The adjoint of "stamp, add, crop" is "pad, gather": an ordinary convolution of dy.

    dy (N, C_out, H_out, W_out) -> dx (N, C_in, H, W) (None if not need_input_grad),
    dweight (C_in, C_out, kH, kW), dbias (C_out,) or None
    """
    x_mat, x_shape, weight, has_bias, stride, padding = cache
    n, c_in, h, w = x_shape
    _, _, kh, kw = weight.shape
    # (the output_padding rows and columns at the bottom and right got no stamp: left out)
    dyp = pad(dy, padding)[:, :, : (h - 1) * stride[0] + kh, : (w - 1) * stride[1] + kw]
    cols = im2col(dyp, (kh, kw), stride)  # (N*H*W, C_out*kH*kW): the stamp each pixel made
    dweight = (x_mat.T @ cols).reshape(weight.shape)
    dbias = dy.sum(axis=(0, 2, 3)) if has_bias else None
    dx = None
    if need_input_grad:
        dx = (cols @ weight.reshape(c_in, -1).T).reshape(n, h, w, c_in).transpose(0, 3, 1, 2)
    return dx, dweight, dbias


# --------------------------------------------------------------------------- pooling


def _tap_grid(p, q, stride, out_hw):
    """Index of tap (p, q) of every window: the sub-grid rows p, p + s_H, ..., columns q, q + s_W, ..."""
    (sh, sw), (ho, wo) = stride, out_hw
    return (slice(None), slice(None), slice(p, p + sh * ho, sh), slice(q, q + sw * wo, sw))


def maxpool2d_forward(x, kernel, stride):
    """y = the max of each window; the cache records which tap of the window won.

    x (N, C, H, W) -> y (N, C, H_out, W_out), cache (x.shape, winner (N, C, H_out, W_out), kernel, stride)
    winner[n, c, i, j] = p*kW + q for the window's tap (p, q) that holds the max. On a tie
    the first maximal tap in row-major order wins (that is what argmax returns).
    """
    view = windows(x, kernel, stride)  # (N, C, Ho, Wo, kH, kW)
    flat = view.reshape(*view.shape[:4], -1)  # one row of kH*kW numbers per window (a copy)
    winner = flat.argmax(axis=-1)
    y = np.take_along_axis(flat, winner[..., None], axis=-1)[..., 0]
    return y, (x.shape, winner, kernel, stride)


def maxpool2d_backward(dy, cache):
    """Each window's gradient goes to its winner; overlapping windows add.

    dy (N, C, H_out, W_out) -> dx (N, C, H, W)
    """
    x_shape, winner, (kh, kw), stride = cache
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for p in range(kh):
        for q in range(kw):  # every window's tap (p, q) at once; it gets dy where it won
            dx[_tap_grid(p, q, stride, dy.shape[2:])] += dy * (winner == p * kw + q)
    return dx


def avgpool2d_forward(x, kernel, stride):
    """y = the mean of each window.

    x (N, C, H, W) -> y (N, C, H_out, W_out), cache (x.shape, kernel, stride)
    """
    return windows(x, kernel, stride).mean(axis=(4, 5)), (x.shape, kernel, stride)


def avgpool2d_backward(dy, cache):
    """Every element of a window moved the mean by 1/(kH*kW): each gets dy / (kH*kW).

    dy (N, C, H_out, W_out) -> dx (N, C, H, W)
    """
    x_shape, (kh, kw), stride = cache
    dx = np.zeros(x_shape, dtype=dy.dtype)
    share = dy / (kh * kw)
    for p in range(kh):
        for q in range(kw):
            dx[_tap_grid(p, q, stride, dy.shape[2:])] += share
    return dx


# --------------------------------------------------------------------------- dense + softmax


def linear_forward(x, weight, bias):
    """y = x W^T + b.

    x (N, in), weight (out, in), bias (out,) or None -> y (N, out), cache (x, weight, has bias)
    """
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y, (x, weight, bias is not None)


def linear_backward(dy, cache):
    """dy (N, out) -> dx = dy W (N, in), dweight = dy^T x (out, in), dbias = sum_n dy (out,) or None."""
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

    logits (N, K), labels (N,) ints in [0, K)
    -> loss (float), dlogits (N, K) = (softmax(logits) - onehot(labels)) / N
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
# forward returns (y, cache); backward(dy, cache) returns dx.


def relu_forward(x):
    """y = max(x, 0). x (any shape) -> y (x's shape), cache the mask x > 0."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dy, mask):
    """dy (x's shape) -> dx: dy passes where x > 0, is stopped elsewhere (the derivative at
    exactly 0 is taken as 0)."""
    return dy * mask


def leaky_relu_forward(x, slope):
    """y = x where x > 0, else slope * x. x (any shape) -> y (x's shape), cache x."""
    return np.where(x > 0, x, slope * x), x


def leaky_relu_backward(dy, x, slope):
    """dy (x's shape) -> dx = dy where x > 0, else slope * dy."""
    return dy * np.where(x > 0, 1.0, slope).astype(dy.dtype, copy=False)


def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)). x (any shape) -> y (x's shape), cache y."""
    y = sigmoid(x)
    return y, y


def sigmoid_backward(dy, y):
    """dy (y's shape) -> dx = dy * y * (1 - y): the derivative in terms of the output."""
    return dy * y * (1 - y)


def tanh_forward(x):
    """y = tanh(x). x (any shape) -> y (x's shape), cache y."""
    y = np.tanh(x)
    return y, y


def tanh_backward(dy, y):
    """dy (y's shape) -> dx = dy * (1 - y^2)."""
    return dy * (1 - y * y)


def _channel_axes(x):
    """The axes a per-channel statistic sums over, and the shape that broadcasts a (C,) array."""
    return (0, *range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)


def batchnorm_forward(x, gamma, beta, eps, mean=None, var=None):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel (axis 1); the batch's
    mean and biased variance in training (mean, var None), the given ones otherwise.

    x (N, C) or (N, C, H, W), gamma, beta (C,) -> y, mean (C,), var (C,),
    cache (x_hat, gamma, 1/sqrt(var + eps), training)
    """
    axes, shape = _channel_axes(x)
    training = mean is None
    if training:
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
    y = x_hat * gamma.reshape(shape) + beta.reshape(shape)
    return y, mean, var, (x_hat, gamma, inv_std, training)


def batchnorm_backward(dy, cache):
    """dy -> dx, dgamma (C,), dbeta (C,): dbeta = sum dy, dgamma = sum dy * x_hat (over all
    axes but 1), and dx = gamma/sqrt(var + eps) * (dy - (dbeta + x_hat * dgamma) / M) in
    training (M values per channel), gamma/sqrt(var + eps) * dy in evaluation."""
    x_hat, gamma, inv_std, training = cache
    axes, shape = _channel_axes(dy)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    scale = (gamma * inv_std).reshape(shape)
    if not training:
        return dy * scale, dgamma, dbeta
    m = dy.size // dy.shape[1]
    dx = scale * (dy - (dbeta.reshape(shape) + x_hat * dgamma.reshape(shape)) / m)
    return dx, dgamma, dbeta
