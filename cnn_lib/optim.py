"""Optimizers: the only code that changes weights.

    opt = SGD(model.parameters(), lr=0.01, momentum=0.9)
    opt.zero_grad()                              # backward adds into grads: start from zero
    loss = loss_fn.forward(model.forward(x), y)
    model.backward(loss_fn.backward())
    opt.step()

``step()`` uses the gradients that the backward passes since the last ``zero_grad()`` added
up (see the gradient rule in :mod:`cnn_lib.layers`). A step that finds the very gradients of
the step before it, not cleared in between, warns: that is a forgotten ``zero_grad()``, and
every step would then follow the sum of all the gradients so far.
"""

from __future__ import annotations

import warnings

import numpy as np


class Optimizer:
    def __init__(self, parameters, lr):
        self.parameters = list(parameters)
        if not self.parameters:
            raise ValueError(f"{type(self).__name__}: got no parameters to optimize")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"{type(self).__name__}: lr must be a positive number, got {lr!r}")
        self.lr = float(lr)
        self._last_grads = [None] * len(self.parameters)  # the arrays the last step used

    def _grads(self):
        """Check every gradient before touching any weight (all-or-nothing updates)."""
        grads = []
        for p in self.parameters:
            g = p.grad
            if g is None:
                raise RuntimeError(f"no gradient for parameter {p.name!r}: call backward() before step()")
            if g.shape != p.value.shape:
                raise ValueError(f"gradient for {p.name!r} has shape {g.shape}, "
                                 f"parameter has {p.value.shape}")
            if not np.all(np.isfinite(g)):
                raise FloatingPointError(f"gradient for {p.name!r} contains NaN or inf; "
                                         "the weights were not updated (try a smaller lr)")
            grads.append(g)
        stale = [p.name for p, g, last in zip(self.parameters, grads, self._last_grads) if g is last]
        if stale:
            warnings.warn(
                f"{type(self).__name__}.step(): the gradients of {stale[:3]}"
                f"{' and others' if len(stale) > 3 else ''} were not cleared since the last step, "
                "so this step follows the sum of this and earlier steps' gradients. backward adds "
                "into grads: call opt.zero_grad() (or model.zero_grad()) before each backward.",
                stacklevel=3)
        self._last_grads = grads
        return grads

    def zero_grad(self):
        """Clear the gradients of every parameter (the next backward starts from nothing)."""
        for p in self.parameters:
            p.zero_grad()


class SGD(Optimizer):
    """w -= lr * v,  v = momentum * v + (g + weight_decay * w)   (PyTorch's convention)."""

    def __init__(self, parameters, lr=0.01, momentum=0.0, weight_decay=0.0):
        super().__init__(parameters, lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum}")
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.velocity = [None] * len(self.parameters)

    def step(self):
        for i, (p, g) in enumerate(zip(self.parameters, self._grads())):
            w = p.value
            if self.weight_decay:
                g = g + self.weight_decay * w
            if self.momentum:
                if self.velocity[i] is None:
                    self.velocity[i] = np.array(g, dtype=w.dtype)
                else:
                    self.velocity[i] *= self.momentum
                    self.velocity[i] += g
                g = self.velocity[i]
            w -= self.lr * g  # in place: every holder of this array sees the new weights


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; betas=(0.5, 0.999) is the usual GAN choice."""

    def __init__(self, parameters, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(parameters, lr)
        self.beta1, self.beta2 = (float(b) for b in betas)
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas}")
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.m = [np.zeros_like(p.value) for p in self.parameters]
        self.v = [np.zeros_like(p.value) for p in self.parameters]
        self.t = 0

    def step(self):
        grads = self._grads()
        self.t += 1
        c1, c2 = 1 - self.beta1**self.t, 1 - self.beta2**self.t
        for p, g, m, v in zip(self.parameters, grads, self.m, self.v):
            w = p.value
            if self.weight_decay:
                g = g + self.weight_decay * w
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            w -= (self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)).astype(w.dtype, copy=False)
