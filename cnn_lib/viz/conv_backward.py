"""Figures for lesson 06, the backward pass of a convolution.

The one idea they all draw: in the forward pass output ``y[i]`` reads input ``x[i*s + p]``
through kernel tap ``p``. Turned around, input position ``u`` is read by every output ``i``
with ``0 <= u - i*s < k``, each through tap ``p = u - i*s``. As ``i`` grows the tap index
shrinks, so the gradient ``dx[u] = sum_i dy[i] * W[u - i*s]`` walks the kernel backwards:
that is the 180-degree rotation in "dx = full convolution of dy with the flipped kernel".

Every ``plot_*`` function returns the ``matplotlib.figure.Figure`` it drew.
Images are single-channel and 2-D here (the lesson adds channels in the formulas).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Rectangle

from ..kernels import conv_output_size

__all__ = [
    "outputs_reading_pixel",
    "plot_kernel_walk_1d",
    "plot_input_pixel_reach",
    "plot_full_conv_route",
    "plot_reach_counts",
    "plot_conv_matrices",
]

_PAD_COLOR = "#d9d9d9"
_HIGHLIGHT = "#d62728"
# distinct colours for the outputs that read a pixel (tab10 without its red, kept for highlights)
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")


def _pair(value) -> tuple[int, int]:
    """An int or a pair of ints -> a pair of ints."""
    if np.ndim(value) == 0:
        return int(value), int(value)
    first, second = value
    return int(first), int(second)


def _fmt(value) -> str:
    """Short text for a number in a grid cell: integers without a decimal point."""
    value = float(value)
    if value == int(value):
        return str(int(value))
    return f"{value:.2g}"


def _term_fmt(value) -> str:
    """A factor inside a written-out sum: negative numbers in parentheses."""
    text = _fmt(value)
    return f"({text})" if text.startswith("-") else text


def outputs_reading_pixel(x_shape, kernel_shape, stride=1, padding=0, row=0, col=0):
    """Which outputs of a 2-D convolution read one input pixel, and through which kernel tap.

    x_shape:      (H, W) of the (unpadded) input
    kernel_shape: (kH, kW)
    stride:       int or (sH, sW)
    padding:      int or (pH, pW), zeros added on every side
    row, col:     the input pixel, in unpadded coordinates (0 <= row < H, 0 <= col < W)
    returns:      list of ``((i, j), (p, q))``, sorted by output position: output ``y[i, j]``
                  multiplied ``x[row, col]`` by the tap ``W[p, q]``, where
                  ``p = row + pH - i*sH`` and ``q = col + pW - j*sW``.
                  An empty list means no output read this pixel (its gradient is zero).
    """
    h, w = (int(v) for v in x_shape)
    kh, kw = (int(v) for v in kernel_shape)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"pixel ({row}, {col}) is outside the {h}x{w} input")
    if kh > h + 2 * ph or kw > w + 2 * pw:
        raise ValueError(f"kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w + 2 * pw}")
    ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    rows = [(i, row + ph - i * sh) for i in range(ho) if 0 <= row + ph - i * sh < kh]
    cols = [(j, col + pw - j * sw) for j in range(wo) if 0 <= col + pw - j * sw < kw]
    return [((i, j), (p, q)) for i, p in rows for j, q in cols]


# --------------------------------------------------------------------------- drawing helpers


def _cell(ax, x, y, text="", face="white", edge="black", lw=0.8, fontsize=9, color="black",
          hatch=None, weight="normal", width=1.0, height=1.0):
    """One square cell whose centre is (x, y), with optional text inside."""
    ax.add_artist(Rectangle((x - width / 2, y - height / 2), width, height, facecolor=face,
                           edgecolor=edge, lw=lw, hatch=hatch))
    if text != "":
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, color=color, weight=weight)


def _grid_axes(ax, n_rows, n_cols, title, row_offset=0, col_offset=0):
    """Square cells, row 0 at the top, tick labels = array indices (shifted by the offsets)."""
    ax.set_xlim(-0.55, n_cols - 0.45)
    ax.set_ylim(n_rows - 0.45, -0.55)
    ax.set_aspect("equal")
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels([str(c - col_offset) for c in range(n_cols)], fontsize=8)
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([str(r - row_offset) for r in range(n_rows)], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=10)


def _annotated_grid(ax, values, title, faces=None, row_offset=0, col_offset=0, fontsize=9):
    """Draw a 2-D array as a grid of cells with its numbers written in them."""
    values = np.asarray(values)
    n_rows, n_cols = values.shape
    _grid_axes(ax, n_rows, n_cols, title, row_offset, col_offset)
    for r in range(n_rows):
        for c in range(n_cols):
            face = "white" if faces is None else faces[r][c]
            _cell(ax, c, r, _fmt(values[r, c]), face=face, fontsize=fontsize)


# --------------------------------------------------------------------------- 1-D: why the flip


def plot_kernel_walk_1d(length: int = 6, kernel: int = 3, pixel: int = 3):
    """Why the kernel appears rotated in dx, in one dimension (stride 1, no padding).

    length: number of input positions (x has shape (length,))
    kernel: kernel size k (W has shape (k,)); the output has length - k + 1 positions
    pixel:  the input position u whose gradient is explained
    returns: a Figure with two panels.
             Top (forward): each output y[i] that read x[u], drawn as its kernel laid over the
             input; the tap under x[u] is W[u - i], so going down the list (i growing) the tap
             index falls. Bottom (backward): dx[u] as one window of a sliding dot product of
             dy (padded with k-1 zeros) with the reversed kernel.
    """
    k, n_in, u = int(kernel), int(length), int(pixel)
    n_out = n_in - k + 1
    if n_out < 1 or not 0 <= u < n_in:
        raise ValueError(f"need kernel <= length and 0 <= pixel < length, got {length=}, {kernel=}, {pixel=}")
    readers = [i for i in range(n_out) if 0 <= u - i < k]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9.5, 2.2 + 0.55 * (len(readers) + 4)),
                                      gridspec_kw={"height_ratios": [len(readers) + 2, 3.2]})
    x_min, x_max = -k - 0.2, n_in + k + 2.2
    # ---- top: forward view
    for v in range(n_in):
        face = "#fde0dd" if v == u else "white"
        _cell(top, v, 0, f"x[{v}]", face=face, lw=2.0 if v == u else 0.8,
              edge=_HIGHLIGHT if v == u else "black")
    top.axvspan(u - 0.5, u + 0.5, color=_HIGHLIGHT, alpha=0.07, zorder=0)
    for row, i in enumerate(readers, start=1):
        color = _PALETTE[(row - 1) % len(_PALETTE)]
        for p in range(k):
            under_pixel = i + p == u
            _cell(top, i + p, row, f"W[{p}]", face=color if under_pixel else "white",
                  edge=color, lw=2.2 if under_pixel else 1.2,
                  color="white" if under_pixel else "black", weight="bold" if under_pixel else "normal")
        top.text(i + k - 0.3, row, f"→ y[{i}] reads x[{u}] through W[{u - i}]", va="center",
                 fontsize=9, color=color)
    top.set_xlim(x_min, x_max)
    top.set_ylim(len(readers) + 0.7, -0.7)
    top.axis("off")
    top.set_title(f"Forward: the outputs that read x[{u}] (one row per output, its kernel laid over x).\n"
                  f"Read down the red column: as i goes up, the tap u - i goes down: "
                  f"W[{u - readers[0]}], ..., W[{u - readers[-1]}]", fontsize=10)

    # ---- bottom: backward view, dy padded with k-1 zeros, reversed kernel under the window
    offset = k - 1  # dy[i] sits at padded position i + k - 1
    for m in range(n_out + 2 * offset):
        i = m - offset
        inside = 0 <= i < n_out
        _cell(bottom, m, 0, f"dy[{i}]" if inside else "0", face="white" if inside else _PAD_COLOR,
              hatch=None if inside else "//")
    for r in range(k):
        p = k - 1 - r  # position r of the window holds tap k-1-r: the reversed kernel
        i = u + r - offset
        color = _PALETTE[readers.index(i) % len(_PALETTE)] if i in readers else "black"
        _cell(bottom, u + r, 1.15, f"W[{p}]", face="white", edge=color, lw=2.0, color=color, weight="bold")
    bottom.add_patch(Rectangle((u - 0.5, -0.5), k, 2.15, fill=False, edgecolor=_HIGHLIGHT, lw=2.2))
    terms = " + ".join(f"dy[{i}]·W[{u - i}]" for i in readers)
    bottom.text(u + k - 0.3, 1.15, f"dx[{u}] = {terms}", va="center", fontsize=9.5, color=_HIGHLIGHT)
    bottom.text(u - 0.65, 1.15, "kernel reversed:", ha="right", va="center", fontsize=9)
    bottom.set_xlim(x_min + offset, x_max + offset)
    bottom.set_ylim(1.9, -0.7)
    bottom.axis("off")
    bottom.set_title(f"Backward: dx[{u}] is one window of the reversed kernel slid along dy "
                     f"padded with k-1 = {k - 1} zeros", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- 2-D: one pixel's reach


def plot_input_pixel_reach(kernel, x_shape, stride=1, padding=0, row=0, col=0, dy=None,
                           library_value=None):
    """Which outputs read input pixel (row, col), which tap each used, and dx there.

    kernel:        (kH, kW) kernel W
    x_shape:       (H, W) of the unpadded input
    stride:        int or (sH, sW)
    padding:       int or (pH, pW)
    row, col:      the input pixel, unpadded coordinates
    dy:            (H_out, W_out) upstream gradient; None draws only the pattern (no sum)
    library_value: optional number to print next to the hand-made sum (e.g. Conv2d.backward's
                   dx[row, col]), so the picture checks itself
    returns:       a Figure with three panels: the padded input with the pixel and the windows
                   that contain it (outlined in their outputs' colours, or with more than four of
                   them, each pixel numbered by how many of the windows hold it); the kernel
                   with the taps that touched the pixel, coloured like the outputs that used
                   them; dy with those outputs. The bottom line
                   writes dx[row, col] = sum of dy * W over the pairs.
    """
    kernel = np.asarray(kernel, dtype=float)
    h, w = (int(v) for v in x_shape)
    kh, kw = kernel.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    pairs = outputs_reading_pixel((h, w), (kh, kw), (sh, sw), (ph, pw), row, col)
    ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    if dy is not None:
        dy = np.asarray(dy, dtype=float)
        if dy.shape != (ho, wo):
            raise ValueError(f"dy must have the output's shape {(ho, wo)}, got {dy.shape}")
    color_of = {out: _PALETTE[n % len(_PALETTE)] for n, (out, _) in enumerate(pairs)}

    fig, (ax_x, ax_w, ax_y) = plt.subplots(
        1, 3, figsize=(10, 4.3),
        gridspec_kw={"width_ratios": [w + 2 * pw, max(kw, 2.5, 0.5 * max(w + 2 * pw, wo)), max(wo, 2.5)]})
    # smaller numbers on bigger grids; tap labels only where they fit
    big = max(ho, wo)
    number_size = 11 if big <= 4 else (9 if big <= 6 else 7.5)
    show_taps = big <= 6
    tap_size = 8 if big <= 4 else 6.5

    # input, padded
    hp, wp = h + 2 * ph, w + 2 * pw
    # up to 4 windows: each one outlined in its output's colour; more would be a tangle of
    # outlines, so then each pixel is shaded by how many of the windows cover it instead
    outline = len(pairs) <= 4
    cover = np.zeros((hp, wp), dtype=int)
    for (i, j), _ in pairs:
        cover[i * sh : i * sh + kh, j * sw : j * sw + kw] += 1
    title = f"input x (padding hatched)\npixel x[{row}, {col}]"
    if not outline:
        title = f"input x, pixel x[{row}, {col}]\n(number: how many of the windows hold a pixel)"
    _grid_axes(ax_x, hp, wp, title, ph, pw)
    for r in range(hp):
        for c in range(wp):
            is_pad = not (ph <= r < ph + h and pw <= c < pw + w)
            face = _PAD_COLOR if is_pad else "white"
            text = ""
            if not outline and cover[r, c]:
                face = plt.cm.Blues(0.12 + 0.45 * cover[r, c] / cover.max())
                text = str(cover[r, c])
            _cell(ax_x, c, r, text, face=face, hatch="//" if is_pad else None, lw=0.5, fontsize=8)
    _cell(ax_x, col + pw, row + ph, "●", face="#fde0dd", edge=_HIGHLIGHT, lw=2.5, color=_HIGHLIGHT)
    if outline:
        for n, ((i, j), _) in enumerate(pairs):
            inset = 0.08 + 0.06 * (n % 4)  # nested outlines stay visible where windows overlap
            ax_x.add_artist(Rectangle((j * sw - 0.5 + inset, i * sh - 0.5 + inset), kw - 2 * inset,
                                     kh - 2 * inset, fill=False, edgecolor=color_of[(i, j)], lw=1.5))

    # kernel, used taps coloured like the output that used them
    _grid_axes(ax_w, kh, kw, "kernel W:\ntaps that touched it")
    used = {tap: out for out, tap in pairs}
    for p in range(kh):
        for q in range(kw):
            if (p, q) in used:
                face, text_color = color_of[used[(p, q)]], "white"
            else:
                face, text_color = "white", "black"
            _cell(ax_w, q, p, _fmt(kernel[p, q]), face=face, color=text_color, fontsize=11,
                  weight="bold" if (p, q) in used else "normal")

    # outputs / dy
    _grid_axes(ax_y, ho, wo, "dy: outputs that read it\n" + ("(small text: tap used)" if show_taps
                                                               else "(colour = tap used)"))
    for i in range(ho):
        for j in range(wo):
            reads = (i, j) in color_of
            face = color_of[(i, j)] if reads else "white"
            _cell(ax_y, j, i, face=face)
            if dy is not None:
                ax_y.text(j, i - (0.08 if show_taps else 0), _fmt(dy[i, j]), ha="center", va="center",
                          fontsize=number_size, color="white" if reads else "black",
                          weight="bold" if reads else "normal")
    if show_taps:
        for (i, j), (p, q) in pairs:
            ax_y.text(j, i + 0.3, f"W[{p},{q}]", ha="center", va="center", fontsize=tap_size, color="white")

    # the sum, written out term by term (at most five terms per line)
    lines, colors = [], []
    if not pairs:
        lines.append(f"no output read x[{row}, {col}] (the stride skipped it): dx[{row}, {col}] = 0")
        colors.append("black")
    else:
        symbols = [f"dy[{i},{j}]·W[{p},{q}]" for (i, j), (p, q) in pairs]
        for start in range(0, len(symbols), 5):
            head = f"dx[{row}, {col}] = " if start == 0 else "      + "
            lines.append(head + " + ".join(symbols[start : start + 5]))
            colors.append("black")
        if dy is not None:
            numbers = [f"{_term_fmt(dy[i, j])}·{_term_fmt(kernel[p, q])}" for (i, j), (p, q) in pairs]
            total = sum(dy[i, j] * kernel[p, q] for (i, j), (p, q) in pairs)
            for start in range(0, len(numbers), 5):
                tail = f" = {_fmt(total)}" if start + 5 >= len(numbers) else ""
                lines.append(("= " if start == 0 else "+ ") + " + ".join(numbers[start : start + 5]) + tail)
                colors.append(_HIGHLIGHT)
    if library_value is not None:
        lines[-1] += f"      (Conv2d.backward gives {_fmt(library_value)})"
    step = 0.055
    for n, (text, color) in enumerate(zip(lines, colors)):
        fig.text(0.5, 0.02 + step * (len(lines) - 1 - n), text, ha="center", fontsize=9.5, color=color)
    fig.suptitle(f"stride {(sh, sw) if sh != sw else sh}, padding {(ph, pw) if ph != pw else ph}: "
                 f"{len(pairs)} output(s) read x[{row}, {col}]", fontsize=11)
    # fixed margins instead of tight_layout: this figure is redrawn on every slider move
    fig.subplots_adjust(left=0.04, right=0.99, top=0.80, bottom=0.07 + step * len(lines), wspace=0.25)
    return fig


# --------------------------------------------------------------------------- the full-conv route


def _dilate_and_pad(dy, kernel_shape, stride, padded_shape):
    """dy (Ho, Wo) -> zeros between entries (s-1 of them), k-1 zeros around, plus the rows and
    columns the forward pass never reached (so the result convolves to the padded input size)."""
    ho, wo = dy.shape
    kh, kw = kernel_shape
    sh, sw = stride
    hp, wp = padded_shape
    rest_h = hp - ((ho - 1) * sh + kh)  # rows of xpad below the last window
    rest_w = wp - ((wo - 1) * sw + kw)
    out = np.zeros(((ho - 1) * sh + 1 + 2 * (kh - 1) + rest_h, (wo - 1) * sw + 1 + 2 * (kw - 1) + rest_w))
    out[kh - 1 : kh - 1 + (ho - 1) * sh + 1 : sh, kw - 1 : kw - 1 + (wo - 1) * sw + 1 : sw] = dy
    real = np.zeros(out.shape, dtype=bool)
    real[kh - 1 : kh - 1 + (ho - 1) * sh + 1 : sh, kw - 1 : kw - 1 + (wo - 1) * sw + 1 : sw] = True
    return out, real


def plot_full_conv_route(dy, kernel, x_shape, stride=1, padding=0):
    """dx of a single-channel convolution computed as a full convolution, step by step.

    dy:      (H_out, W_out) upstream gradient
    kernel:  (kH, kW) kernel W
    x_shape: (H, W) of the unpadded input
    stride, padding: int or pair, as in the forward pass
    returns: a Figure with four panels: dy; dy with s-1 zeros between entries and k-1 zeros
             around (plus the rows/columns no window reached, when the stride does not tile the
             input); the kernel rotated by 180 degrees; their correlation, the gradient of the
             padded input, whose hatched border is cropped away to give dx.
    """
    dy = np.asarray(dy, dtype=float)
    kernel = np.asarray(kernel, dtype=float)
    h, w = (int(v) for v in x_shape)
    kh, kw = kernel.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    hp, wp = h + 2 * ph, w + 2 * pw
    if dy.shape != (conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)):
        raise ValueError(f"dy has shape {dy.shape}, which is not the output shape of this convolution")
    big, real = _dilate_and_pad(dy, (kh, kw), (sh, sw), (hp, wp))
    rotated = kernel[::-1, ::-1]
    dxp = np.zeros((hp, wp))
    for u in range(hp):
        for v in range(wp):
            dxp[u, v] = np.sum(big[u : u + kh, v : v + kw] * rotated)

    fig, axes = plt.subplots(1, 4, figsize=(10, 3.4),
                             gridspec_kw={"width_ratios": [dy.shape[1], big.shape[1], kw, wp]})
    _annotated_grid(axes[0], dy, "1. dy")
    faces = [["white" if real[r, c] else _PAD_COLOR for c in range(big.shape[1])]
             for r in range(big.shape[0])]
    rest = hp - ((dy.shape[0] - 1) * sh + kh), wp - ((dy.shape[1] - 1) * sw + kw)
    extra = f"\n+{rest} row/col no window reached" if any(rest) else ""
    _annotated_grid(axes[1], big, f"2. dy, {sh - 1 if sh == sw else (sh - 1, sw - 1)} zero(s) between,\n"
                    f"k-1 = {kh - 1 if kh == kw else (kh - 1, kw - 1)} around (grey = added 0){extra}",
                    faces=faces, fontsize=8)
    _annotated_grid(axes[2], rotated, "3. slide W rotated\nby 180° over it")
    faces = [["white" if (ph <= r < ph + h and pw <= c < pw + w) else _PAD_COLOR for c in range(wp)]
             for r in range(hp)]
    _annotated_grid(axes[3], dxp, f"4. = grad of padded x;\ncrop {ph if ph == pw else (ph, pw)} → dx "
                    f"(grey is cropped)", faces=faces, row_offset=ph, col_offset=pw, fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- coverage


def plot_reach_counts(x_shape, kernel_shape, settings=((1, 0), (2, 0))):
    """How many outputs read each input pixel, for several (stride, padding) settings.

    x_shape:      (H, W) of the input
    kernel_shape: (kH, kW)
    settings:     sequence of (stride, padding) pairs, one panel each
    returns:      a Figure; each panel is an H x W grid annotated with the number of terms in
                  that pixel's gradient sum (0 = the pixel gets no gradient at all)
    """
    h, w = (int(v) for v in x_shape)
    settings = list(settings)
    fig, axes = plt.subplots(1, len(settings), figsize=(min(10, 3.4 * len(settings)), 3.9), squeeze=False)
    counts_all = []
    for stride, padding in settings:
        counts = np.array([[len(outputs_reading_pixel((h, w), kernel_shape, stride, padding, r, c))
                            for c in range(w)] for r in range(h)])
        counts_all.append(counts)
    top = max(int(c.max()) for c in counts_all)
    cmap = plt.get_cmap("Blues")
    for ax, (stride, padding), counts in zip(axes[0], settings, counts_all):
        faces = [[cmap(0.15 + 0.6 * counts[r, c] / max(top, 1)) for c in range(w)] for r in range(h)]
        _annotated_grid(ax, counts, f"stride {stride}, padding {padding}:\n"
                        f"outputs reading each pixel", faces=faces)
        ax.set_xlabel("input column", fontsize=8)
        ax.set_ylabel("input row", fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- matrices


def plot_conv_matrices(conv_matrix, transpose_matrix, x_shape=None, y_shape=None):
    """A convolution written as a matrix, its transpose, and the transposed convolution's matrix.

    conv_matrix:      (M, K) array: column k is the conv's output (flattened, length M) for the
                      k-th unit input, so conv(x).ravel() == conv_matrix @ x.ravel()
    transpose_matrix: (K, M) array built the same way from ConvTranspose2d
    x_shape, y_shape: optional (H, W) of input and output, to label rows/columns as x[u,v], y[i,j]
    returns:          a Figure with three panels (conv matrix, its transpose, the ConvTranspose
                      matrix); zeros are left white. Small matrices (at most 400 entries) have
                      their non-zero entries written in and no colour bar (the numbers are the
                      scale); larger ones get a colour bar instead.
    """
    a = np.asarray(conv_matrix, dtype=float)
    b = np.asarray(transpose_matrix, dtype=float)
    m, k = a.shape
    vmax = max(np.abs(a).max(), np.abs(b).max(), 1e-12)
    annotate = a.size <= 400
    nonnegative = min(a.min(), b.min()) >= 0
    if nonnegative:
        # written-in numbers need light cells: use only the light part of the colour map
        cmap = ListedColormap(plt.get_cmap("Reds")(np.linspace(0.0, 0.6 if annotate else 1.0, 256)))
        vmin = 0.0
    else:
        lo, hi = (0.2, 0.8) if annotate else (0.0, 1.0)
        cmap = ListedColormap(plt.get_cmap("RdBu_r")(np.linspace(lo, hi, 256)))
        vmin = -vmax

    def labels(n, shape, name):
        if shape is None:
            return [str(t) for t in range(n)]
        return [f"{name}[{t // shape[1]},{t % shape[1]}]" for t in range(n)]

    x_labels, y_labels = labels(k, x_shape, "x"), labels(m, y_shape, "y")
    tick_size = 8.5 if max(m, k) <= 20 else 6.5
    fig, axes = plt.subplots(1, 3, figsize=(10, 5.2), gridspec_kw={"width_ratios": [k, m + 1.5, m + 1.5]})
    panels = [(a, "Conv2d as a matrix M\n(y = M x)", y_labels, x_labels),
              (a.T, "its transpose Mᵀ", x_labels, y_labels),
              (b, "ConvTranspose2d as a\nmatrix (same weights)", x_labels, y_labels)]
    image = None
    for ax, (mat, title, row_labels, col_labels) in zip(axes, panels):
        shown = np.ma.masked_equal(mat, 0.0)
        image = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(mat.shape[1]))
        ax.set_xticklabels(col_labels, rotation=90, fontsize=tick_size)
        ax.set_yticks(range(mat.shape[0]))
        ax.set_yticklabels(row_labels, fontsize=tick_size)
        ax.set_xticks(np.arange(-0.5, mat.shape[1]), minor=True)
        ax.set_yticks(np.arange(-0.5, mat.shape[0]), minor=True)
        ax.grid(which="minor", color="#e0e0e0", lw=0.5)
        ax.tick_params(which="both", length=0)
        if annotate:
            for (r, c), value in np.ndenumerate(mat):
                if value != 0:
                    ax.text(c, r, _fmt(value), ha="center", va="center", fontsize=9)
    if annotate:
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        fig.text(0.5, 0.015, "each number is a kernel weight; empty cells are 0", ha="center", fontsize=9.5)
    else:
        fig.colorbar(image, ax=list(axes), shrink=0.6, label="matrix entry (a kernel weight; white = 0)")
    return fig
