"""Losses. Each has ``forward(...) -> float`` and ``backward() -> dL/dinput``.

The softmax and the cross-entropy are fused into one layer: its gradient is simply
``(softmax(z) - onehot(labels)) / N``, and computing it through log-sum-exp never overflows.
(The tutorial in question.txt keeps them apart and multiplies a 10x10 Jacobian by
``-1/p``; lesson 03 shows both routes give the same numbers, and why this one is stable.)
"""

from __future__ import annotations

import numpy as np

from . import _checks
from .kernels import TIERS, vectorized


def check_labels(labels, n: int, n_classes: int, where: str) -> np.ndarray:
    """Validate integer class labels (N,) in [0, K); return them as an int array."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape == (n, n_classes):
        raise ValueError(f"{where}: expected integer class labels of shape ({n},), got one-hot "
                         f"labels of shape {labels.shape}; pass labels.argmax(axis=1)")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise TypeError(f"{where}: labels must be integers (class indices 0..{n_classes - 1}), got dtype "
                        f"{labels.dtype}; convert with labels.astype(np.int64)")
    if labels.shape != (n,):
        raise ValueError(f"{where}: expected labels of shape ({n},) to match logits (N={n}, K={n_classes}), "
                         f"got {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)]
        raise ValueError(f"{where}: labels must lie in [0, {n_classes}) for {n_classes} classes, "
                         f"got {bad[:5].tolist()}")
    return labels.astype(np.intp, copy=False)


class SoftmaxCrossEntropy:
    """Fused softmax + cross-entropy, averaged over the batch (PyTorch's CrossEntropyLoss).

    forward(logits (N, K), labels (N,) ints in [0, K)) -> loss (float)
    backward(dloss=1.0) -> dlogits (N, K) = dloss * (softmax(logits) - onehot(labels)) / N
    After forward, ``probs`` holds softmax(logits).
    """

    def __init__(self):
        self.impl = "fast"
        self._cache = None
        self.probs = None

    def forward(self, logits, labels):
        _checks.float_array(logits, "logits", "SoftmaxCrossEntropy", ndim=2, layout="(N, K)")
        labels = check_labels(labels, *logits.shape, "SoftmaxCrossEntropy")
        loss, dlogits = TIERS[self.impl].softmax_cross_entropy(logits, labels)
        self._cache = dlogits
        self.probs = vectorized.softmax(logits)
        return loss

    __call__ = forward

    def backward(self, dloss=1.0):
        _checks.forward_called(self._cache, "SoftmaxCrossEntropy")
        return self._cache * dloss


class BCEWithLogits:
    """Binary cross-entropy on raw scores z (the GAN's loss), averaged over every element.

    forward(logits (any shape), targets (same shape) in [0, 1]) -> loss (float)
      loss = mean( max(z, 0) - z*t + log(1 + exp(-|z|)) )   (stable form of -t log s - (1-t) log(1-s))
    backward(dloss=1.0) -> dlogits = dloss * (sigmoid(z) - t) / z.size
    """

    def __init__(self):
        self._cache = None

    def forward(self, logits, targets):
        _checks.float_array(logits, "logits", "BCEWithLogits")
        targets = np.asarray(targets, dtype=logits.dtype)
        if targets.shape != logits.shape:
            raise ValueError(f"BCEWithLogits: targets must have the logits' shape {logits.shape}, "
                             f"got {targets.shape}")
        if targets.size and (targets.min() < 0 or targets.max() > 1):
            raise ValueError("BCEWithLogits: targets must lie in [0, 1]")
        z = logits
        loss = np.mean(np.maximum(z, 0) - z * targets + np.log1p(np.exp(-np.abs(z))))
        self._cache = (vectorized.sigmoid(z) - targets) / z.size
        return float(loss)

    __call__ = forward

    def backward(self, dloss=1.0):
        _checks.forward_called(self._cache, "BCEWithLogits")
        return self._cache * dloss
