"""Figures for a first look at MNIST (lesson 00): digit grids, raw pixel values, class counts,
and what normalisation does to the pixels.

Images may be given as ``(N, 28, 28)`` or in the library's layout ``(N, 1, 28, 28)``; one image
as ``(28, 28)`` or ``(1, 28, 28)``. Every function returns the Figure it drew.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

__all__ = ["show_class_counts", "show_digits", "show_normalization", "show_pixel_values"]


def _images_2d(images) -> np.ndarray:
    """(N, 28, 28) or (N, 1, H, W) -> (N, H, W)."""
    images = np.asarray(images)
    if images.ndim == 4:
        if images.shape[1] != 1:
            raise ValueError(f"expected one-channel images (N, 1, H, W), got shape {images.shape}")
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W) or (N, 1, H, W), got {images.shape}")
    return images


def _image_2d(image) -> np.ndarray:
    """(H, W) or (1, H, W) -> (H, W)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2:
        raise ValueError(f"expected one image of shape (H, W) or (1, H, W), got {image.shape}")
    return image


def _value_range(images: np.ndarray) -> tuple[float, float]:
    """Raw pixels are drawn on their full 0..255 scale; floats on their own min..max."""
    if np.issubdtype(images.dtype, np.integer):
        return 0.0, 255.0
    return float(images.min()), float(images.max())


def show_digits(images, labels=None, *, predictions=None, ncols: int = 10, title: str | None = None,
                cmap: str = "gray_r", cell_size: float = 0.9):
    """A grid of digits, each titled with its label (and a prediction, when given).

    Args:
        images: ``(N, 28, 28)`` or ``(N, 1, 28, 28)``, raw uint8 pixels or floats.
        labels: ``(N,)`` ints, shown above each digit; None shows no labels.
        predictions: ``(N,)`` ints or None; when given each title reads "label / prediction"
            and wrong predictions are coloured red.
        ncols: digits per row.
        title: figure title.
        cmap: colormap; the default draws ink dark on white paper.
        cell_size: inches per digit.

    Returns:
        The matplotlib Figure.
    """
    images = _images_2d(images)
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    vmin, vmax = _value_range(images)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell_size, nrows * cell_size * 1.15 + 0.3),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(images[k], cmap=cmap, vmin=vmin, vmax=vmax)
        if labels is not None and predictions is not None:
            wrong = int(predictions[k]) != int(labels[k])
            ax.set_title(f"{int(labels[k])} / {int(predictions[k])}", fontsize=9,
                         color="red" if wrong else "black")
        elif labels is not None:
            ax.set_title(str(int(labels[k])), fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _format_pixel(value) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{float(value):.2f}"


def show_pixel_values(image, top: int = 9, left: int = 9, size: int = 10, *, title: str | None = None,
                      cmap: str = "gray_r"):
    """A digit next to a zoomed crop of it with every pixel's value written in its cell.

    Args:
        image: one image, ``(28, 28)`` or ``(1, 28, 28)``, uint8 or float.
        top, left: row and column (0-based) of the crop's top-left pixel.
        size: the crop is ``size x size`` pixels.
        title: figure title.
        cmap: colormap for both panels.

    Returns:
        The matplotlib Figure: left the whole image with the crop outlined, right the crop
        with numbers and a colorbar.
    """
    image = _image_2d(image)
    h, w = image.shape
    if not (0 <= top and 0 <= left and top + size <= h and left + size <= w):
        raise ValueError(f"crop rows {top}..{top + size - 1}, cols {left}..{left + size - 1} "
                         f"does not fit in a {h}x{w} image")
    crop = image[top:top + size, left:left + size]
    vmin, vmax = _value_range(image)
    fig, (ax_full, ax_crop) = plt.subplots(1, 2, figsize=(9.5, 4.6),
                                           gridspec_kw={"width_ratios": [1, 1.35]})
    ax_full.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
    ax_full.add_patch(Rectangle((left - 0.5, top - 0.5), size, size, fill=False, lw=2,
                                edgecolor="tab:orange"))
    ax_full.set_title(f"the whole image ({h}x{w})")
    ax_full.set_xlabel("column")
    ax_full.set_ylabel("row")
    shown = ax_crop.imshow(crop, cmap=cmap, vmin=vmin, vmax=vmax,
                           extent=(left - 0.5, left + size - 0.5, top + size - 0.5, top - 0.5))
    middle = (vmin + vmax) / 2
    fontsize = 8 if np.issubdtype(crop.dtype, np.integer) else 6.5
    for i in range(size):
        for j in range(size):
            value = crop[i, j]
            ax_crop.text(left + j, top + i, _format_pixel(value), ha="center", va="center",
                         fontsize=fontsize, color="white" if value > middle else "black")
    ax_crop.set_xticks(range(left, left + size))
    ax_crop.set_yticks(range(top, top + size))
    ax_crop.tick_params(labelsize=7)
    ax_crop.set_title(f"rows {top}-{top + size - 1}, columns {left}-{left + size - 1}: the numbers")
    ax_crop.set_xlabel("column")
    fig.colorbar(shown, ax=ax_crop, fraction=0.046, pad=0.04, label="pixel value")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_class_counts(splits, *, title: str = "How many images of each digit"):
    """Bar chart of how many images each class has, one group of bars per split.

    Args:
        splits: a dict name -> labels ``(N,)`` ints in 0..9, e.g.
            ``{"train": y_train, "test": y_test}``; or a single labels array.
        title: figure title.

    Returns:
        The matplotlib Figure, each bar labelled with its count.
    """
    if not isinstance(splits, dict):
        splits = {"labels": splits}
    classes = np.arange(10)
    width = 0.8 / len(splits)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for k, (name, labels) in enumerate(splits.items()):
        counts = np.bincount(np.asarray(labels).astype(np.int64), minlength=10)[:10]
        bars = ax.bar(classes + (k - (len(splits) - 1) / 2) * width, counts, width=width,
                      label=f"{name} ({counts.sum():,} images)")
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(classes)
    ax.set_xlabel("digit (label)")
    ax.set_ylabel("number of images")
    ax.set_title(title)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
    ax.legend(loc="upper center", ncol=len(splits), fontsize=8)
    fig.tight_layout()
    return fig


def show_normalization(raw_images, normalized_images, *, index: int = 0):
    """What a normalisation does: one image before and after, and all pixel values' histograms.

    Args:
        raw_images: ``(N, 1, 28, 28)`` or ``(N, 28, 28)`` uint8 pixels 0..255.
        normalized_images: the same images after normalisation, same shape, floats.
        index: which image to show in the first two panels.

    Returns:
        The matplotlib Figure: the raw image (colorbar 0..255), the normalised one (its own
        colorbar) and histograms of every pixel value before and after (log scale counts).
    """
    raw = _images_2d(raw_images)
    norm = _images_2d(normalized_images)
    if raw.shape != norm.shape:
        raise ValueError(f"raw and normalized images differ in shape: {raw.shape} vs {norm.shape}")
    fig, axes = plt.subplots(1, 4, figsize=(10, 3.0), gridspec_kw={"width_ratios": [1.2, 1.2, 1, 1]})
    for ax, images, name in ((axes[0], raw, "raw uint8"), (axes[1], norm, "normalised")):
        lo, hi = _value_range(images)
        shown = ax.imshow(images[index], cmap="gray_r", vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
        fig.colorbar(shown, ax=ax, fraction=0.06, pad=0.03)
    for ax, images, name, color in ((axes[2], raw, "raw pixel values", "tab:blue"),
                                    (axes[3], norm, "normalised values", "tab:orange")):
        ax.hist(images.ravel().astype(np.float64), bins=32, color=color)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("value")
        ax.tick_params(labelsize=8)
    axes[2].set_ylabel("how many pixels (log)")
    fig.tight_layout()
    return fig
