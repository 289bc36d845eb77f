"""Reference kernels: plain loops that read like the derivations in the lessons.

Each function has a twin in :mod:`cnn_lib.kernels.vectorized` and :mod:`cnn_lib.kernels.fast`
(same calling convention, see :mod:`cnn_lib.kernels`; same results to 1e-10 in float64). They
are slow on purpose: one Python iteration per output number, so every line can be matched
with a line of the math. Use them to learn and to test; train with the fast ones.

Notation used in the comments: ``x`` is the input, ``y`` the output, ``dy = dL/dy`` the
gradient arriving from the layer above, ``dx = dL/dx`` the one we send below.
"""

from __future__ import annotations

import numpy as np

from .shapes import conv_output_hw, conv_transpose_output_hw


def _pad(x, ph, pw):
    """Zero-pad the two spatial axes of (N, C, H, W)."""
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


# --------------------------------------------------------------------------- convolution


def conv2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0)):
    """y[n, co, i, j] = b[co] + sum_{ci, p, q} W[co, ci, p, q] * xpad[n, ci, i*sh + p, j*sw + q]

    x (N, C_in, H, W), weight (C_out, C_in, kH, kW), bias (C_out,) or None
    -> y (N, C_out, H_out, W_out), cache (x, weight, has bias, stride, padding)
    """
    n_batch, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    sh, sw = stride
    ph, pw = padding
    xp = _pad(x, ph, pw)
    ho, wo = conv_output_hw((h, w), (kh, kw), stride, padding)
    y = np.zeros((n_batch, c_out, ho, wo), dtype=x.dtype)
    for n in range(n_batch):
        for co in range(c_out):
            for i in range(ho):
                for j in range(wo):
                    region = xp[n, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
                    y[n, co, i, j] = np.sum(region * weight[co])
                    if bias is not None:
                        y[n, co, i, j] += bias[co]
    return y, (x, weight, bias is not None, stride, padding)


def conv2d_backward(dy, cache, need_input_grad=True):
    """Every output y[n, co, i, j] was computed from one input region and the kernel W[co],
    so its gradient dy[n, co, i, j] flows back along exactly those products:

        dW[co]          += dy[n, co, i, j] * region        (the region the output read)
        dxpad[n, region] += dy[n, co, i, j] * W[co]         (each input it read)
        db[co]          += dy[n, co, i, j]

    dy (N, C_out, H_out, W_out) -> dx (N, C_in, H, W), dweight, dbias
    (dx is computed in any case, and None is returned in its place if not need_input_grad)
    """
    x, weight, has_bias, stride, padding = cache
    n_batch, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    sh, sw = stride
    ph, pw = padding
    xp = _pad(x, ph, pw)
    dxp = np.zeros_like(xp, dtype=dy.dtype)
    dweight = np.zeros(weight.shape, dtype=dy.dtype)
    dbias = np.zeros(c_out, dtype=dy.dtype)
    _, _, ho, wo = dy.shape
    for n in range(n_batch):
        for co in range(c_out):
            for i in range(ho):
                for j in range(wo):
                    rows = slice(i * sh, i * sh + kh)
                    cols = slice(j * sw, j * sw + kw)
                    dweight[co] += dy[n, co, i, j] * xp[n, :, rows, cols]
                    dxp[n, :, rows, cols] += dy[n, co, i, j] * weight[co]
                    dbias[co] += dy[n, co, i, j]
    dx = dxp[:, :, ph : ph + h, pw : pw + w]
    return (dx if need_input_grad else None), dweight, (dbias if has_bias else None)


def conv_transpose2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0), output_padding=(0, 0)):
    """Each input pixel stamps a copy of the kernel, scaled by its value, onto the output:

        ypad[n, co, i*sh + p, j*sw + q] += x[n, ci, i, j] * W[ci, co, p, q]

    then the padding is cropped away. x (N, C_in, H, W), weight (C_in, C_out, kH, kW)
    -> y (N, C_out, (H-1)*sh - 2*ph + kH + output_padding, ...): the output_padding extra rows
    and columns at the bottom and right receive no stamp (only the bias);
       cache (x, weight, has bias, stride, padding)
    """
    n_batch, c_in, h, w = x.shape
    _, c_out, kh, kw = weight.shape
    sh, sw = stride
    ph, pw = padding
    ho, wo = conv_transpose_output_hw((h, w), (kh, kw), stride, padding, output_padding)
    yp = np.zeros((n_batch, c_out, ho + 2 * ph, wo + 2 * pw), dtype=x.dtype)
    for n in range(n_batch):
        for ci in range(c_in):
            for i in range(h):
                for j in range(w):
                    yp[n, :, i * sh : i * sh + kh, j * sw : j * sw + kw] += x[n, ci, i, j] * weight[ci]
    y = yp[:, :, ph : ph + ho, pw : pw + wo].copy()
    if bias is not None:
        y += bias[None, :, None, None]
    return y, (x, weight, bias is not None, stride, padding)


def conv_transpose2d_backward(dy, cache, need_input_grad=True):
    """Reverse the stamping: each input pixel collects dy over the patch it stamped.

        dx[n, ci, i, j]   = sum_{co, p, q} dypad[n, co, i*sh + p, j*sw + q] * W[ci, co, p, q]
        dW[ci, co, p, q] += x[n, ci, i, j] * dypad[n, co, i*sh + p, j*sw + q]

    dy (N, C_out, H_out, W_out) -> dx (N, C_in, H, W), dweight (C_in, C_out, kH, kW), dbias
    """
    x, weight, has_bias, stride, padding = cache
    n_batch, c_in, h, w = x.shape
    _, c_out, kh, kw = weight.shape
    sh, sw = stride
    ph, pw = padding
    dyp = _pad(dy, ph, pw)
    dx = np.zeros(x.shape, dtype=dy.dtype)
    dweight = np.zeros(weight.shape, dtype=dy.dtype)
    for n in range(n_batch):
        for ci in range(c_in):
            for i in range(h):
                for j in range(w):
                    patch = dyp[n, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
                    dx[n, ci, i, j] = np.sum(patch * weight[ci])
                    dweight[ci] += x[n, ci, i, j] * patch
    dbias = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return (dx if need_input_grad else None), dweight, dbias


# --------------------------------------------------------------------------- pooling


def _windows(x_shape, kernel, stride):
    """Yield (i, j, rows, cols) for every pooling window of an (N, C, H, W) input."""
    kh, kw = kernel
    sh, sw = stride
    ho, wo = conv_output_hw(x_shape[2:], kernel, stride)
    for i in range(ho):
        for j in range(wo):
            yield i, j, slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)


def _pooled_shape(x_shape, kernel, stride):
    return (*x_shape[:2], *conv_output_hw(x_shape[2:], kernel, stride))


def maxpool2d_forward(x, kernel, stride):
    """y[n, c, i, j] = max of window (i, j).

    x (N, C, H, W) -> y (N, C, H_out, W_out), cache (x, kernel, stride)
    """
    y = np.zeros(_pooled_shape(x.shape, kernel, stride), dtype=x.dtype)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i, j, rows, cols in _windows(x.shape, kernel, stride):
                y[n, c, i, j] = np.max(x[n, c, rows, cols])
    return y, (x, kernel, stride)


def maxpool2d_backward(dy, cache):
    """Only the element that was the max moved y, so only it gets dy. On a tie the first
    maximal element in row-major order (np.argmax's choice) takes the whole gradient;
    windows that overlap add their contributions.

    dy (N, C, H_out, W_out) -> dx (N, C, H, W)
    """
    x, kernel, stride = cache
    dx = np.zeros(x.shape, dtype=dy.dtype)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i, j, rows, cols in _windows(x.shape, kernel, stride):
                window = x[n, c, rows, cols]
                p, q = np.unravel_index(np.argmax(window), window.shape)
                dx[n, c, rows.start + p, cols.start + q] += dy[n, c, i, j]
    return dx


def avgpool2d_forward(x, kernel, stride):
    """y[n, c, i, j] = mean of window (i, j).

    x (N, C, H, W) -> y (N, C, H_out, W_out), cache (x.shape, kernel, stride)
    """
    y = np.zeros(_pooled_shape(x.shape, kernel, stride), dtype=x.dtype)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i, j, rows, cols in _windows(x.shape, kernel, stride):
                y[n, c, i, j] = np.mean(x[n, c, rows, cols])
    return y, (x.shape, kernel, stride)


def avgpool2d_backward(dy, cache):
    """Every element of a window moved the mean by 1/(kH*kW): each gets dy / (kH*kW).

    dy (N, C, H_out, W_out) -> dx (N, C, H, W)
    """
    x_shape, kernel, stride = cache
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for n in range(x_shape[0]):
        for c in range(x_shape[1]):
            for i, j, rows, cols in _windows(x_shape, kernel, stride):
                dx[n, c, rows, cols] += dy[n, c, i, j] / (kernel[0] * kernel[1])
    return dx


# --------------------------------------------------------------------------- dense + softmax


def linear_forward(x, weight, bias):
    """y[n, o] = b[o] + sum_i x[n, i] * W[o, i].

    x (N, in), weight (out, in), bias (out,) or None -> y (N, out), cache (x, weight, has bias)
    """
    n_batch, n_in = x.shape
    n_out = weight.shape[0]
    y = np.zeros((n_batch, n_out), dtype=x.dtype)
    for n in range(n_batch):
        for o in range(n_out):
            total = bias[o] if bias is not None else 0.0
            for i in range(n_in):
                total += x[n, i] * weight[o, i]
            y[n, o] = total
    return y, (x, weight, bias is not None)


def linear_backward(dy, cache):
    """dx[n, i] = sum_o dy[n, o] W[o, i];  dW[o, i] = sum_n dy[n, o] x[n, i];
    db[o] = sum_n dy[n, o].

    dy (N, out) -> dx (N, in), dweight (out, in), dbias (out,) or None
    """
    x, weight, has_bias = cache
    n_batch, n_in = x.shape
    n_out = weight.shape[0]
    dx = np.zeros(x.shape, dtype=dy.dtype)
    dweight = np.zeros(weight.shape, dtype=dy.dtype)
    dbias = np.zeros(n_out, dtype=dy.dtype)
    for n in range(n_batch):
        for o in range(n_out):
            dbias[o] += dy[n, o]
            for i in range(n_in):
                dx[n, i] += dy[n, o] * weight[o, i]
                dweight[o, i] += dy[n, o] * x[n, i]
    return dx, dweight, (dbias if has_bias else None)


def softmax_cross_entropy(logits, labels):
    """Per example: p = softmax(z), loss = -log p[label], dz = p - onehot(label); then the mean.

    logits (N, K), labels (N,) -> loss (float), dlogits (N, K)
    """
    n_batch, n_classes = logits.shape
    loss = 0.0
    dlogits = np.zeros(logits.shape, dtype=logits.dtype)
    for n in range(n_batch):
        m = max(logits[n])  # subtracting the max leaves softmax unchanged and keeps exp finite
        exps = [np.exp(logits[n, c] - m) for c in range(n_classes)]
        total = sum(exps)
        loss += -(logits[n, labels[n]] - m - np.log(total))
        for c in range(n_classes):
            dlogits[n, c] = exps[c] / total - (1.0 if c == labels[n] else 0.0)
    return float(loss / n_batch), dlogits / n_batch


# --------------------------------------------------------------------------- activations


def _elementwise(x, f):
    out = np.empty_like(x)
    for index in np.ndindex(x.shape):
        out[index] = f(x[index])
    return out


def relu_forward(x):
    """y = max(x, 0). x (any shape) -> y (x's shape), cache x."""
    return _elementwise(x, lambda v: v if v > 0 else 0.0), x


def relu_backward(dy, x):
    """dy (x's shape) -> dx: dy passes where x > 0, is stopped where x <= 0 (we take the
    derivative at 0 to be 0)."""
    return dy * _elementwise(x, lambda v: 1.0 if v > 0 else 0.0)


def leaky_relu_forward(x, slope):
    """y = x if x > 0 else slope * x. x (any shape) -> y (x's shape), cache x."""
    return _elementwise(x, lambda v: v if v > 0 else slope * v), x


def leaky_relu_backward(dy, x, slope):
    """dy (x's shape) -> dx = dy where x > 0, slope * dy elsewhere."""
    return dy * _elementwise(x, lambda v: 1.0 if v > 0 else slope)


def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)), written so that exp never overflows. x -> y (x's shape), cache y."""
    y = _elementwise(x, lambda v: 1 / (1 + np.exp(-v)) if v >= 0 else np.exp(v) / (1 + np.exp(v)))
    return y, y


def sigmoid_backward(dy, y):
    """dy -> dx = dy * y * (1 - y): d sigmoid / dx = sigmoid * (1 - sigmoid), in terms of
    the cached output y."""
    return dy * _elementwise(y, lambda s: s * (1 - s))


def tanh_forward(x):
    """y = tanh(x). x (any shape) -> y (x's shape), cache y."""
    y = _elementwise(x, np.tanh)
    return y, y


def tanh_backward(dy, y):
    """dy -> dx = dy * (1 - y^2): d tanh / dx = 1 - tanh^2."""
    return dy * _elementwise(y, lambda t: 1 - t * t)


def batchnorm_forward(x, gamma, beta, eps, mean=None, var=None):
    """Batch normalisation of each channel (axis 1) over every other axis:

        x_hat = (x - mean_c) / sqrt(var_c + eps),   y = gamma_c * x_hat + beta_c

    x (N, C) or (N, C, H, W), gamma, beta (C,). Training (mean, var None): mean_c and var_c
    are the channel's mean and *biased* variance over its M = N*H*W values in this batch.
    Evaluation: the given (C,) mean and var (the running statistics) are used instead.
    -> y (x's shape), mean (C,), var (C,), cache (x_hat, gamma, 1/sqrt(var + eps), training)
    """
    n_channels = x.shape[1]
    training = mean is None
    if training:
        mean, var = np.zeros(n_channels, x.dtype), np.zeros(n_channels, x.dtype)
    y, x_hat = np.zeros_like(x), np.zeros_like(x)
    inv_std = np.zeros(n_channels, x.dtype)
    for c in range(n_channels):
        values = x[:, c]                                # (N,) or (N, H, W): the channel's M values
        if training:
            m = values.size
            mean[c] = np.sum(values) / m
            var[c] = np.sum((values - mean[c]) ** 2) / m
        inv_std[c] = 1.0 / np.sqrt(var[c] + eps)
        x_hat[:, c] = (values - mean[c]) * inv_std[c]
        y[:, c] = gamma[c] * x_hat[:, c] + beta[c]
    return y, mean, var, (x_hat, gamma, inv_std, training)


def batchnorm_backward(dy, cache):
    """dy (x's shape) -> dx, dgamma (C,), dbeta (C,); per channel, over its M values:

        dbeta_c  = sum dy,   dgamma_c = sum dy * x_hat
        training:   dx = gamma_c / sqrt(var_c + eps) * (dy - (dbeta_c + x_hat * dgamma_c) / M)
        evaluation: dx = gamma_c / sqrt(var_c + eps) * dy      (mean and var are constants)

    In training the batch's mean and variance depend on every x, and the two subtracted
    terms are their share of the gradient (lesson 10 derives them).
    """
    x_hat, gamma, inv_std, training = cache
    n_channels = dy.shape[1]
    dx = np.zeros_like(dy)
    dgamma, dbeta = np.zeros(n_channels, dy.dtype), np.zeros(n_channels, dy.dtype)
    for c in range(n_channels):
        g, xh = dy[:, c], x_hat[:, c]
        dbeta[c] = np.sum(g)
        dgamma[c] = np.sum(g * xh)
        if training:
            dx[:, c] = gamma[c] * inv_std[c] * (g - (dbeta[c] + xh * dgamma[c]) / g.size)
        else:
            dx[:, c] = gamma[c] * inv_std[c] * g
    return dx, dgamma, dbeta
