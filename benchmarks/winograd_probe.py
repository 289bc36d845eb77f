"""A probe, not a kernel: would a Winograd (Toom-Cook) convolution speed up the DCGAN's big layer?

The discriminator's second convolution (64 -> 128 channels, kernel 4, stride 2, padding 1,
14x14 -> 7x7) and the generator's first transposed convolution (its adjoint) are three
quarters of cnn_lib's DCGAN step (``bench_gan.py``). Their im2col products already run near
OpenBLAS's peak, so the only way left to make them faster is to multiply less. This script
builds the fast-multiplication route and measures it against the fast tier:

1. **Polyphase split.** With stride 2, the kernel's taps at even and odd offsets read
   different pixels. Splitting the padded input into its 4 phases (even/odd rows x columns)
   turns the layer into a *stride-1, 2x2* convolution of an 8x8 input with 4*C channels.
2. **Toom-Cook in 1-D.** ``m`` outputs of a 2-tap correlation, ``y_i = d_i g_0 + d_{i+1} g_1``,
   need 2m multiplications directly. Evaluating polynomials at ``t + 1`` points (0, 1, -1,
   1/2, ..., infinity) computes a tile of ``t`` outputs with ``t + 1``:
   ``y = AT @ ((G @ g) * (BT @ d))`` (Lavin and Gray, *Fast Algorithms for Convolutional Neural
   Networks*, 2016). Seven outputs as tiles of 4 and 3: 9 multiplications instead of 14.
3. **Nested in 2-D**, the 81 products of the transformed tiles become 81 matrix products
   ``(N, 4C) @ (4C, C_out)``, one per point pair: 2.42x fewer multiply-adds than im2col's.
   Backward is the exact adjoint of the same bilinear map: dL/dW and dL/dx are products in the
   transformed domain too, with the transposed transforms around them.

Run from the repository root (about 20 s; one thread, as each of cnn_lib's threads would):

    python benchmarks/winograd_probe.py            # batch 64, tiles of at most 4
    python benchmarks/winograd_probe.py --tile 7   # one tile of 7: 3.06x fewer, less exact

What it measured is in benchmarks/RUNS.md ("A Winograd probe").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

if __name__ == "__main__":
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before NumPy loads: one thread, like one slice's
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from cnn_lib.kernels import fast  # noqa: E402
from cnn_lib.kernels.fast.layout import nchw, nhwc  # noqa: E402

#: Evaluation points (infinity is added) for a tile of t outputs of a 2-tap correlation.
POINTS = {1: [0], 2: [0, 1], 3: [0, 1, -1], 4: [0, 1, -1, Fraction(1, 2)],
          5: [0, 1, -1, 2, Fraction(1, 2)], 6: [0, 1, -1, 2, -2, Fraction(1, 2)],
          7: [0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)]}


def _inverse(rows):
    """Exact inverse of a small square matrix of Fractions (Gauss-Jordan)."""
    n = len(rows)
    a = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(rows)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if a[r][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        a[col] = [v / a[col][col] for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0:
                a[r] = [v - a[r][col] * p for v, p in zip(a[r], a[col])]
    return [row[n:] for row in a]


def toom_cook(t, taps=2):
    """(AT, G, BT) with ``y = AT @ ((G @ g) * (BT @ d))`` for t outputs of a ``taps``-tap correlation.

    Linear convolution c = g * h of polynomials is ``Va^-1 ((Vg g) * (Vh h))`` (evaluate, multiply,
    interpolate). Correlation is its transpose in h, so AT = Vh^T, G = Vg, BT = Va^-T.
    """
    alpha = t + taps - 1
    points = [Fraction(p) for p in POINTS[t]]

    def vandermonde(width):  # one row per point, then infinity (the leading coefficient)
        infinity = [Fraction(0)] * (width - 1) + [Fraction(1)]
        return [[p ** k for k in range(width)] for p in points] + [infinity]

    v_h, v_g, v_a = vandermonde(t), vandermonde(taps), vandermonde(alpha)
    va_inv = _inverse(v_a)
    at = np.array([[float(v_h[u][i]) for u in range(alpha)] for i in range(t)])
    g = np.array([[float(v) for v in row] for row in v_g])
    bt = np.array([[float(va_inv[j][u]) for j in range(alpha)] for u in range(alpha)])
    return at, g, bt


def tiled(m, max_tile, taps=2):
    """The 1-D matrices for m outputs as tiles of at most ``max_tile``, block-diagonal."""
    sizes = [max_tile] * (m // max_tile) + ([m % max_tile] if m % max_tile else [])
    total = sum(s + taps - 1 for s in sizes)
    at, g, bt = np.zeros((m, total)), np.zeros((total, taps)), np.zeros((total, m + taps - 1))
    out = row = 0
    for size in sizes:
        a, gg, b = toom_cook(size, taps)
        width = size + taps - 1
        at[out:out + size, row:row + width] = a
        g[row:row + width] = gg
        bt[row:row + width, out:out + width] = b
        out, row = out + size, row + width
    return at, g, bt


class Winograd:
    """Kernel 4, stride 2, padding 1 convolution of square (N, C, H, H) inputs, forward and backward."""

    def __init__(self, h, max_tile=4, dtype=np.float32):
        self.m = h // 2  # outputs per side
        at, g, bt = tiled(self.m, max_tile)
        self.r = at.shape[1]  # transformed points per side
        self.at, self.g, self.bt = (a.astype(dtype) for a in (at, g, bt))
        self.a, self.b = self.at.T.copy(), self.bt.T.copy()

    def forward(self, x, weight):
        n, c, h, _ = x.shape
        o, m, r = weight.shape[0], self.m, self.r
        xp = np.zeros((n, h + 2, h + 2, c), x.dtype)
        xp[:, 1:-1, 1:-1] = nhwc(x)
        k = 4 * c  # polyphase: (N, m+1, m+1, (p, q, c)) with p, q the row and column phase
        xq = xp.reshape(n, m + 1, 2, m + 1, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, m + 1, (m + 1) * k)
        t1 = np.matmul(self.bt, xq)  # rows transformed: (n, r, (m+1) k)
        xh = np.matmul(self.bt, t1.reshape(n * r, m + 1, k)).reshape(n, r * r, k)
        # the kernel's phases: W'[o, (p, q, c), i, j] = W[o, c, 2i + p, 2j + q], then G W' G^T
        # (i, (j, p, q, c, o))
        wq = weight.reshape(o, c, 2, 2, 2, 2).transpose(2, 4, 3, 5, 1, 0).reshape(2, -1)
        wh = np.matmul(self.g, (self.g @ wq).reshape(r, 2, k * o)).reshape(r * r, k, o)
        yh = np.matmul(xh.transpose(1, 0, 2), wh)  # the r*r products: (r*r, n, o)
        y = np.matmul(self.at, np.matmul(self.at, yh.reshape(r, r * n * o)).reshape(m, r, n * o))
        y = np.ascontiguousarray(y.reshape(m, m, n, o).transpose(2, 0, 1, 3))
        return nchw(y), (xh, wh, x.shape)

    def backward(self, dy, cache):
        xh, wh, (n, c, h, _) = cache
        o, m, r = dy.shape[1], self.m, self.r
        d1 = np.matmul(self.a, nhwc(dy).reshape(n, m, m * o))
        dyh = np.matmul(self.a, d1.reshape(n * r, m, o)).reshape(n, r * r, o)
        dwh = np.matmul(dyh.transpose(1, 2, 0), xh.transpose(1, 0, 2))  # (r*r, o, k)
        dxh = np.matmul(dyh.transpose(1, 0, 2), wh.transpose(0, 2, 1))  # (r*r, n, k)
        dxq = np.matmul(self.b, np.matmul(self.b, dxh.reshape(r, -1)).reshape(m + 1, r, -1))
        dxq = dxq.reshape(m + 1, m + 1, n, 2, 2, c).transpose(2, 0, 3, 1, 4, 5).reshape(n, h + 2, h + 2, c)
        dx = np.ascontiguousarray(dxq[:, 1:-1, 1:-1])
        dwq = np.matmul(self.g.T, np.matmul(self.g.T, dwh.reshape(r, -1)).reshape(2, r, -1))
        dweight = dwq.reshape(2, 2, o, 2, 2, c).transpose(2, 5, 0, 3, 1, 4).reshape(o, c, 4, 4)
        return nchw(dx), np.ascontiguousarray(dweight)


def _median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tile", type=int, default=4, choices=sorted(POINTS), help="largest 1-D tile")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    fast.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = nchw(rng.standard_normal((args.batch, 14, 14, 64)).astype(np.float32))
    weight = (0.02 * rng.standard_normal((128, 64, 4, 4))).astype(np.float32)
    dy = nchw(rng.standard_normal((args.batch, 7, 7, 128)).astype(np.float32))
    wino = Winograd(14, args.tile)
    y, cache = wino.forward(x, weight)
    dx, dweight = wino.backward(dy, cache)
    y_d, cache_d = fast.conv2d_forward(x, weight, None, (2, 2), (1, 1))
    dx_d, dweight_d, _ = fast.conv2d_backward(dy, cache_d)
    exact = fast.conv2d_forward(*(a.astype(np.float64) for a in (x, weight)), None, (2, 2), (1, 1))
    exact_grads = fast.conv2d_backward(dy.astype(np.float64), exact[1])

    def error(a, b):
        return float(np.abs(a - b).max() / np.abs(b).max())

    print(f"batch {args.batch}, 7 outputs a side as tiles of <= {args.tile}: {wino.r}x{wino.r} products "
          f"instead of 7x7x2x2 = 196 ({196 / wino.r ** 2:.2f}x fewer multiply-adds)")
    print("largest error / largest value, against float64:")
    for name, wv, dv, ev in (("y", y, y_d, exact[0]), ("dx", dx, dx_d, exact_grads[0]),
                             ("dW", dweight, dweight_d, exact_grads[1])):
        print(f"  {name:3s} winograd {error(wv, ev):.1e}   im2col (fast tier) {error(dv, ev):.1e}")
    fwd_d = _median_ms(lambda: fast.conv2d_forward(x, weight, None, (2, 2), (1, 1)), args.repeats)
    bwd_d = _median_ms(lambda: fast.conv2d_backward(dy, cache_d), args.repeats)
    fwd_w = _median_ms(lambda: wino.forward(x, weight), args.repeats)
    bwd_w = _median_ms(lambda: wino.backward(dy, cache), args.repeats)
    print(f"one thread, median ms: im2col forward {fwd_d:.2f}, backward {bwd_d:.2f}; "
          f"winograd forward {fwd_w:.2f}, backward {bwd_w:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
