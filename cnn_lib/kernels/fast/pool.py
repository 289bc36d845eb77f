"""Pooling, fast: on the kH*kW strided sub-grids of a channels-last input.

Each kernel tap (i, j) of every window at once is one strided sub-grid of the input, so max
and average pooling become elementwise operations between kH*kW whole arrays. Max pooling
keeps, per tap, a boolean mask of the inputs that won; its backward is one multiply per tap.
The batch goes through in slices on several threads (:func:`.threads.for_each_slice`).
"""

from __future__ import annotations

import numpy as np

from ..shapes import conv_output_hw
from .layout import nchw, nhwc, tap_window, taps
from .threads import for_each_slice


def pool_dx(x_shape, kernel, stride, out_hw, dtype):
    """An NHWC array for a pooling layer's dx: uninitialised when the windows tile the input
    exactly (every element will be written), zeros otherwise."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    n, c, h, w = x_shape
    tiles = (sh, sw) == (kh, kw) and (h, w) == (ho * sh, wo * sw)
    return (np.empty if tiles else np.zeros)((n, h, w, c), dtype=dtype)


def maxpool2d_forward(x, kernel, stride):
    """Max pooling without padding.

    x:       (N, C, H, W)
    returns: y (N, C, H_out, W_out) and a cache holding, per window and tap, whether that tap
             receives the window's gradient.
    Tie rule: the *first* maximal element in row-major window order wins (like np.argmax),
    so exactly one input per window receives that window's gradient.
    """
    n, c = x.shape[:2]
    ho, wo = conv_output_hw(x.shape[2:], kernel, stride)
    xh = nhwc(x)
    y = np.empty((n, ho, wo, c), dtype=x.dtype)
    wins = np.empty((kernel[0] * kernel[1], n, ho, wo, c), dtype=bool)  # wins[t]: tap t gets the gradient

    def work(part):
        maxpool_slice(xh[part], y[part], wins[:, part], kernel, stride)

    # bytes per image: its input, its output, the copies of the kH*kW sub-grids and the winners
    for_each_slice(work, n, x[0].nbytes + (1 + len(wins)) * y[0].nbytes + wins[:, 0].nbytes)
    return nchw(y), (x.shape, wins, kernel, stride)


def maxpool_slice(xh, y, wins, kernel, stride):
    """Max-pool some images: xh (n, H, W, C) channels-last in; fills y (n, H_out, W_out, C)
    and wins (kH*kW, n, H_out, W_out, C)."""
    windows = [tap_window(i, j, stride, y.shape[1:3]) for i, j in taps(*kernel)]
    # Copy each tap's strided sub-grid into a contiguous slab, once (a strided pass moves only
    # C numbers at a time); everything after that runs on contiguous slabs.
    slabs = np.empty((len(windows), *y.shape), dtype=y.dtype)
    for t, window in enumerate(windows):
        slabs[t] = xh[window]
    np.copyto(y, slabs[0])
    for slab in slabs[1:]:
        np.maximum(y, slab, out=y)  # the max over the kH*kW sub-grids
    taken = None
    for t, slab in enumerate(slabs):
        hit = np.equal(slab, y, out=wins[t])
        if taken is None:
            taken = hit.copy()
        else:
            hit &= ~taken  # an earlier tap already equals the max: it wins the tie
            taken |= hit


def maxpool2d_backward(dy, cache):
    """dy: (N, C, H_out, W_out) -> dx (N, C, H, W); each window's gradient goes to its winner."""
    x_shape, wins, kernel, stride = cache
    dyh = nhwc(dy)
    dxh = pool_dx(x_shape, kernel, stride, dy.shape[2:], dy.dtype)

    def work(part):
        maxpool_backward_slice(dyh[part], wins[:, part], dxh[part], kernel, stride)

    for_each_slice(work, x_shape[0], dxh[0].nbytes + dyh[0].nbytes + wins[:, 0].nbytes)
    return nchw(dxh)


def maxpool_backward_slice(dyh, wins, dxh, kernel, stride):
    """Send some images' dy (n, H_out, W_out, C) to the winners: into dxh (n, H, W, C).

    ``wins`` stays boolean (a ReLU keeps its mask as 0.0/1.0 floats to multiply faster, see
    :func:`cnn_lib.kernels.fast.dense.relu_forward`): it holds kH*kW masks, so one byte a
    number instead of four or eight matters more here, and each mask is multiplied only once.
    """
    (kh, kw), (sh, sw) = kernel, stride
    overlap = sh < kh or sw < kw
    for t, (i, j) in enumerate(taps(kh, kw)):
        window = tap_window(i, j, stride, dyh.shape[1:3])
        if overlap:  # windows share inputs: add
            dxh[window] += dyh * wins[t]
        else:  # each input in at most one window: write
            np.multiply(dyh, wins[t], out=dxh[window])


def avgpool2d_forward(x, kernel, stride):
    """Average pooling without padding.

    x (N, C, H, W) -> y (N, C, H_out, W_out), channels-last in memory, cache (x.shape, kernel, stride)
    """
    ho, wo = conv_output_hw(x.shape[2:], kernel, stride)
    xh = nhwc(x)
    y = np.zeros((x.shape[0], ho, wo, x.shape[1]), dtype=x.dtype)
    for i, j in taps(*kernel):
        y += xh[tap_window(i, j, stride, (ho, wo))]
    y /= kernel[0] * kernel[1]
    return nchw(y), (x.shape, kernel, stride)


def avgpool2d_backward(dy, cache):
    """dy: (N, C, H_out, W_out) -> dx (N, C, H, W); each window spreads dy evenly."""
    x_shape, kernel, stride = cache
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = dy.shape[2:]
    share = nhwc(dy) / (kh * kw)
    dxh = pool_dx(x_shape, kernel, stride, (ho, wo), dy.dtype)
    for i, j in taps(kh, kw):
        if sh < kh or sw < kw:
            dxh[tap_window(i, j, stride, (ho, wo))] += share
        else:
            dxh[tap_window(i, j, stride, (ho, wo))] = share
    return nchw(dxh)


# --------------------------------------------------------------------------- dense + softmax
