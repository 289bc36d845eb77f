"""Figures of what a trained CNN holds: its learned kernels (filters) and the feature maps
they make of an image (lesson 07).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_filters", "plot_feature_maps"]


def plot_filters(weight, *, title="learned filters", in_channel=0, vmax=None):
    """Every kernel of a conv weight ``(C_out, C_in, kH, kW)`` (input channel ``in_channel``),
    red for positive and blue for negative weights, on one colour scale so they compare."""
    weight = np.asarray(weight)
    kernels = weight[:, in_channel]
    n = len(kernels)
    cols = min(n, 8)
    rows = -(-n // cols)
    vmax = float(np.abs(kernels).max()) if vmax is None else vmax
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols + 0.8, 1.3 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, kernel) in enumerate(zip(axes.flat, kernels)):
        image = ax.imshow(kernel, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(f"filter {i}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    fig.suptitle(title, fontsize=10)
    return fig


def plot_feature_maps(image, stages, channel, *, title=None):
    """An image and, for one channel, what each stage of the network made of it.

    image:   (H, W) the input
    stages:  ``{name: (C, H', W') array}`` in order (e.g. conv output, after ReLU, after pooling)
    channel: which channel of every stage to draw
    """
    fig, axes = plt.subplots(1, 1 + len(stages), figsize=(2.3 * (1 + len(stages)), 2.6))
    axes[0].imshow(np.asarray(image), cmap="gray_r")
    axes[0].set_title("input", fontsize=9)
    for ax, (name, maps) in zip(axes[1:], stages.items()):
        m = np.asarray(maps)[channel]
        v = float(np.abs(m).max()) or 1.0
        ax.imshow(m, cmap="RdBu_r", vmin=-v, vmax=v)
        ax.set_title(f"{name}\n{m.shape[0]}x{m.shape[1]}, max {m.max():.2f}", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"channel {channel}", fontsize=10)
    fig.tight_layout()
    return fig
