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

A contiguous channels-first batch (N, C, H, W) or (N, C, L) (an ``Unflatten`` after a ``Linear``
makes one) goes through as (N, C, H*W) in slices of N, its statistics summed over axes 0 and 2.
Other layouts go to the vectorized tier, whose numbers these are up to float rounding.
"""

from __future__ import annotations

import numpy as np

from .. import vectorized
from .layout import nchw, nhwc
from .threads import for_each_slice, map_slices


def _as_rows(x):
    """``x`` as a batch of rows to slice, a view, and the axes its statistics sum over:

    * (M, C), axes (0,): a channels-last image batch (N, H, W, C) in memory, or (N, C) itself;
    * (N, C, L), axes (0, 2): a channels-first batch (N, C, H, W) or (N, C, L), contiguous
      (an ``Unflatten`` after a ``Linear`` makes one).

    None when neither view exists without a copy.
    """
    if x.ndim == 4 and nhwc(x).flags.c_contiguous:
        return nhwc(x).reshape(-1, x.shape[1]), (0,)
    if x.ndim == 2 and x.flags.c_contiguous:
        return x, (0,)
    if x.ndim in (3, 4) and x.flags.c_contiguous:
        return x.reshape(x.shape[0], x.shape[1], -1), (0, 2)
    return None, None


def _shaped_like(rows, x):
    """A result of :func:`_as_rows`'s shape back in the shape (and the layout) of ``x``."""
    if x.ndim == 4 and rows.ndim == 2:
        n, c, h, w = x.shape
        return nchw(rows.reshape(n, h, w, c))
    return rows.reshape(x.shape)


def batchnorm_forward(x, gamma, beta, eps, mean=None, var=None):
    """x (N, C) or (N, C, H, W), gamma, beta (C,) -> y (x's shape and layout), mean (C,), var (C,),
    cache (x_hat, gamma, 1/sqrt(var + eps), training): :func:`cnn_lib.kernels.vectorized.batchnorm_forward`
    on a channels-last batch (the batch's statistics when ``mean`` and ``var`` are None)."""
    rows, axes = _as_rows(x)
    if rows is None:
        return vectorized.batchnorm_forward(x, gamma, beta, eps, mean, var)
    c = x.shape[1]
    m = x.size // c  # values per channel
    shape = (c,) if rows.ndim == 2 else (c, 1)  # a per-channel array, broadcast against rows
    per_row = rows[0].size * x.itemsize
    training = mean is None
    if training:
        def statistics(part):  # (its values per channel, its mean, its sum of squared deviations)
            block = rows[part]
            block_mean = block.mean(axis=axes)
            deviations = block - block_mean.reshape(shape)
            deviations *= deviations
            return block.size // c, block_mean, deviations.sum(axis=axes)

        parts = map_slices(statistics, len(rows), 2 * per_row)
        means = np.array([share[1] for share in parts], dtype=np.float64)
        counts = np.array([share[0] for share in parts], dtype=np.float64)[:, None]
        mean64 = (counts * means).sum(axis=0) / m
        squares = sum(share[2].astype(np.float64) for share in parts)
        squares = squares + (counts * (means - mean64) ** 2).sum(axis=0)  # the slices' means apart
        mean, var = mean64.astype(x.dtype), (squares / m).astype(x.dtype)
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    x_hat = np.empty_like(rows)
    y = np.empty_like(rows)
    mean_b, inv_std_b, gamma_b, beta_b = (a.reshape(shape) for a in (mean, inv_std, gamma, beta))

    def normalise(part):
        np.subtract(rows[part], mean_b, out=x_hat[part])
        x_hat[part] *= inv_std_b
        np.multiply(x_hat[part], gamma_b, out=y[part])
        y[part] += beta_b

    for_each_slice(normalise, len(rows), 3 * per_row)
    return _shaped_like(y, x), mean, var, (_shaped_like(x_hat, x), gamma, inv_std, training)


def batchnorm_backward(dy, cache):
    """dy -> dx (dy's shape, channels-last), dgamma (C,), dbeta (C,):
    :func:`cnn_lib.kernels.vectorized.batchnorm_backward` on a channels-last batch."""
    x_hat, gamma, inv_std, training = cache
    hat_rows, axes = _as_rows(x_hat)
    if hat_rows is None:
        return vectorized.batchnorm_backward(dy, cache)
    c = dy.shape[1]
    dy_rows, dy_axes = _as_rows(dy)
    if dy_axes != axes:  # dy in another layout than x_hat: one copy into x_hat's
        dy_rows = np.empty_like(hat_rows)
        _shaped_like(dy_rows, x_hat)[...] = dy
    m = dy.size // c  # values per channel
    shape = (c,) if hat_rows.ndim == 2 else (c, 1)
    per_row = hat_rows[0].size * dy.itemsize
    def sums(part):  # (its share of dbeta, its share of dgamma)
        g = dy_rows[part]
        return g.sum(axis=axes), (g * hat_rows[part]).sum(axis=axes)

    parts = map_slices(sums, len(hat_rows), 2 * per_row)
    dbeta = sum(share[0] for share in parts)
    dgamma = sum(share[1] for share in parts)
    scale = (gamma * inv_std).reshape(shape)
    dx = np.empty_like(hat_rows)
    if training:
        shift, slope = (dbeta / m).reshape(shape), (dgamma / m).reshape(shape)

        def gradient(part):
            out = dx[part]
            np.multiply(hat_rows[part], slope, out=out)
            out += shift
            np.subtract(dy_rows[part], out, out=out)
            out *= scale
    else:
        def gradient(part):
            np.multiply(dy_rows[part], scale, out=dx[part])

    for_each_slice(gradient, len(hat_rows), 3 * per_row)
    return _shaped_like(dx, x_hat), dgamma, dbeta
