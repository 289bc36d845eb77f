"""The blog tutorial's network, written the tutorial's way: one image at a time, per-pixel loops.

This is the "before" of the benchmark: a re-creation, in our own code, of the style of the
NumPy CNN in ``question.txt`` (conv 8 filters 3x3 -> max-pool 2 -> dense 10 + softmax on one
28x28 image, weights updated inside backprop). It follows the same loops -- a Python
iteration per receptive field in the convolution, per window and per element in the
pooling backward -- so its speed is the speed a student gets from that code. Unlike the
original it is *correct*: the convolution's gradient is the full one, the softmax backward
returns its input gradient, and there is a ``dtype`` so float32 and float64 can be timed.

Not part of the library and not imported by it: ``benchmarks/bench_training.py`` times it.
"""

from __future__ import annotations

import numpy as np


class LoopConv3x3:
    """``n_filters`` 3x3 filters on a single-channel image, no padding: (H, W) -> (H-2, W-2, F)."""

    def __init__(self, n_filters, rng, dtype):
        self.filters = (rng.standard_normal((n_filters, 3, 3)) / 9).astype(dtype)

    @staticmethod
    def regions(image):
        """Every 3x3 patch of the image, with the position of its top-left pixel."""
        h, w = image.shape
        for i in range(h - 2):
            for j in range(w - 2):
                yield image[i : i + 3, j : j + 3], i, j

    def forward(self, image):
        self.image = image
        h, w = image.shape
        out = np.zeros((h - 2, w - 2, len(self.filters)), dtype=image.dtype)
        for patch, i, j in self.regions(image):
            out[i, j] = np.sum(patch * self.filters, axis=(1, 2))
        return out

    def backward_and_update(self, d_out, lr):
        """Gradient of the filters, one patch and one filter at a time; then an SGD step.

        The first layer's input gradient is not needed (nothing below it learns), so, like
        the tutorial, this returns nothing.
        """
        d_filters = np.zeros_like(self.filters)
        for patch, i, j in self.regions(self.image):
            for f in range(len(self.filters)):
                d_filters[f] += d_out[i, j, f] * patch
        self.filters -= lr * d_filters


class LoopMaxPool2:
    """2x2 max pooling with stride 2 on an (H, W, C) array."""

    @staticmethod
    def regions(x):
        h, w, _ = x.shape
        for i in range(h // 2):
            for j in range(w // 2):
                yield x[2 * i : 2 * i + 2, 2 * j : 2 * j + 2], i, j

    def forward(self, x):
        self.x = x
        h, w, c = x.shape
        out = np.zeros((h // 2, w // 2, c), dtype=x.dtype)
        for window, i, j in self.regions(x):
            out[i, j] = np.amax(window, axis=(0, 1))
        return out

    def backward(self, d_out):
        """Send each window's gradient to its maximum: three loops over the window's elements.

        Exactly one element per window and channel receives it (the first maximum found),
        which is what a correct max-pool backward has to do on flat, tied windows.
        """
        d_x = np.zeros_like(self.x)
        for window, i, j in self.regions(self.x):
            h, w, c = window.shape
            top = np.amax(window, axis=(0, 1))
            for ch in range(c):
                done = False
                for a in range(h):
                    for b in range(w):
                        if not done and window[a, b, ch] == top[ch]:
                            d_x[2 * i + a, 2 * j + b, ch] = d_out[i, j, ch]
                            done = True
        return d_x


class LoopSoftmaxDense:
    """Flatten, dense layer ``n_in -> n_out``, softmax: the tutorial's last layer."""

    def __init__(self, n_in, n_out, rng, dtype):
        self.weights = (rng.standard_normal((n_in, n_out)) / n_in).astype(dtype)
        self.biases = np.zeros(n_out, dtype=dtype)

    def forward(self, x):
        self.shape = x.shape
        self.flat = x.ravel()
        totals = self.flat @ self.weights + self.biases
        exp = np.exp(totals - totals.max())
        self.probs = exp / exp.sum()
        return self.probs

    def backward_and_update(self, label, lr):
        """Loss -log(p[label]): d loss / d totals = p - onehot(label), then dense layer's grads."""
        d_totals = self.probs.copy()
        d_totals[label] -= 1
        d_weights = np.outer(self.flat, d_totals)
        d_x = self.weights @ d_totals
        self.weights -= lr * d_weights
        self.biases -= lr * d_totals
        return d_x.reshape(self.shape)


class TutorialLoopNet:
    """conv 8x3x3 -> max-pool 2 -> dense 10 + softmax, trained one image at a time."""

    def __init__(self, rng=0, dtype=np.float64):
        rng = np.random.default_rng(rng)
        self.conv = LoopConv3x3(8, rng, dtype)
        self.pool = LoopMaxPool2()
        self.dense = LoopSoftmaxDense(13 * 13 * 8, 10, rng, dtype)

    def train_step(self, image, label, lr=0.005):
        """One SGD step on one (28, 28) image; returns the loss."""
        probs = self.dense.forward(self.pool.forward(self.conv.forward(image)))
        loss = -np.log(probs[label])
        d = self.dense.backward_and_update(label, lr)
        d = self.pool.backward(d)
        self.conv.backward_and_update(d, lr)
        return float(loss)
