"""Batch normalisation, fast: the vectorized tier's formulas on a channels-last batch, on the threads.

A channels-last image batch (N, H, W, C) in memory is an (N*H*W, C) matrix whose columns are
the channels, so every per-channel statistic is a sum down the columns of a contiguous matrix,
and every per-channel scale a multiplication by a row: no transposed copies. The rows go
through in slices on cnn_lib's threads (:func:`.threads.for_each_slice`), twice per pass: once
for each slice's share of the statistics, once to apply them.

* **Forward** (training): each slice's mean and sum of squared deviations from *its own* mean,
  combined afterwards as Chan, Golub and LeVeque's parallel variance does (the sum of squares
  of the whole is the slices' sums plus ``n_s * (mean_s - mean)**2`` each), so no slice
  subtracts two large, nearly equal numbers; then ``x_hat`` and ``y`` slice by slice.
* **Backward**: each slice's share of ``dbeta = sum dy`` and ``dgamma = sum dy * x_hat``, then
  ``dx = gamma/sqrt(var + eps) * (dy - (dbeta + x_hat * dgamma) / M)`` slice by slice.

Inputs that are not channels-last in memory (and the (N, C, L) inputs of BatchNorm1d) go to the
vectorized tier, whose numbers these are up to float rounding.
"""

from __future__ import annotations

import numpy as np

from .. import vectorized
from .layout import nchw, nhwc
from .threads import for_each_slice


def _as_rows(x):
    """``x`` as an (M, C) matrix of its channels, a view, or None when that would need a copy."""
    if x.ndim == 2:
        rows = x
    elif x.ndim == 4:
        rows = nhwc(x)
        if not rows.flags.c_contiguous:
            return None
        rows = rows.reshape(-1, x.shape[1])
    else:
        return None
    return rows if rows.flags.c_contiguous else None


def _shaped_like(rows, x):
    """An (M, C) result back in the shape (and the channels-last layout) of ``x``."""
    if x.ndim == 2:
        return rows
    n, c, h, w = x.shape
    return nchw(rows.reshape(n, h, w, c))


def batchnorm_forward(x, gamma, beta, eps, mean=None, var=None):
    """x (N, C) or (N, C, H, W), gamma, beta (C,) -> y (x's shape and layout), mean (C,), var (C,),
    cache (x_hat, gamma, 1/sqrt(var + eps), training): :func:`cnn_lib.kernels.vectorized.batchnorm_forward`
    on a channels-last batch (the batch's statistics when ``mean`` and ``var`` are None)."""
    rows = _as_rows(x)
    if rows is None:
        return vectorized.batchnorm_forward(x, gamma, beta, eps, mean, var)
    m, c = rows.shape
    training = mean is None
    per_row = c * x.itemsize
    if training:
        shares = {}  # slice start -> (rows, its mean, its sum of squared deviations from it)

        def statistics(part):
            block = rows[part]
            block_mean = block.mean(axis=0)
            deviations = block - block_mean
            shares[part.start] = (len(block), block_mean, np.einsum("ij,ij->j", deviations, deviations))

        for_each_slice(statistics, m, 2 * per_row)
        parts = [shares[start] for start in sorted(shares)]  # a fixed order: same sums every run
        means = np.array([share[1] for share in parts], dtype=np.float64)
        counts = np.array([share[0] for share in parts], dtype=np.float64)[:, None]
        mean64 = (counts * means).sum(axis=0) / m
        squares = sum(share[2].astype(np.float64) for share in parts) + (counts * (means - mean64) ** 2).sum(axis=0)
        mean, var = mean64.astype(x.dtype), (squares / m).astype(x.dtype)
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    x_hat = np.empty_like(rows)
    y = np.empty_like(rows)

    def normalise(part):
        np.subtract(rows[part], mean, out=x_hat[part])
        x_hat[part] *= inv_std
        np.multiply(x_hat[part], gamma, out=y[part])
        y[part] += beta

    for_each_slice(normalise, m, 3 * per_row)
    return _shaped_like(y, x), mean, var, (_shaped_like(x_hat, x), gamma, inv_std, training)


def batchnorm_backward(dy, cache):
    """dy -> dx (dy's shape, channels-last), dgamma (C,), dbeta (C,):
    :func:`cnn_lib.kernels.vectorized.batchnorm_backward` on a channels-last batch."""
    x_hat, gamma, inv_std, training = cache
    hat_rows = _as_rows(x_hat)
    if hat_rows is None:
        return vectorized.batchnorm_backward(dy, cache)
    c = dy.shape[1]
    dy_rows = _as_rows(dy)
    if dy_rows is None:  # not channels-last: one copy that makes it so
        dy_rows = np.ascontiguousarray(nhwc(dy) if dy.ndim == 4 else dy).reshape(-1, c)
    m = len(dy_rows)
    per_row = c * dy.itemsize
    shares = {}  # slice start -> (its share of dbeta, its share of dgamma)

    def sums(part):
        g = dy_rows[part]
        shares[part.start] = (g.sum(axis=0), np.einsum("ij,ij->j", g, hat_rows[part]))

    for_each_slice(sums, m, 2 * per_row)
    parts = [shares[start] for start in sorted(shares)]
    dbeta = sum(share[0] for share in parts)
    dgamma = sum(share[1] for share in parts)
    scale = gamma * inv_std
    dx = np.empty_like(dy_rows)
    if training:
        shift, slope = dbeta / m, dgamma / m

        def gradient(part):
            out = dx[part]
            np.multiply(hat_rows[part], slope, out=out)
            out += shift
            np.subtract(dy_rows[part], out, out=out)
            out *= scale
    else:
        def gradient(part):
            np.multiply(dy_rows[part], scale, out=dx[part])

    for_each_slice(gradient, m, 3 * per_row)
    return _shaped_like(dx, dy), dgamma, dbeta
