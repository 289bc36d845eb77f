"""Figures for lesson 01, the forward pass of a convolution: one window's sliding dot product,
how padding and stride decide the output size, how input channels are summed, and what
classic filters do to a digit.

The outputs drawn here are computed by :func:`cnn_lib.kernels.vectorized.conv2d_forward`, the same
kernel the library's ``Conv2d`` uses. Every function returns the Figure it drew.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.patches import ConnectionPatch, Rectangle

from ..kernels import conv_output_size, vectorized

__all__ = [
    "conv_step_numbers",
    "format_number",
    "show_channel_sum",
    "show_conv_step",
    "show_detector_response",
    "show_feature_maps",
    "show_output_size_1d",
    "show_responses",
]

HIGHLIGHT = "tab:orange"
_PAD_COLOR = "#d9d9d9"


def format_number(value) -> str:
    """Short text for a number: ``3.0`` -> ``"3"``, ``-0.25`` -> ``"-0.25"``, ``1/3`` -> ``"0.33"``."""
    value = float(value) + 0.0  # + 0.0 turns -0.0 into 0.0
    if value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _symmetric_norm(*arrays) -> Normalize:
    """A colour scale centred on 0, so that sign reads as colour (red +, blue -)."""
    vmax = max(float(np.max(np.abs(a), initial=0.0)) for a in arrays)
    vmax = vmax if vmax > 0 else 1.0
    return Normalize(-vmax, vmax)


def _draw_grid(ax, values, *, norm, cmap="RdBu_r", annotate=True, fontsize=9, hidden=None,
               pad_border=0, title=None):
    """Draw a 2-D array as coloured cells, optionally with each value written in its cell.

    values:     (H, W) array
    hidden:     (H, W) bool mask of cells to leave empty (not computed yet), or None
    pad_border: width of a zero-padding border to draw in grey
    """
    values = np.asarray(values, dtype=np.float64)
    h, w = values.shape
    shown = np.ma.masked_array(values, mask=hidden) if hidden is not None else values
    ax.imshow(shown, cmap=cmap, norm=norm)
    ax.set_facecolor("white")
    if pad_border:
        inside = np.zeros((h, w), dtype=bool)
        inside[pad_border:h - pad_border, pad_border:w - pad_border] = True
        for i, j in zip(*np.nonzero(~inside)):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=_PAD_COLOR, edgecolor="none"))
    if annotate:  # cell borders
        ax.hlines(np.arange(-0.5, h), -0.5, w - 0.5, color="0.6", linewidth=0.6)
        ax.vlines(np.arange(-0.5, w), -0.5, h - 0.5, color="0.6", linewidth=0.6)
    ax.tick_params(length=0, labelsize=7)
    ax.set_xticks(range(w) if w <= 12 else range(0, w, 5))
    ax.set_yticks(range(h) if h <= 12 else range(0, h, 5))
    if annotate:
        for i in range(h):
            for j in range(w):
                if hidden is not None and hidden[i, j]:
                    continue
                v = values[i, j]
                is_pad = pad_border and not (pad_border <= i < h - pad_border
                                             and pad_border <= j < w - pad_border)
                strong = abs(v) > 0.6 * norm.vmax
                ax.text(j, i, format_number(v), ha="center", va="center", fontsize=fontsize,
                        color="0.45" if is_pad else ("white" if strong else "black"))
    if title:
        ax.set_title(title, fontsize=10)


def _outline(ax, top, left, height, width, color=HIGHLIGHT, lw=3):
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), width, height, fill=False, edgecolor=color,
                           linewidth=lw, zorder=5))


def _conv_single(x, kernel, stride, padding):
    """One channel in, one out, through the library's fast kernel: (H, W) -> (H_out, W_out)."""
    y, _ = vectorized.conv2d_forward(x[None, None], kernel[None, None], None,
                                     (stride, stride), (padding, padding))
    return y[0, 0]


def conv_step_numbers(x, kernel, row, col, stride=1, padding=0):
    """The numbers behind one output cell of a single-channel convolution.

    Args:
        x: ``(H, W)`` input.
        kernel: ``(kH, kW)`` kernel.
        row, col: which output cell, ``0 <= row < H_out``, ``0 <= col < W_out``.
        stride, padding: ints, the same along both axes.

    Returns:
        A dict with ``x_padded (H+2P, W+2P)``, ``top``, ``left`` (the window's top-left
        corner in padded coordinates), ``window (kH, kW)``, ``products (kH, kW)`` =
        window * kernel, ``value`` = their sum, and ``y (H_out, W_out)``, the whole output.
    """
    x = np.asarray(x, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    y = _conv_single(x, kernel, stride, padding)
    if not (0 <= row < y.shape[0] and 0 <= col < y.shape[1]):
        raise ValueError(f"output cell ({row}, {col}) is outside the {y.shape[0]}x{y.shape[1]} output")
    kh, kw = kernel.shape
    xp = np.pad(x, padding)
    top, left = row * stride, col * stride
    window = xp[top:top + kh, left:left + kw]
    products = window * kernel
    return {"x_padded": xp, "top": top, "left": left, "window": window, "products": products,
            "value": float(products.sum()), "y": y}


def _ratio(n):
    return min(max(n, 3.5), 10)


def show_conv_step(x, kernel, row, col, stride=1, padding=0, *, annotate=None, progressive=True):
    """One step of the sliding dot product: the window, the products, and their sum.

    Four panels: the (zero-padded) input with the current window outlined; the kernel; the
    window's element-wise products with the kernel; the output with the current cell outlined
    (and, with ``progressive``, only the cells computed so far filled in, in reading order).
    An arrow carries the sum of the products into its output cell.

    Args:
        x: ``(H, W)`` input (one channel).
        kernel: ``(kH, kW)``.
        row, col: the output cell, ``0 <= row < H_out``, ``0 <= col < W_out``.
        stride, padding: ints, the same along both axes.
        annotate: write the numbers into the input and output cells; default: when the padded
            input is at most 12 pixels wide. The kernel and products are always annotated.
        progressive: hide output cells the slide has not reached yet.

    Returns:
        The matplotlib Figure. Its suptitle reads ``"y[row, col] = sum of the N products = v"``.
    """
    step = conv_step_numbers(x, kernel, row, col, stride, padding)
    xp, y, products = step["x_padded"], step["y"], step["products"]
    kernel = np.asarray(kernel, dtype=np.float64)
    kh, kw = kernel.shape
    ho, wo = y.shape
    if annotate is None:
        annotate = max(xp.shape) <= 12
    fig, axes = plt.subplots(1, 4, figsize=(10, 3.4), gridspec_kw={
        "width_ratios": [_ratio(xp.shape[1]), _ratio(kw), _ratio(kw), _ratio(wo)]})
    ax_x, ax_k, ax_p, ax_y = axes
    pad_note = f", zero padding {padding}" if padding else ""
    _draw_grid(ax_x, xp, norm=_symmetric_norm(xp), annotate=annotate, pad_border=padding,
               fontsize=8 if xp.shape[1] > 7 else 9,
               title=f"input x ({x.shape[0]}x{x.shape[1]}{pad_note})")
    _outline(ax_x, step["top"], step["left"], kh, kw)
    _draw_grid(ax_k, kernel, norm=_symmetric_norm(kernel), title=f"kernel ({kh}x{kw})")
    _draw_grid(ax_p, products, norm=_symmetric_norm(products),
               title="window x kernel\n(element by element)")
    _outline(ax_p, 0, 0, kh, kw)
    hidden = None
    if progressive:
        order = np.arange(ho * wo).reshape(ho, wo)
        hidden = order > row * wo + col
    _draw_grid(ax_y, y, norm=_symmetric_norm(y), annotate=annotate, hidden=hidden,
               title=f"output y ({ho}x{wo}), stride {stride}")
    _outline(ax_y, row, col, 1, 1)
    ax_p.set_xlabel(f"sum = {format_number(step['value'])}", color=HIGHLIGHT, fontsize=11,
                    fontweight="bold")
    # The arrow enters the output cell from below: in reading order the cells below the current
    # one are not computed yet (blank), so it crosses no numbers.
    arrow = ConnectionPatch(xyA=(kw - 0.5, kh - 0.5), coordsA=ax_p.transData,
                            xyB=(col, row + 0.5), coordsB=ax_y.transData,
                            arrowstyle="-|>", color=HIGHLIGHT, lw=2, mutation_scale=15,
                            connectionstyle="arc3,rad=0.25", zorder=6)
    fig.add_artist(arrow)
    fig.suptitle(f"y[{row}, {col}] = sum of the {kh * kw} products = {format_number(step['value'])}",
                 fontsize=12)
    # Fixed margins instead of tight_layout: this figure is redrawn on every slider move.
    fig.subplots_adjust(left=0.03, right=0.99, bottom=0.13, top=0.8, wspace=0.25)
    return fig


def show_output_size_1d(settings, *, title="Where the windows fit along one axis"):
    """Each setting drawn as a strip of cells with every window position below it.

    Real pixels are labelled with their index; grey cells labelled "pad" are zero padding
    (named rather than shown as their value 0, which would read like pixel index 0); windows
    are bars labelled with the output index they produce; cells no window reaches (because the
    next stride step would run off the end) are hatched. The count of bars is
    ``floor((H + 2P - k) / s) + 1`` (lesson 00's notation).

    Args:
        settings: a list of ``(size, kernel, stride, padding)`` tuples of ints.
        title: figure title.

    Returns:
        The matplotlib Figure, one row per setting.
    """
    rows = []
    for size, k, s, p in settings:
        n_out = conv_output_size(size, k, s, p)
        if n_out < 1:
            raise ValueError(f"size {size}, kernel {k}, stride {s}, padding {p}: no window fits")
        levels = min(int(np.ceil(k / s)), n_out)
        rows.append((size, k, s, p, n_out, levels))
    heights = [levels + 2.2 for *_, levels in rows]
    width = max(size + 2 * p for size, _, _, p, _, _ in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(min(10, 1.2 + 0.42 * width), 0.36 * sum(heights) + 0.5),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, (size, k, s, p, n_out, levels) in zip(axes[:, 0], rows):
        total = size + 2 * p
        reached = (n_out - 1) * s + k
        for c in range(total):
            is_pad = c < p or c >= p + size
            ax.add_patch(Rectangle((c, 0), 1, 1, facecolor=_PAD_COLOR if is_pad else "white",
                                   edgecolor="black", lw=0.8, hatch="///" if c >= reached else None))
            ax.text(c + 0.5, 0.5, "pad" if is_pad else str(c - p), ha="center", va="center",
                    fontsize=8, color="0.3" if is_pad else "black")
        for t in range(n_out):
            level = t % levels
            y0 = -0.9 - level * 0.9
            ax.add_patch(Rectangle((t * s + 0.08, y0), k - 0.16, 0.65, facecolor=colors(t % 10),
                                   alpha=0.75, edgecolor="none"))
            ax.text(t * s + k / 2, y0 + 0.32, f"y[{t}]", ha="center", va="center", fontsize=8)
        formula = (f"H={size}, k={k}, s={s}, P={p}:  floor(({size} + 2*{p} - {k}) / {s}) + 1 "
                   f"= {n_out} output{'s' if n_out != 1 else ''}")
        ax.text(0, 1.3, formula, fontsize=9, va="bottom")
        ax.set_xlim(-0.2, width + 0.2)
        ax.set_ylim(-0.9 * levels - 0.2, 2.0)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _kernels_2d(kernels):
    kernels = np.asarray(kernels, dtype=np.float64)
    if kernels.ndim == 4:  # (C_out, 1, kH, kW), a Conv2d weight
        kernels = kernels[:, 0]
    return kernels


def show_feature_maps(image, maps, kernels=None, titles=None, *, cmap="RdBu_r"):
    """A digit and what several filters make of it: kernel on top, feature map below.

    Args:
        image: ``(H, W)`` or ``(1, H, W)``, the input.
        maps: ``(M, H_out, W_out)`` or ``(1, M, H_out, W_out)``, the outputs of M filters
            (e.g. ``Conv2d(1, M, ...).forward(x)``).
        kernels: ``(M, kH, kW)`` or a Conv2d weight ``(M, 1, kH, kW)``, drawn with their
            numbers above the maps; None draws no kernels.
        titles: M names, e.g. ``["vertical edges", ...]``.
        cmap: colormap for the kernels and maps (centred on 0: red positive, blue negative).

    Returns:
        The matplotlib Figure.
    """
    image = np.asarray(image, dtype=np.float64)
    image = image[0] if image.ndim == 3 else image
    maps = np.asarray(maps, dtype=np.float64)
    maps = maps[0] if maps.ndim == 4 else maps
    m = len(maps)
    titles = titles or [f"filter {i}" for i in range(m)]
    nrows = 1 if kernels is None else 2
    fig, axes = plt.subplots(nrows, m + 1, figsize=(min(10, 2.1 * (m + 1)), 2.3 * nrows + 0.3),
                             squeeze=False, gridspec_kw={"height_ratios": [0.8, 1] if nrows == 2 else [1]})
    ax_img = axes[-1, 0]
    ax_img.imshow(image, cmap="gray_r")
    ax_img.set_title("input", fontsize=10)
    ax_img.axis("off")
    if kernels is not None:
        kernels = _kernels_2d(kernels)
        axes[0, 0].axis("off")
        axes[0, 0].text(0.5, 0.5, "kernels\n(red +, blue -)", ha="center", va="center", fontsize=10,
                        transform=axes[0, 0].transAxes)
        for i in range(m):
            _draw_grid(axes[0, i + 1], kernels[i], norm=_symmetric_norm(kernels[i]), cmap=cmap,
                       fontsize=8, title=titles[i])
            axes[0, i + 1].set_xticks([])
            axes[0, i + 1].set_yticks([])
    for i in range(m):
        ax = axes[-1, i + 1]
        shown = ax.imshow(maps[i], cmap=cmap, norm=_symmetric_norm(maps[i]))
        if kernels is None:
            ax.set_title(titles[i], fontsize=10)
        ax.axis("off")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def show_detector_response(image, kernel, response, target=None, *, title=None):
    """A small test image, a kernel, and its response, every number written out.

    The response of a stride-1, unpadded correlation is drawn under the image shifted by half
    the kernel, so each output cell sits below the centre of the window it read.

    Args:
        image: ``(H, W)``, small (each pixel is annotated).
        kernel: ``(kH, kW)``.
        response: ``(H - kH + 1, W - kW + 1)``, the kernel's output on ``image``.
        target: an output cell ``(row, col)`` to outline, or None.
        title: figure title.

    Returns:
        The matplotlib Figure.
    """
    image = np.asarray(image, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    response = np.asarray(response, dtype=np.float64)
    h, w = image.shape
    kh, kw = kernel.shape
    fig = plt.figure(figsize=(10, 0.45 * (2 * h + 1.5)))
    grid = fig.add_gridspec(2, 2, width_ratios=[kw + 1, w], height_ratios=[h, h])
    ax_k = fig.add_subplot(grid[:, 0])
    _draw_grid(ax_k, kernel, norm=_symmetric_norm(kernel), fontsize=9, title="kernel")
    ax_x = fig.add_subplot(grid[0, 1])
    _draw_grid(ax_x, image, norm=Normalize(min(0.0, image.min()), max(1.0, image.max())), cmap="Greys",
               fontsize=7, title="test image")
    ax_y = fig.add_subplot(grid[1, 1], sharex=ax_x)
    # Place output (i, j) at the centre of its window, (i + kh//2, j + kw//2) in image coordinates.
    ax_y.imshow(response, cmap="RdBu_r", norm=_symmetric_norm(response),
                extent=(kw // 2 - 0.5, kw // 2 + response.shape[1] - 0.5,
                        kh // 2 + response.shape[0] - 0.5, kh // 2 - 0.5))
    strong = 0.6 * np.max(np.abs(response), initial=1e-12)
    for i in range(response.shape[0]):
        for j in range(response.shape[1]):
            v = response[i, j]
            ax_y.text(j + kw // 2, i + kh // 2, format_number(v), ha="center", va="center", fontsize=7,
                      color="white" if abs(v) > strong else "black")
    if target is not None:
        _outline(ax_y, target[0] + kh // 2, target[1] + kw // 2, 1, 1)
    ax_y.set_xlim(-0.5, w - 0.5)
    ax_y.set_ylim(h - 0.5, -0.5)
    ax_y.set_yticks([])
    ax_y.tick_params(length=0, labelbottom=False)
    ax_y.set_title("response: each output number sits under the centre of the window it read", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_responses(images, maps, titles=None, *, cmap="RdBu_r"):
    """Several images, each above the map one filter made of it.

    Args:
        images: ``(N, H, W)`` or ``(N, 1, H, W)``, the inputs.
        maps: ``(N, H_out, W_out)`` or ``(N, 1, H_out, W_out)``, one filter's output per image.
        titles: N titles, or None.
        cmap: colormap of the maps, centred on 0 (red positive, blue negative).

    Returns:
        The matplotlib Figure: inputs on the top row, maps (with colorbars) below.
    """
    images = np.asarray(images, dtype=np.float64)
    images = images[:, 0] if images.ndim == 4 else images
    maps = np.asarray(maps, dtype=np.float64)
    maps = maps[:, 0] if maps.ndim == 4 else maps
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(min(10, 2.3 * n), 4.4), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i], cmap="gray_r")
        axes[0, i].axis("off")
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=10)
        shown = axes[1, i].imshow(maps[i], cmap=cmap, norm=_symmetric_norm(maps[i]))
        axes[1, i].axis("off")
        fig.colorbar(shown, ax=axes[1, i], fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def show_channel_sum(x, weight, bias=None, out_channel=0):
    """How one output channel sums over the input channels.

    Row ``ci`` shows input channel ``x[ci]``, its kernel slice ``weight[out_channel, ci]`` and
    the map that slice alone produces; the last column adds those maps (and the bias) into
    ``y[out_channel]``. Stride 1, no padding.

    Args:
        x: ``(C_in, H, W)`` or ``(1, C_in, H, W)``, one example.
        weight: ``(C_out, C_in, kH, kW)``.
        bias: ``(C_out,)`` or None.
        out_channel: which output channel to explain.

    Returns:
        The matplotlib Figure.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x[0] if x.ndim == 4 else x
    weight = np.asarray(weight, dtype=np.float64)
    c_in = x.shape[0]
    if weight.ndim != 4 or weight.shape[1] != c_in:
        raise ValueError(f"weight must be (C_out, {c_in}, kH, kW) for an input with {c_in} channels, "
                         f"got {weight.shape}")
    kernels = weight[out_channel]
    partials = np.stack([_conv_single(x[ci], kernels[ci], 1, 0) for ci in range(c_in)])
    b = 0.0 if bias is None else float(np.asarray(bias)[out_channel])
    y = partials.sum(axis=0) + b
    fig = plt.figure(figsize=(10, 1.9 * c_in + 0.6))
    grid = fig.add_gridspec(c_in, 4, width_ratios=[x.shape[2], kernels.shape[2] + 1, partials.shape[2],
                                                    partials.shape[2] + 1])
    norm_x, norm_k = _symmetric_norm(x), _symmetric_norm(kernels)
    norm_y = _symmetric_norm(partials, y)
    for ci in range(c_in):
        ax = fig.add_subplot(grid[ci, 0])
        _draw_grid(ax, x[ci], norm=norm_x, fontsize=8, title=f"x[{ci}]  (input channel {ci})")
        ax = fig.add_subplot(grid[ci, 1])
        _draw_grid(ax, kernels[ci], norm=norm_k, fontsize=8, title=f"W[{out_channel}, {ci}]")
        ax = fig.add_subplot(grid[ci, 2])
        _draw_grid(ax, partials[ci], norm=norm_y, fontsize=8,
                   title=f"x[{ci}] slid with W[{out_channel}, {ci}]")
    ax = fig.add_subplot(grid[:, 3])
    bias_text = f" + b[{out_channel}] (= {format_number(b)})" if bias is not None else ""
    _draw_grid(ax, y, norm=norm_y, fontsize=9,
               title=f"y[{out_channel}] = sum of the\n{c_in} maps on the left{bias_text}")
    fig.tight_layout()
    return fig
