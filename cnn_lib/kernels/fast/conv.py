"""Convolution, fast: im2col on slices of a channels-last batch, on several threads.

* **Convolution is a matrix product.** :func:`im2col` copies every receptive field into a
  row of ``cols``; ``cols @ Wmat`` is then the whole convolution, done by BLAS. With a column
  of ones at the end of ``cols`` (:func:`cols_matrix`, ``ones=True``) and the bias as the last
  row of ``Wmat``, the same product adds the bias, and backward's ``dy_mat.T @ cols`` (dL/dW
  as a ``(C_out, kH*kW*C)`` matrix) has dL/dbias as its last column.
* **Its input gradient is one matrix product per tap and one shifted add per tap**
  (:func:`add_tap_products`), never a scatter with ``np.add.at``, and never the big
  ``(N*H_out*W_out, kH*kW*C)`` matrix that col2im would add back.
* **A ReLU and a max pooling right after a convolution can run inside it**
  (:func:`conv2d_block_forward`, :func:`conv2d_block_backward`), each slice going through them
  while the convolution's output for that slice is still in the CPU cache.
* **Only what is needed.** The first layer of a network does not need dL/dx, so backward can
  skip it (``need_input_grad=False``). A convolution's cache keeps its input, not ``cols``
  (kH*kW times larger), and rebuilds each slice's ``cols`` in backward.
"""

from __future__ import annotations

import numpy as np

from ..shapes import conv_output_hw, conv_transpose_output_hw
from .layout import nchw, nhwc, tap_window, taps
from .pool import maxpool_backward_slice, maxpool_slice, pool_dx
from .threads import for_each_slice, map_slices

#: Inputs with fewer channels than this (the grey images of a first layer: C = 1) get their
#: ``cols`` built one (tap, channel) at a time, as whole shifted images, instead of one kernel
#: row of a window at a time: such a row is only kW*C numbers long, too short to copy fast.
FEW_CHANNELS = 4


def padded_nhwc(x: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """``x`` (N, C, H, W) as a zero-padded channels-last array (N, H+2ph, W+2pw, C).

    One copy (into a zeroed array) when there is padding; without padding it is the view
    ``nhwc(x)`` and nothing is copied.
    """
    if ph == 0 and pw == 0:
        return nhwc(x)
    n, c, h, w = x.shape
    xp = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)
    xp[:, ph : ph + h, pw : pw + w, :] = nhwc(x)
    return xp


def im2col(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], out=None) -> np.ndarray:
    """Gather every receptive field of a padded NHWC input into a row.

    xp:      (N, Hp, Wp, C) padded input, channels last
    out:     optional array to fill, of the shape returned (or a reshaped view of one)
    returns: (N, H_out, W_out, kH, kW, C); reshaped to (N*H_out*W_out, kH*kW*C) it is the
             matrix whose product with the kernel matrix of :func:`_weight_matrix` (the
             kernel transposed to (kH, kW, C_in, C_out), then reshaped) is the convolution.
    """
    n, hp, wp, c = xp.shape
    kh, kw = kernel
    sh, sw = stride
    ho, wo = conv_output_hw((hp, wp), (kh, kw), stride)
    cols = np.empty((n, ho, wo, kh, kw, c), dtype=xp.dtype) if out is None else out
    if c < FEW_CHANNELS:
        # Few channels: copy tap by tap, each copy moving whole image rows.
        for i, j in taps(kh, kw):
            cols[:, :, :, i, j, :] = xp[tap_window(i, j, stride, (ho, wo))]
    else:
        # Many channels: a strided *view* of every window (no copy), then one copy in which
        # each kernel row of a window (kW*C numbers) is a contiguous run of the input when xp
        # is a contiguous channels-last array (as padded_nhwc makes it with padding). In the
        # view, element [n, i, j, a, b, ch] is xp[n, i*sh + a, j*sw + b, ch]: its strides are
        # xp's own, with the output axes i and j stepping sh and sw pixels at a time.
        # (np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2)) makes the same
        # view, with stride 1 and in another axis order; it takes 40 microseconds a call to
        # work out, as_strided 7, and a batch's convolution calls this once per slice.)
        step_n, step_h, step_w, step_c = xp.strides
        windows = np.lib.stride_tricks.as_strided(
            xp, shape=(n, ho, wo, kh, kw, c),
            strides=(step_n, step_h * sh, step_w * sw, step_h, step_w, step_c), writeable=False)
        cols[...] = windows  # (N, Ho, Wo, kH, kW, C)
    return cols


def cols_matrix(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                ones: bool = False) -> np.ndarray:
    """:func:`im2col` as the 2-D matrix ``cols`` (N*H_out*W_out, kH*kW*C) that the kernel multiplies.

    ``ones=True`` appends a column of ones, (N*H_out*W_out, kH*kW*C + 1): a bias is a weight
    on an input that is always 1, so with the bias as the kernel matrix's last row, one
    matrix product adds it too (forward), and in ``dy_mat.T @ cols`` the last column is the
    column sums of ``dy_mat``, dL/dbias (backward).

    Many channels: ``im2col(...)`` reshaped. Few channels (C < FEW_CHANNELS, e.g. the first layer on
    grey images): a row of ``cols`` holds only kH*kW*C numbers, and filling it tap by tap
    writes C numbers at a time, far apart in memory. So it is built as its *transpose*,
    (kH*kW*C, N*H_out*W_out): one long row per (tap, channel), each copied in one go from the
    shifted window of the input, and the transposed view is returned. Same numbers, same
    order; BLAS multiplies a transposed matrix as fast as any other.
    """
    n, hp, wp, c = xp.shape
    kh, kw = kernel
    sh, sw = stride
    ho, wo = conv_output_hw((hp, wp), (kh, kw), stride)
    k, m = kh * kw * c, n * ho * wo
    width = k + 1 if ones else k
    if c >= FEW_CHANNELS:
        cols = np.empty((m, width), dtype=xp.dtype)
        im2col(xp, kernel, stride, out=cols[:, :k].reshape(n, ho, wo, kh, kw, c))  # a view
        if ones:
            cols[:, k] = 1
        return cols
    cols_t = np.empty((width, m), dtype=xp.dtype)
    rows = cols_t[:k].reshape(kh, kw, c, n, ho, wo)  # a view: one row of cols_t per (tap, channel)
    for i, j in taps(kh, kw):
        rows[i, j] = xp[tap_window(i, j, stride, (ho, wo))].transpose(3, 0, 1, 2)  # (C, N, Ho, Wo)
    if ones:
        cols_t[k] = 1
    return cols_t.T


def add_tap_products(g_mat, wtaps, out, stride):
    """``out += col2im(g_mat @ Wmat.T)``, computed one kernel tap at a time (``Wmat`` being the
    kernel as a (kH*kW*C, K) matrix, ``wtaps.reshape(-1, K)``, and col2im that of
    :mod:`cnn_lib.kernels.vectorized`, channels last).

    g_mat:   (n*H_out*W_out, K) one row per output position (K = the conv's C_out)
    wtaps:   (kH, kW, C, K)     the kernel, tap by tap
    out:     (n, Hp, Wp, C)     receives, for every tap (i, j), ``g_mat @ wtaps[i, j].T``
                                added onto the sub-grid that tap read in the forward pass.

    Same numbers as col2im of the big product, but each tap's product is a contiguous
    (n, H_out, W_out, C) block that is added in one go (runs of ``W_out*C`` numbers at stride
    1, of C numbers at larger strides), and the matrix ``g_mat @ Wmat.T``, ``kH*kW`` times
    larger than one tap's block, is never built.
    """
    n, hp, wp, c = out.shape
    kh, kw = wtaps.shape[:2]
    sh, sw = stride
    ho, wo = conv_output_hw((hp, wp), (kh, kw), stride)
    block = np.empty((g_mat.shape[0], c), dtype=out.dtype)  # reused by every tap
    for i, j in taps(kh, kw):
        np.matmul(g_mat, wtaps[i, j].T, out=block)
        out[tap_window(i, j, stride, (ho, wo))] += block.reshape(n, ho, wo, c)
    return out


#: Rows of ``cols`` per product when :func:`weight_gradient` sums over a narrow ``cols``.
NARROW_BLOCK_ROWS = 2048

#: ... and only when it has at least this many rows (measured on Zen 4: see weight_gradient).
NARROW_MIN_ROWS = 2 * NARROW_BLOCK_ROWS

#: ``cols`` at most this many columns wide counts as narrow (a first layer on grey images:
#: kH*kW + 1 columns).
NARROW_COLUMNS = 32


def weight_gradient(dy_mat: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``dy_mat.T @ cols``: (C_out, kH*kW*C (+1)), dL/dW as a matrix (and dL/db as its last column).

    For a narrow ``cols`` (a first layer on grey images: 10 columns, a product whose inner size
    is N*H_out*W_out, tens of thousands) OpenBLAS streams both matrices through memory at a few
    GFLOP/s; the same sum taken over blocks of NARROW_BLOCK_ROWS rows, each block's two pieces
    small enough to stay in the CPU's cache, takes a third of the time (Zen 4, SkylakeX kernels:
    0.53 -> 0.18 ms at batch 32, 3.6 -> 0.79 ms at batch 128, conv 1 -> 32 channels on 28x28;
    benchmarks/RUNS.md). A wide ``cols`` gains nothing from blocks, and a short one (fewer than
    NARROW_MIN_ROWS rows: the DCGAN discriminator's first layer, 3,136 rows a slice, 0.81 ms at
    once against 0.91 in blocks) loses; both are multiplied at once.
    """
    if cols.shape[1] > NARROW_COLUMNS or len(cols) < NARROW_MIN_ROWS:
        return dy_mat.T @ cols
    total = np.zeros((dy_mat.shape[1], cols.shape[1]), dtype=np.result_type(dy_mat, cols))
    for first in range(0, len(cols), NARROW_BLOCK_ROWS):
        rows = slice(first, first + NARROW_BLOCK_ROWS)
        total += dy_mat[rows].T @ cols[rows]
    return total


def weight_matrix(weight: np.ndarray) -> np.ndarray:
    """(C_out, C_in, kH, kW) -> (kH*kW*C_in, C_out), matching the column order of im2col."""
    c_out = weight.shape[0]
    return weight.transpose(2, 3, 1, 0).reshape(-1, c_out)


def conv2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0)):
    """Cross-correlation (what deep learning calls convolution): im2col + one matrix product
    per slice of the batch.

    x:       (N, C_in, H, W)
    weight:  (C_out, C_in, kH, kW)
    bias:    (C_out,) or None
    returns: y (N, C_out, H_out, W_out), channels-last in memory, and a cache for
             :func:`conv2d_backward`: (x, weight, has bias, stride, padding)

    The batch goes through in slices (:func:`.threads.for_each_slice`): each slice's ``cols``
    is built, multiplied and dropped. The cache keeps ``x`` itself; backward rebuilds ``cols``
    slice by slice (cheaper than keeping a kH*kW times larger array and reading it back from
    main memory).
    """
    y, (cache, _, _) = conv2d_block_forward(x, weight, bias, stride, padding)
    return y, cache


def conv2d_backward(dy, cache, need_input_grad=True):
    """Gradients of a convolution.

    dy:      (N, C_out, H_out, W_out) upstream gradient dL/dy
    returns: dx (N, C_in, H, W), dweight (C_out, C_in, kH, kW), dbias (C_out,) or None.
             With ``need_input_grad=False``, dx is None and not computed (a network's first
             layer: the images need no gradient).
    """
    return conv2d_block_backward(dy, (cache, None, None), need_input_grad)


def conv2d_block_forward(x, weight, bias, stride=(1, 1), padding=(0, 0), relu=False, pool=None):
    """A convolution, then (if ``relu``) a ReLU, then (if ``pool`` = (kernel, stride)) a max
    pooling, in one pass over the batch: what :class:`cnn_lib.fusion.ConvBlock` runs.

    returns: the block's output (N, C_out, H_b, W_b), channels-last in memory, and the
             block's cache for :func:`conv2d_block_backward`: (the convolution's cache, the
             ReLU's 0/1 mask of the block's output or None, the pooling's cache or None).

    Each slice of the batch goes through the ReLU and the pooling right after its matrix
    product, while the convolution's output is still in the CPU cache: they need no pass over
    main memory and no hand-over to the threads of their own, and when a pooling follows, the
    convolution's output for the whole batch is never stored at all.

    With both a ReLU and a pooling, the block pools first and applies the ReLU to the pooled
    numbers: max pooling and ReLU commute, ``max(relu(a), relu(b)) = relu(max(a, b))`` (a
    ReLU never reverses an order), so the output is the very same, for a quarter of the
    ReLU's work with 2x2 windows of stride 2 and a mask four times smaller. The gradient is
    the same too: a window whose maximum is <= 0 gives 0 after the ReLU, and its whole
    gradient is stopped by the mask, whichever of its taps the pooling recorded as winner.
    """
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    ph, pw = padding
    ho, wo = conv_output_hw((h, w), (kh, kw), stride, padding)
    k = kh * kw * c_in  # numbers in one receptive field
    wmat = weight_matrix(weight)
    if bias is not None:  # the bias as one more row of the kernel, for cols' column of ones
        wmat = np.concatenate([wmat, bias.reshape(1, c_out)])
    if pool is None:
        y = np.empty((n, ho, wo, c_out), dtype=x.dtype)  # rows are pixels, channels last
    else:
        pool_kernel, pool_stride = pool
        pho, pwo = conv_output_hw((ho, wo), pool_kernel, pool_stride)
        y = np.empty((n, pho, pwo, c_out), dtype=x.dtype)
        wins = np.empty((pool_kernel[0] * pool_kernel[1], n, pho, pwo, c_out), dtype=bool)
    mask = np.empty(y.shape, dtype=x.dtype) if relu else None  # the ReLU's, at the block's output

    def work(part):
        cols = cols_matrix(padded_nhwc(x[part], ph, pw), (kh, kw), stride, ones=bias is not None)
        # the convolution's output: straight into y, or (a pooling follows) a scratch array
        out = y[part] if pool is None else np.empty((part.stop - part.start, ho, wo, c_out), x.dtype)
        np.matmul(cols, wmat, out=out.reshape(-1, c_out))  # bias included
        if pool is not None:  # the steps of maxpool2d_forward, on this slice
            maxpool_slice(out, y[part], wins[:, part], pool_kernel, pool_stride)
        if relu:  # the steps of relu_forward, on this slice of the block's output
            np.greater(y[part], 0, out=mask[part])
            np.multiply(y[part], mask[part], out=y[part])

    # Bytes per image, an estimate rather than an inventory: its cols, its input, and the
    # convolution's output, counted twice with a ReLU. (An exact count would add the pooling's
    # copies of its sub-grids, its winners and its output, and count a mask under a pooling at
    # a quarter. CHUNK_BYTES and PARALLEL_MIN_BYTES were measured with this estimate; counting
    # the pooling's copies would put the tutorial net's convolution at batch 32 over
    # PARALLEL_MIN_BYTES, on two threads, where it trained 20% slower.)
    outputs = 2 if relu else 1
    for_each_slice(work, n, (ho * wo * (k + outputs * c_out) + h * w * c_in) * x.itemsize)
    conv_cache = (x, weight, bias is not None, stride, padding)
    pool_cache = None if pool is None else ((n, c_out, ho, wo), wins, pool_kernel, pool_stride)
    return nchw(y), (conv_cache, None if mask is None else nchw(mask), pool_cache)


def conv2d_block_backward(dy, cache, need_input_grad=True):
    """The backward passes of the ReLU, the pooling and the convolution of a block, in one
    pass over the batch (each slice goes back through all three before the next one starts).

    dy:      (N, C_out, H_b, W_b) dL/d(the block's output)
    cache:   what :func:`conv2d_block_forward` returned (or (conv cache, None, None): a plain
             convolution)
    returns: dx (N, C_in, H, W) (None if not ``need_input_grad``), dweight, dbias (or None),
             those of ``conv2d_backward(maxpool2d_backward(relu_backward(dy, mask),
             pool_cache), conv_cache)`` up to rounding.
    """
    (x, weight, has_bias, stride, padding), mask, pool_cache = cache
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    ph, pw = padding
    ho, wo = conv_output_hw((h, w), (kh, kw), stride, padding)
    k = kh * kw * c_in
    dyh = nhwc(dy)
    maskh = None if mask is None else nhwc(mask)
    wtaps = weight.transpose(2, 3, 1, 0)  # (kH, kW, C_in, C_out)
    dxh = np.empty((n, h, w, c_in), dtype=dy.dtype) if need_input_grad else None

    def work(part):  # returns this slice's share of (dW, db)
        g = dyh[part]  # this slice's upstream gradient
        if maskh is not None:  # relu_backward of this slice
            g = g * maskh[part]
        if pool_cache is not None:  # maxpool2d_backward of this slice
            pool_shape, wins, pool_kernel, pool_stride = pool_cache
            g_pool, g = g, pool_dx((len(g), *pool_shape[1:]), pool_kernel, pool_stride,
                                   g.shape[1:3], g.dtype)
            maxpool_backward_slice(g_pool, wins[:, part], g, pool_kernel, pool_stride)
        # the gradient at the convolution's output, one row per position (a view when g is
        # channels-last in memory, as a pooling's backward makes it; otherwise reshape copies)
        dy_mat = g.reshape(-1, c_out)
        # dW = sum over every output position of (its upstream gradient) x (receptive field);
        # with a bias, cols ends in a column of ones, and the last column of the product is
        # db = the column sums of dy_mat. (dy_mat.T @ cols is (cols.T @ dy_mat).T, in the
        # layout of the weight, C_out first; for many input channels OpenBLAS computes it
        # 10-20% faster than cols.T @ dy_mat: measured on the LeNet-style net's second
        # convolution.)
        cols = cols_matrix(padded_nhwc(x[part], ph, pw), (kh, kw), stride, ones=has_bias)
        share = weight_gradient(dy_mat, cols)
        if need_input_grad:
            # dx: each output position sends dy * W back to the receptive field it read from;
            # into a padded scratch array for this slice, whose inside is this slice's dx
            dxp = np.zeros((part.stop - part.start, h + 2 * ph, w + 2 * pw, c_in), dtype=dy.dtype)
            add_tap_products(dy_mat, wtaps, dxp, stride)
            dxh[part] = dxp[:, ph : ph + h, pw : pw + w, :]
        return share

    # bytes per image: its cols, its upstream arrays (the gradient, and a ReLU's mask of the
    # convolution's output shape), its input and its dx
    upstream = 2 if maskh is not None and pool_cache is None else 1
    dwmat = sum(map_slices(work, n, (ho * wo * (k + upstream * c_out) + 2 * h * w * c_in) * dy.itemsize))
    dbias = dwmat[:, k].copy() if has_bias else None
    dweight = np.ascontiguousarray(dwmat[:, :k].reshape(c_out, kh, kw, c_in).transpose(0, 3, 1, 2))
    return (None if dxh is None else nchw(dxh)), dweight, dbias


def conv_transpose2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0), output_padding=(0, 0)):
    """Transposed convolution: the input-gradient of a convolution, used as a layer.

    x:       (N, C_in, H, W)
    weight:  (C_in, C_out, kH, kW)  (PyTorch's layout for ConvTranspose2d)
    returns: y (N, C_out, (H-1)*sh - 2*ph + kH + output_padding[0], ...) and a cache
             (x as an (N*H*W, C_in) matrix, x.shape, weight, has bias, stride, padding)

    Every kernel tap adds its product onto the padded output (:func:`add_tap_products`);
    the ``output_padding`` extra rows and columns at the bottom and right get no tap at all.
    The batch goes through in slices, on cnn_lib's threads (:func:`.threads.for_each_slice`),
    each slice into its own part of the output.

    With stride 1 (and ``padding`` at most ``kernel - 1``) no two taps land on the same output
    sub-grid, and the layer is a plain convolution: the kernel flipped in both spatial axes, its
    two channel axes swapped, and padding ``kernel - 1 - padding``. That runs as im2col and one
    product of inner size kH*kW*C_in (:func:`conv2d_forward`) instead of kH*kW products of inner
    size C_in and as many shifted adds: for the shipped DCGAN generator's ``k3 s1 p1`` layer
    (64 -> 64 channels, 14x14, batch 64, two threads, Zen 4) 6.6 ms instead of 8.0 (medians of
    five runs each; benchmarks/RUNS.md).
    """
    n, c_in, h, w = x.shape
    _, c_out, kh, kw = weight.shape
    ph, pw = padding
    ho, wo = conv_transpose_output_hw((h, w), (kh, kw), stride, padding, output_padding)
    x_mat = nhwc(x).reshape(n * h * w, c_in)
    cache = (x_mat, x.shape, weight, bias is not None, stride, padding)
    if tuple(stride) == (1, 1) and ph <= kh - 1 and pw <= kw - 1:
        flipped = weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]  # (C_out, C_in, kH, kW), a view
        y, _ = conv2d_forward(x, flipped, bias, (1, 1), (kh - 1 - ph, kw - 1 - pw))
        return y, cache
    # weight seen as a conv kernel from C_out to C_in channels: (C_in, C_out, kH, kW)
    wtaps = weight.transpose(2, 3, 1, 0)  # (kH, kW, C_out, C_in)
    y = np.empty((n, ho, wo, c_out), dtype=x.dtype)

    def work(part):
        yp = np.zeros((part.stop - part.start, ho + 2 * ph, wo + 2 * pw, c_out), dtype=x.dtype)
        add_tap_products(x_mat[part.start * h * w : part.stop * h * w], wtaps, yp, stride)
        y[part] = yp[:, ph : ph + ho, pw : pw + wo, :]
        if bias is not None:
            y[part] += bias

    # bytes per image: its input, its padded output and one tap's product
    for_each_slice(work, n, (h * w * (c_in + c_out) + (ho + 2 * ph) * (wo + 2 * pw) * c_out) * x.itemsize)
    return nchw(y), cache


def conv_transpose2d_backward(dy, cache, need_input_grad=True):
    """dy: (N, C_out, H_out, W_out) -> dx (N, C_in, H, W), dweight (C_in, C_out, kH, kW), dbias.

    With ``need_input_grad=False`` dx is None and not computed. Slice by slice of the batch, on
    cnn_lib's threads: each slice's share of dweight is summed afterwards in a fixed order.
    """
    x_mat, x_shape, weight, has_bias, stride, padding = cache
    n, c_in, h, w = x_shape
    _, c_out, kh, kw = weight.shape
    ph, pw = padding
    dyh = nhwc(dy)
    wmat = weight_matrix(weight)  # (kH*kW*C_out, C_in)
    dxh = np.empty((n, h, w, c_in), dtype=dy.dtype) if need_input_grad else None

    def work(part):  # returns this slice's share of dweight, as a (kH*kW*C_out, C_in) matrix
        # The adjoint of "add taps then crop" is "pad then im2col": a plain convolution of dy.
        cols = cols_matrix(padded_nhwc(dyh[part].transpose(0, 3, 1, 2), ph, pw), (kh, kw), stride)
        x_part = x_mat[part.start * h * w : part.stop * h * w]
        if need_input_grad:
            np.matmul(cols, wmat, out=dxh[part].reshape(-1, c_in))
        return cols.T @ x_part

    # bytes per image: its cols, its dy, its input and its dx
    dwmat = sum(map_slices(work, n, (h * w * (kh * kw * c_out + 2 * c_in) + dyh[0].size) * dy.itemsize))
    dweight = dwmat.reshape(kh, kw, c_out, c_in).transpose(3, 2, 0, 1)
    dbias = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return (None if dxh is None else nchw(dxh)), np.ascontiguousarray(dweight), dbias
