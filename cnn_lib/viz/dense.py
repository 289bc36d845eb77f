"""Figures for lesson 04 (fully connected layer).

* :func:`plot_outer_products` - a batch's weight gradient dW = dy^T x drawn as the sum of one
  outer product dy[n]^T x[n] per example.
* :func:`plot_weight_templates` - the rows of a Linear(784, K) weight (or of its gradient)
  reshaped into 28x28 images, one per class.
* :func:`plot_flatten_order` - where each (c, h, w) element of a small feature map lands in the
  flat vector, for the (C, H, W) order of cnn_lib and the (H, W, C) order of the tutorial.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_outer_products", "plot_weight_templates", "plot_flatten_order"]


def _fmt(v):
    v = float(v)
    if abs(v - round(v)) < 1e-9:
        return str(int(round(v)))
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _annotated(ax, m, limit, fontsize=9):
    ax.imshow(m, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for (a, b), v in np.ndenumerate(m):
        ax.text(b, a, _fmt(v), ha="center", va="center", fontsize=fontsize,
                color="white" if abs(v) > 0.6 * limit else "black")


def plot_outer_products(x, dy, figsize=(10, 3.2)):
    """dW = dy^T x as a sum over the batch of outer products dy[n]^T x[n].

    x:  (N, in) a small batch of layer inputs (N <= 4, in <= 8: every number is printed)
    dy: (N, out) the upstream gradient for the same batch
    One panel per example n: the (out, in) table dy[n, o] * x[n, i], with dy[n] written down
    the left edge and x[n] along the top; the last panel is their sum, dy^T x.
    returns: the Figure
    """
    x, dy = np.asarray(x, float), np.asarray(dy, float)
    if x.ndim != 2 or dy.ndim != 2 or x.shape[0] != dy.shape[0]:
        raise ValueError(f"expected x (N, in) and dy (N, out) with the same N, got {x.shape}, {dy.shape}")
    n = x.shape[0]
    terms = [np.outer(dy[k], x[k]) for k in range(n)]
    total = dy.T @ x
    limit = max(np.abs(total).max(), max(np.abs(t).max() for t in terms), 1e-12)
    fig, axes = plt.subplots(1, n + 1, figsize=figsize)
    for k, (ax, term) in enumerate(zip(axes, terms)):
        _annotated(ax, term, limit)
        ax.set_xticks(range(x.shape[1]), [_fmt(v) for v in x[k]], fontsize=8)
        ax.set_yticks(range(dy.shape[1]), [_fmt(v) for v in dy[k]], fontsize=8)
        ax.xaxis.tick_top()
        ax.set_xlabel(f"x[{k}] along the top\ndy[{k}] down the side", fontsize=8)
        ax.set_title(f"example n={k}: dy[{k}]ᵀ x[{k}]", fontsize=10, pad=18)
        sign = "+" if k < n - 1 else "="
        ax.text(1.08, 0.5, sign, transform=ax.transAxes, fontsize=18, ha="center", va="center")
    ax = axes[-1]
    _annotated(ax, total, limit)
    ax.set_xticks(range(x.shape[1]), [f"i={i}" for i in range(x.shape[1])], fontsize=8)
    ax.set_yticks(range(dy.shape[1]), [f"o={o}" for o in range(dy.shape[1])], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_title("dW = dyᵀ x  (out, in)", fontsize=10, pad=18)
    ax.set_xlabel("sum of the tables", fontsize=8)
    fig.tight_layout()
    return fig


def plot_weight_templates(weight, image_shape=(28, 28), titles=None, suptitle=None,
                          figsize=(10, 4.4), ncols=5):
    """Each row of a (K, H*W) matrix shown as an H x W image, on one shared red/blue scale.

    weight:      (K, H*W), e.g. a Linear(784, 10) weight (out, in) or its gradient
    image_shape: (H, W) the rows are reshaped to
    titles:      K strings (default "class 0", "class 1", ...)
    suptitle:    a title for the whole figure
    Red = positive (pixels that push that output up), blue = negative, white = 0.
    returns: the Figure
    """
    weight = np.asarray(weight, float)
    k = weight.shape[0]
    if weight.ndim != 2 or weight.shape[1] != image_shape[0] * image_shape[1]:
        raise ValueError(f"expected weight (K, {image_shape[0] * image_shape[1]}), got {weight.shape}")
    titles = [f"class {c}" for c in range(k)] if titles is None else titles
    nrows = int(np.ceil(k / ncols))
    limit = max(np.abs(weight).max(), 1e-12)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    image = None
    for c, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if c >= k:
            ax.axis("off")
            continue
        image = ax.imshow(weight[c].reshape(image_shape), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(titles[c], fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.8, label="value")
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


def plot_flatten_order(shape=(2, 2, 3), figsize=(10, 4)):
    """Where each element of a (C, H, W) map lands after flattening, in two orders.

    shape: (C, H, W) of a small feature map (C <= 4, C*H*W <= 24)
    Top: the C channels, each cell labelled with its (c, h, w) index, coloured by channel.
    Bottom: the flat vectors for cnn_lib's (C, H, W) order (x.reshape(N, -1)) and for the
    tutorial's (H, W, C) order (its arrays are (h, w, filters)); the label in each slot is the
    element that lands there.
    returns: the Figure
    """
    c_n, h_n, w_n = shape
    colors = plt.get_cmap("tab10")(np.arange(c_n))
    idx = np.arange(c_n * h_n * w_n).reshape(c_n, h_n, w_n)
    orders = {
        "cnn_lib: x.reshape(N, -1) of (N, C, H, W)  ->  channel by channel": idx.reshape(-1),
        "tutorial: input.flatten() of (H, W, C)  ->  pixel by pixel, channels interleaved":
            idx.transpose(1, 2, 0).reshape(-1),
    }
    fig = plt.figure(figsize=figsize)
    grid = fig.add_gridspec(3, max(c_n, 1), height_ratios=[1.6, 0.45, 0.45], hspace=1.0)
    for c in range(c_n):
        ax = fig.add_subplot(grid[0, c])
        ax.imshow(np.ones((h_n, w_n, 3)) * 0.6 + 0.4 * colors[c][:3], aspect="equal")
        for a in range(h_n):
            for b in range(w_n):
                ax.text(b, a, f"({c},{a},{b})", ha="center", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"channel c={c}  (cells: their (c, h, w) index)", fontsize=9, color=colors[c])
    for row, (title, flat) in enumerate(orders.items()):
        ax = fig.add_subplot(grid[row + 1, :])
        channel = flat // (h_n * w_n)
        ax.imshow((np.ones((1, flat.size, 3)) * 0.6 + 0.4 * colors[channel][None, :, :3]), aspect="auto")
        for k, e in enumerate(flat):
            c, rest = divmod(int(e), h_n * w_n)
            a, b = divmod(rest, w_n)
            ax.text(k, 0, f"{c},{a},{b}", ha="center", va="center", fontsize=7)
        ax.set_yticks([])
        ax.set_xticks(range(flat.size), [str(k) for k in range(flat.size)], fontsize=7)
        ax.set_title(title, fontsize=9, loc="left")
        if row == 1:
            ax.set_xlabel("position in the flat vector (what the Linear layer's input index i means)",
                          fontsize=8)
    return fig
