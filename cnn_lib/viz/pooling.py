"""Figures for lesson 05 (pooling): where each window's gradient goes.

The routing helpers (:func:`pool_routes`, :func:`routed_gradient`) say, for every output cell of
a pooling layer, which input cells receive its upstream gradient and with what weight. The
figures draw those routes: :func:`plot_pool_routing` (the picture behind the pooling widget),
:func:`plot_tie_windows` (which 2x2 windows of a real image tie) and :func:`plot_max_kink`
(why the max has no derivative at a tie).
"""

from __future__ import annotations

import functools

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import ConnectionPatch, Rectangle

from ..kernels import conv_output_hw

__all__ = [
    "pool_routes",
    "routed_gradient",
    "tied_windows",
    "plot_pool_routing",
    "plot_tie_windows",
    "plot_max_kink",
]

_SELECTED = "#d62728"  # the window/route the reader is looking at
_OTHER = "#7f7f7f"


def _pair(value, name):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def pool_routes(x, kernel=2, stride=None, mode="max", tie_rule="first"):
    """For every pooling window, the input cells its gradient flows to, and the weights.

    x:        (H, W) array, one channel
    kernel:   int or (kH, kW); stride: int, (sH, sW) or None (= kernel, windows tile)
    mode:     "max" or "avg"
    tie_rule: for "max" only: "first" (cnn_lib and PyTorch: the first maximal element in
              row-major order takes the whole gradient) or "all" (the tutorial's rule: every
              element equal to the max takes the whole gradient)
    returns:  (y, routes): y (H_out, W_out) the pooled values; routes a dict
              {(i, j): [(a, b, weight), ...]}: output (i, j) sends weight * dy[i, j] to x[a, b]
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"pool_routes: x must be one (H, W) channel, got shape {x.shape}")
    kh, kw = _pair(kernel, "kernel")
    sh, sw = (kh, kw) if stride is None else _pair(stride, "stride")
    if mode not in ("max", "avg"):
        raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
    if tie_rule not in ("first", "all"):
        raise ValueError(f"tie_rule must be 'first' or 'all', got {tie_rule!r}")
    h, w = x.shape
    if kh > h or kw > w:
        raise ValueError(f"window {kh}x{kw} is larger than the input {h}x{w}")
    ho, wo = conv_output_hw((h, w), (kh, kw), (sh, sw))
    y = np.zeros((ho, wo))
    routes = {}
    for i in range(ho):
        for j in range(wo):
            window = x[i * sh : i * sh + kh, j * sw : j * sw + kw]
            cells = [(i * sh + p, j * sw + q) for p in range(kh) for q in range(kw)]
            if mode == "avg":
                y[i, j] = window.mean()
                routes[i, j] = [(a, b, 1.0 / (kh * kw)) for a, b in cells]
                continue
            y[i, j] = window.max()
            winners = [(a, b) for a, b in cells if x[a, b] == y[i, j]]  # row-major order
            if tie_rule == "first":
                winners = winners[:1]
            routes[i, j] = [(a, b, 1.0) for a, b in winners]
    return y, routes


def routed_gradient(routes, dy, x_shape):
    """dx (H, W): every output (i, j) adds weight * dy[i, j] to each of its routed inputs.

    routes: from :func:`pool_routes`; dy: (H_out, W_out) upstream gradient; x_shape: (H, W)
    """
    dx = np.zeros(x_shape)
    for (i, j), targets in routes.items():
        for a, b, weight in targets:
            dx[a, b] += weight * dy[i, j]
    return dx


def tied_windows(x, kernel=2):
    """Boolean (H // k, W // k) map: True where a non-overlapping k x k window's maximum is
    reached by two or more of its elements. x: (H, W); trailing rows/columns are dropped."""
    x = np.asarray(x)
    k = int(kernel)
    h, w = (x.shape[0] // k) * k, (x.shape[1] // k) * k
    blocks = x[:h, :w].reshape(h // k, k, w // k, k).transpose(0, 2, 1, 3).reshape(h // k, w // k, k * k)
    return (blocks == blocks.max(axis=-1, keepdims=True)).sum(axis=-1) > 1


def _fmt(v):
    """Short text for a number in a grid cell: integers without decimals."""
    v = float(v)
    if abs(v - round(v)) < 1e-9:
        return str(int(round(v)))
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@functools.lru_cache(maxsize=8)
def _colormap(name):
    return plt.get_cmap(name)  # a fresh copy each call otherwise: cache it


def _is_dark(cmap, vmin, vmax, v):
    """Whether a cell of value v is dark enough to need light text."""
    shade = _colormap(cmap)((v - vmin) / (vmax - vmin) if vmax > vmin else 0.0)
    return 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.5


def _grid(ax, values, cmap, vmin, vmax, title, fontsize):
    """Draw a small annotated grid: each cell shows its number."""
    ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
    for (a, b), v in np.ndenumerate(values):
        dark = _is_dark(cmap, vmin, vmax, v)
        ax.text(b, a, _fmt(v), ha="center", va="center", fontsize=fontsize,
                color="white" if dark else "black")
    h, w = values.shape
    ax.set_xticks(range(w))
    ax.set_yticks(range(h))
    ax.tick_params(length=0, labelsize=8)
    # cell borders as two line collections (cheaper than minor ticks + grid)
    ax.vlines(np.arange(1, w) - 0.5, -0.5, h - 0.5, colors="#c8c8c8", linewidth=0.8)
    ax.hlines(np.arange(1, h) - 0.5, -0.5, w - 0.5, colors="#c8c8c8", linewidth=0.8)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_title(title, fontsize=10)


def plot_pool_routing(x, kernel=2, stride=None, mode="max", dy=None, window=(0, 0),
                      tie_rule="first", only_selected=False, figsize=(10, 3.8)):
    """Three panels: the input x, the pooled output y (with its upstream gradient dy) and the
    input gradient dx. Arrows go from the selected output cell to the input cells that receive
    its gradient; every window's routed inputs are marked with a dot in the x panel.

    x:             (H, W) one channel (small: every number is printed)
    kernel:        int or (kH, kW); stride: int, pair or None (= kernel)
    mode:          "max" or "avg"; tie_rule: "first" (cnn_lib) or "all" (the tutorial's rule)
    dy:            (H_out, W_out) upstream gradient; default 1, 2, 3, ... in row-major order,
                   so every number in dx can be traced to the outputs that sent it
    window:        (i, j) the output cell whose route is drawn with arrows
    only_selected: if True, dy is zero everywhere except at ``window``
    returns:       the Figure
    """
    x = np.asarray(x, dtype=np.float64)
    y, routes = pool_routes(x, kernel, stride, mode, tie_rule)
    kh, kw = _pair(kernel, "kernel")
    sh, sw = (kh, kw) if stride is None else _pair(stride, "stride")
    ho, wo = y.shape
    i, j = window
    if not (0 <= i < ho and 0 <= j < wo):
        raise ValueError(f"window {window} is outside the {ho}x{wo} output")
    dy = np.arange(1, ho * wo + 1, dtype=np.float64).reshape(ho, wo) if dy is None else np.asarray(dy, float)
    if dy.shape != y.shape:
        raise ValueError(f"dy must have the output's shape {y.shape}, got {dy.shape}")
    if only_selected:
        mask = np.zeros_like(dy)
        mask[i, j] = 1.0
        dy = dy * mask
    dx = routed_gradient(routes, dy, x.shape)

    fig, axes = plt.subplots(1, 3, figsize=figsize, layout="constrained",
                             gridspec_kw={"width_ratios": [x.shape[1], max(wo, 2), x.shape[1]]})
    ax_x, ax_y, ax_dx = axes
    big = 10 if max(x.shape) <= 8 else 7
    vmin, vmax = min(x.min(), 0), max(x.max(), 1) * 1.6
    _grid(ax_x, x, "Greys", vmin, vmax, f"input x ({x.shape[0]}x{x.shape[1]})", big)
    # every window, lightly; the selected one in red
    for (a, b) in routes:
        if (a, b) == (i, j):
            continue
        ax_x.add_patch(Rectangle((b * sw - 0.5, a * sh - 0.5), kw, kh, fill=False,
                                 edgecolor=_OTHER, linewidth=1, linestyle="--"))
    ax_x.add_patch(Rectangle((j * sw - 0.5, i * sh - 0.5), kw, kh, fill=False,
                             edgecolor=_SELECTED, linewidth=2.5))
    for (a, b), targets in routes.items():
        color = _SELECTED if (a, b) == (i, j) else "#1f77b4"
        for p, q, _ in targets:
            if mode == "max":
                ax_x.plot(q + 0.32, p - 0.3, "o", color=color, markersize=5)

    op = "max" if mode == "max" else "mean"
    _grid(ax_y, y, "Greys", vmin, vmax,
          f"y = {op} of each window\nkernel {kh}x{kw}, stride {sh}x{sw}", big)
    for (a, b), g in np.ndenumerate(dy):
        dark = _is_dark("Greys", vmin, vmax, y[a, b])
        # white and bold on a dark cell, dark green on a light one: readable on every grey
        ax_y.text(b, a + 0.33, f"dy={_fmt(g)}", ha="center", va="center", fontsize=8,
                  color="white" if dark else "#11601a", fontweight="bold")
    ax_y.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=_SELECTED, linewidth=2.5))

    limit = max(np.abs(dx).max(), 1e-12)
    _grid(ax_dx, dx, "RdBu_r", -limit, limit,
          f"dx: sum(dx) = {_fmt(dx.sum())}, sum(dy) = {_fmt(dy.sum())}", big)
    uncovered = np.ones(x.shape, dtype=bool)
    for a in range(ho):
        for b in range(wo):
            uncovered[a * sh : a * sh + kh, b * sw : b * sw + kw] = False
    for a, b in zip(*np.nonzero(uncovered)):
        ax_dx.add_patch(Rectangle((b - 0.5, a - 0.5), 1, 1, fill=True, facecolor="#ffe9a8",
                                  edgecolor="none", alpha=0.8, zorder=0.5))
        ax_dx.text(b, a + 0.32, "no window", ha="center", va="center", fontsize=5.5, color="#8c6d00")
    for p, q, _weight in routes[i, j]:
        ax_dx.add_patch(Rectangle((q - 0.5, p - 0.5), 1, 1, fill=False, edgecolor=_SELECTED, linewidth=2))
        arrow = ConnectionPatch(xyA=(j + 0.3, i), coordsA=ax_y.transData, xyB=(q - 0.47, p),
                                coordsB=ax_dx.transData, arrowstyle="-|>", color=_SELECTED,
                                linewidth=1.2 if mode == "max" else 0.7, alpha=0.8,
                                mutation_scale=10 if mode == "max" else 6)
        fig.add_artist(arrow)
    if mode == "avg":
        rule = f"spread evenly: dy/{kh * kw} to each of the {kh * kw} inputs of its window"
    elif tie_rule == "first":
        rule = "to its max (first one on a tie); dots: every window's winner"
    else:
        rule = "to EVERY element equal to the max (tutorial); dots: all receivers"
    fig.suptitle(f"output ({i}, {j}) sends its gradient dy = {_fmt(dy[i, j])} {rule}", fontsize=10)
    return fig


_TIE_COLOR = "tab:orange"


def plot_tie_windows(maps, titles, kernel=2, figsize=(10, 3.6)):
    """Each map with its tied k x k windows (max reached twice or more) outlined in orange.

    The maps are drawn with ``gray_r`` (large values dark: ink is dark on white paper, as in the
    digit figures of lesson 00). Tied windows are outlined, not tinted, so the grey levels
    underneath stay readable; each outline is drawn slightly inside its window so that
    neighbouring tied windows show as separate squares.

    maps:    list of (H, W) arrays (an image, a feature map, ...)
    titles:  list of str, one per map (the fraction of tied windows is appended)
    kernel:  window size k (non-overlapping windows, stride k)
    figsize: (width, height) in inches
    Returns the Figure; axes[i].patches holds one Rectangle per tied window of maps[i].
    """
    fig, axes = plt.subplots(1, len(maps), figsize=figsize, squeeze=False, layout="constrained")
    inset = 0.12
    for ax, m, title in zip(axes[0], maps, titles):
        ties = tied_windows(m, kernel)
        ax.imshow(m, cmap="gray_r")
        for a, b in zip(*np.nonzero(ties)):
            ax.add_patch(Rectangle((b * kernel - 0.5 + inset, a * kernel - 0.5 + inset),
                                   kernel - 2 * inset, kernel - 2 * inset, fill=False,
                                   edgecolor=_TIE_COLOR, linewidth=1.2))
        ax.set_title(f"{title}\n{ties.mean():.0%} of {kernel}x{kernel} windows tie", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    legend = [Rectangle((0, 0), 1, 1, fill=False, edgecolor=_TIE_COLOR, linewidth=1.2)]
    fig.legend(legend, [f"tied {kernel}x{kernel} window: its maximum is reached by two or more elements"],
               loc="outside upper center", fontsize=9, frameon=False)
    return fig


def plot_max_kink(others=0.0, span=1.0, figsize=(8, 3.2)):
    """y(t) = max(t, others): one window element moved by t while the rest stay at ``others``.

    Left: the curve, with the two one-sided slopes at the tie t = others (0 from the left, 1 from
    the right) and a few other lines through the kink whose slopes lie in between (the
    subgradients). Right: the centred finite difference (y(t+h) - y(t-h)) / 2h for a few h, which
    reports 0.5 exactly at the tie, a number no single-element rule produces.
    """
    t = np.linspace(others - span, others + span, 401)
    y = np.maximum(t, others)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=figsize)
    ax.plot(t, y, color="black", linewidth=2.5, label="y = max(t, rest of window)")
    for slope, style in [(0.0, ":"), (0.25, "--"), (0.5, "--"), (0.75, "--"), (1.0, ":")]:
        ax.plot(t, others + slope * (t - others), style, linewidth=1,
                color=_SELECTED if slope in (0.0, 1.0) else _OTHER)
    ax.annotate("slope 0 from the left", (others - 0.6 * span, others), xytext=(0, 12),
                textcoords="offset points", fontsize=8, ha="center")
    ax.annotate("slope 1 from the right", (others + 0.55 * span, others + 0.55 * span),
                xytext=(-40, 10), textcoords="offset points", fontsize=8, ha="center")
    ax.set_xlabel("t = value of the nudged element")
    ax.set_ylabel("window max y")
    ax.set_title("at the tie: any slope in [0, 1] touches from below", fontsize=10)
    ax.set_ylim(others - 0.6 * span, others + span)

    hs = np.array([0.4, 0.2, 0.1]) * span
    for h in hs:
        fd = (np.maximum(t + h, others) - np.maximum(t - h, others)) / (2 * h)
        ax2.plot(t, fd, label=f"h = {h:g}")
    ax2.axvline(others, color=_OTHER, linewidth=0.8)
    ax2.set_xlabel("t")
    ax2.set_ylabel("(y(t+h) - y(t-h)) / 2h")
    ax2.set_title("centred differences: 0.5 at the tie, for every h", fontsize=10)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig
