"""Figures for lesson 03: logits -> softmax probabilities -> the gradient p - t (t: the one-hot target).

    from cnn_lib import viz
    fig = viz.plot_softmax_pipeline(logits, label, image=digit)    # three bar charts (+ the digit)
    fig = viz.plot_gradient_vs_logit(logits, label)                # sweep the correct class's logit
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..kernels.vectorized import log_softmax, softmax

__all__ = ["plot_softmax_pipeline", "plot_gradient_vs_logit"]

TRUE_COLOR = "tab:orange"
OTHER_COLOR = "tab:blue"


def _one_example(logits, label, where):
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 2 and z.shape[0] == 1:
        z = z[0]
    if z.ndim != 1 or z.size < 2:
        raise ValueError(f"{where}: logits must be one example's scores, shape (K,) or (1, K) with "
                         f"K >= 2, got shape {np.shape(logits)}")
    if not (isinstance(label, (int, np.integer)) and 0 <= label < z.size):
        raise ValueError(f"{where}: label must be an int class index in [0, {z.size}), got {label!r}")
    return z, int(label)


def _bars(ax, values, label, title, fmt, ylabel):
    k = len(values)
    colors = [TRUE_COLOR if c == label else OTHER_COLOR for c in range(k)]
    ax.bar(np.arange(k), values, color=colors, edgecolor="0.3", linewidth=0.5)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(np.arange(k))
    ax.set_xlabel("class")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    low, high = min(0.0, float(values.min())), max(0.0, float(values.max()))
    pad = 0.35 * max(high - low, 1e-12)
    ax.set_ylim(low - (pad if low < 0 else 0), high + pad)
    for c, v in enumerate(values):
        ax.annotate(fmt.format(v), (c, v), xytext=(0, 3 if v >= 0 else -3), textcoords="offset points",
                    ha="center", va="bottom" if v >= 0 else "top", fontsize=7, rotation=90 if k > 5 else 0)


def plot_softmax_pipeline(logits, label, image=None, figsize=(10, 3.2), title=None):
    """Bar charts of one example's logits z, its probabilities p = softmax(z) and the gradient
    dL/dz = p - t of the cross-entropy loss L = -log p[label] (t: the one-hot target of
    ``label``). The true class is orange.

    logits: (K,) or (1, K) raw scores
    label:  int, the true class in [0, K)
    image:  optional (H, W) or (1, H, W) picture of the example, shown first (dark ink on a light
            background, like the course's other digit pictures)
    figsize, title: figure size in inches and an optional overall title
    returns: the matplotlib Figure; every bar carries its number (2 decimals for z, 3 for p, p - t)
    """
    z, label = _one_example(logits, label, "plot_softmax_pipeline")
    p = softmax(z)
    grad = p.copy()
    grad[label] -= 1.0
    loss = -float(log_softmax(z)[label])
    panels = 3 + (image is not None)
    fig, axes = plt.subplots(1, panels, figsize=figsize,
                             gridspec_kw={"width_ratios": ([0.7] if image is not None else []) + [1, 1, 1]})
    axes = list(np.atleast_1d(axes))
    if image is not None:
        img = np.asarray(image)
        img = img.reshape(img.shape[-2:])
        ax = axes.pop(0)
        ax.imshow(img, cmap="gray_r")
        ax.set_title(f"input (label {label})", fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    _bars(axes[0], z, label, "logits z", "{:.2f}", "z")
    _bars(axes[1], p, label, "p = softmax(z)", "{:.3f}", "probability")
    _bars(axes[2], grad, label, "dL/dz = p − t", "{:.3f}", "gradient")
    axes[1].set_ylim(0, max(1.0, float(p.max()) * 1.2))
    fig.suptitle(title or f"loss = −log p[{label}] = {loss:.3f}   (orange: the true class)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_gradient_vs_logit(logits, label, values=None, figsize=(10, 3.6)):
    """How p[label], the loss and the gradient p - t change as the correct class's logit grows,
    the other logits staying fixed.

    logits: (K,) or (1, K) raw scores of one example (their current value is marked)
    label:  int, the true class in [0, K)
    values: (M,) the values the correct logit z[label] is swept through; default 61 values
            from z[label] - 8 to z[label] + 8
    figsize: figure size in inches
    returns: the matplotlib Figure with two panels: left, p[label] and the loss; right, every
             class's gradient dL/dz[c] (the true class's is p[label] - 1, rising to 0)
    """
    z, label = _one_example(logits, label, "plot_gradient_vs_logit")
    if values is None:
        values = np.linspace(z[label] - 8, z[label] + 8, 61)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"plot_gradient_vs_logit: values must be a 1-D sweep, got shape {values.shape}")
    sweep = np.repeat(z[None, :], values.size, axis=0)
    sweep[:, label] = values
    logp = log_softmax(sweep)
    p = np.exp(logp)
    grad = p.copy()
    grad[:, label] -= 1.0

    fig, (left, right) = plt.subplots(1, 2, figsize=figsize)
    left.plot(values, p[:, label], color=TRUE_COLOR, lw=2.5, label=f"p[{label}] (left axis)")
    left.set_ylim(-0.03, 1.03)
    left.set_ylabel(f"probability p[{label}]")
    left.set_xlabel(f"correct logit z[{label}]")
    left.set_title("true class: probability and loss", fontsize=11)
    loss_ax = left.twinx()
    loss_ax.plot(values, -logp[:, label], color="k", lw=1.5, ls="--",
                 label=f"loss −log p[{label}] (right axis)")
    loss_ax.set_ylabel("loss")
    loss_ax.set_ylim(bottom=0)
    handles = left.get_legend_handles_labels()[0] + loss_ax.get_legend_handles_labels()[0]
    left.legend(handles=handles, fontsize=9, loc="upper center")
    for c in range(z.size):
        if c == label:
            continue
        right.plot(values, grad[:, c], color=OTHER_COLOR, lw=1, alpha=0.6,
                   label="other classes: p[c]" if c == (1 if label == 0 else 0) else None)
    right.plot(values, grad[:, label], color=TRUE_COLOR, lw=2.5, label=f"true class: p[{label}] − 1")
    right.axhline(0, color="0.3", lw=0.8)
    right.set_ylim(-1.05, 1.05)
    right.set_xlabel(f"correct logit z[{label}]")
    right.set_ylabel("dL/dz[c]")
    right.set_title("gradient p − t: big while wrong, → 0 once right", fontsize=11)
    right.legend(fontsize=9, loc="upper left")
    for ax in (left, right):
        ax.axvline(z[label], color="0.5", ls=":", lw=1)
        ax.grid(alpha=0.3)
    right.annotate(f"now: z[{label}] = {z[label]:.2f}", (z[label], -0.8), xytext=(4, 0),
                   textcoords="offset points", fontsize=8, color="0.35")
    fig.tight_layout()
    return fig
