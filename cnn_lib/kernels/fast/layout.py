"""Memory layout helpers shared by the fast kernels.

Arrays keep PyTorch's *shape* ``(N, C, H, W)``, but the images the fast kernels return are
stored channels-last, ``(N, H, W, C)`` in memory, seen through ``.transpose(0, 3, 1, 2)`` (a
view, no copy). The next kernel takes ``x.transpose(0, 2, 3, 1)`` and gets a contiguous NHWC
array back for free, so every copy and every shifted add moves long contiguous runs (a
pixel's channels, or a whole image row of them) instead of single numbers.
"""

from __future__ import annotations

import numpy as np


def taps(kh: int, kw: int):
    """Kernel taps ``(i, j)`` in row-major order (the order the tie rule refers to)."""
    return [(i, j) for i in range(kh) for j in range(kw)]


def nhwc(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C), a view: contiguous when ``x`` is channels-last in memory."""
    return x.transpose(0, 2, 3, 1)


def nchw(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, C, H, W), a view: what every kernel hands back."""
    return x.transpose(0, 3, 1, 2)


def tap_window(i: int, j: int, stride, out_hw):
    """Index of tap (i, j)'s sub-grid in an NHWC array: rows i, i+sh, ..., columns j, j+sw, ..."""
    (sh, sw), (ho, wo) = stride, out_hw
    return (slice(None), slice(i, i + sh * ho, sh), slice(j, j + sw * wo, sw), slice(None))
