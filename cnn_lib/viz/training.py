"""Figures of training runs: loss and accuracy curves, one run or several overlaid
(lessons 07, 08, 10), a confusion matrix, the most confidently wrong test images, and one
number per layer (lesson 10's vanishing and exploding gradients).

A run is a :class:`cnn_lib.training.History` (what ``fit`` returns).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

__all__ = ["confusion_matrix", "plot_confusion", "plot_confident_mistakes", "plot_history",
           "plot_histories", "plot_layer_profile"]


def _smooth(values, window):
    """Running mean over ``window`` steps (shorter at the start), for a readable step curve.
    (A diverging run's losses are clipped at 1e12 first: the curve leaves the plot either way.)"""
    values = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=1e12, posinf=1e12), 0, 1e12)
    if len(values) == 0 or window <= 1:
        return values
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


def plot_histories(runs, *, title=None, smooth=None):
    """Overlay several runs: ``runs`` is a dict ``{label: History}`` (e.g. three learning rates).

    Left: the loss of every step (thin) and its running mean (thick), against the step.
    Right: accuracy after every epoch, on the training data (dashed, the mean over the epoch's
    steps) and on the held-out data (``val`` of ``fit``: solid, after the epoch), against the epoch.
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    tops, last_epoch = [], 0
    styles = set()  # which kinds of accuracy curve were drawn: the right panel's legend names the styles
    for i, (label, history) in enumerate(runs.items()):
        color = f"C{i}"
        steps = np.arange(1, len(history.step_loss) + 1)
        window = smooth or max(1, len(steps) // 30)
        if len(steps):
            smoothed = _smooth(history.step_loss, window)
            ax_loss.plot(steps, history.step_loss, color=color, alpha=0.25, lw=0.8)
            ax_loss.plot(steps, smoothed, color=color, lw=2, label=label)
            # room for the running mean, not for every noisy step, nor for a run that blows up
            tops.append(min(float(smoothed.max()), 1.5 * float(smoothed[: max(1, window)].max())))
        last_epoch = max([last_epoch] + [e["epoch"] for e in history.epochs])
        epochs = [e["epoch"] for e in history.epochs]
        if epochs:
            ax_acc.plot(epochs, [e["train_accuracy"] for e in history.epochs], "--o", color=color, ms=4)
            styles.add("train")
            if "val_accuracy" in history.epochs[0]:
                ax_acc.plot(epochs, [e["val_accuracy"] for e in history.epochs], "-o", color=color, ms=5)
                styles.add("val")
    ax_loss.set(xlabel="step", ylabel="loss (mini-batch)", title="loss")
    if tops and max(tops) > 0:
        ax_loss.set_ylim(0, max(tops) * 1.08)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1),
               xlim=(0.5, max(1, last_epoch) + 0.5))
    ax_acc.xaxis.get_major_locator().set_params(integer=True)
    # the colours name the runs (left legend); the line styles say which images (right legend), so
    # the right legend stays two lines long however many runs there are
    keys = [Line2D([], [], color="0.35", ls="--", marker="o", ms=4,
                   label="training images (mean over the epoch)"),
            Line2D([], [], color="0.35", ls="-", marker="o", ms=5, label="held-out images")]
    handles = [key for key, kind in zip(keys, ("train", "val")) if kind in styles]
    if handles:
        ax_acc.legend(handles=handles, fontsize=8)
    if ax_loss.get_legend_handles_labels()[0]:
        ax_loss.legend(fontsize=8)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(history, *, title=None, label="run"):
    """The loss and accuracy curves of one run (see :func:`plot_histories`)."""
    return plot_histories({label: history}, title=title)


def confusion_matrix(y_true, y_pred, n_classes=10) -> np.ndarray:
    """counts[t, p] = how many items of true class t were predicted as p."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return counts


def plot_confusion(y_true, y_pred, n_classes=10, *, title="confusion matrix"):
    """Rows: the true digit; columns: the predicted one; numbers: counts (off the diagonal:
    the mistakes, and which digit each was taken for)."""
    counts = confusion_matrix(y_true, y_pred, n_classes)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    shown = counts.astype(float)
    np.fill_diagonal(shown, np.nan)  # colour the mistakes only: the diagonal would drown them
    ax.imshow(shown, cmap="Reds")
    darkest = np.nanmax(shown) if np.any(shown > 0) else 1.0
    for t in range(n_classes):
        for p in range(n_classes):
            if counts[t, p]:
                dark = t != p and counts[t, p] > 0.6 * darkest  # white numbers on the dark red cells
                ax.text(p, t, str(counts[t, p]), ha="center", va="center", fontsize=7,
                        color="white" if dark else "black", fontweight="bold" if t == p else "normal")
    ax.set(xlabel="predicted", ylabel="true", xticks=range(n_classes), yticks=range(n_classes),
           title=f"{title} (accuracy {np.trace(counts) / max(1, counts.sum()):.1%})")
    fig.tight_layout()
    return fig


def plot_confident_mistakes(images, y_true, probs, *, count=8):
    """The ``count`` wrong predictions the model was surest of, each with its true label,
    what it said, and how sure it was."""
    y_true = np.asarray(y_true)
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    order = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:count]
    fig, axes = plt.subplots(1, max(1, count), figsize=(1.3 * max(1, count), 1.9))
    for ax in np.atleast_1d(axes):
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes), order):
        ax.imshow(np.asarray(images[i]).reshape(28, 28), cmap="gray_r")
        ax.set_title(f"true {y_true[i]}\nsaid {pred[i]} ({probs[i, pred[i]]:.0%})", fontsize=8)
    fig.suptitle(f"the most confident mistakes ({len(wrong)} wrong of {len(y_true)})", fontsize=9)
    fig.tight_layout()
    return fig


def plot_layer_profile(profiles, *, ylabel, title=None, reference=None, ax=None):
    """One number per layer, for several settings: ``profiles`` is ``{label: values}`` with
    ``values[i]`` the number of layer ``i + 1`` (e.g. the RMS of its activations or of its
    weight gradient). A log scale, so that a constant factor per layer is a straight line;
    ``reference`` draws a dotted horizontal line (e.g. 1.0, the size that neither vanishes nor
    explodes). Returns the Figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
    else:
        fig = ax.figure
    for i, (label, values) in enumerate(profiles.items()):
        values = np.asarray(values, dtype=np.float64)
        ax.plot(np.arange(1, len(values) + 1), values, "-o", color=f"C{i}", ms=4, label=label)
    if reference is not None:
        ax.axhline(reference, color="0.4", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set(xlabel="layer", ylabel=ylabel, title=title or ylabel)
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return fig
