"""A small DCGAN for 28x28 digits (lesson 11): the two networks and one training step.

Shapes (Radford, Metz and Chintala, 2016, scaled down to MNIST)::

    generator      z (N, latent) -> Linear -> (N, 128*7*7) -> Unflatten -> (N, 128, 7, 7)
                   -> BatchNorm2d -> ReLU -> ConvTranspose2d 128->64, k4 s2 p1 -> (N, 64, 14, 14)
                   -> BatchNorm2d -> ReLU -> ConvTranspose2d 64->1, k4 s2 p1 -> (N, 1, 28, 28) -> Tanh
                   (``refine=K``: K more ConvTranspose2d 64->64, k3 s1 p1 -> BatchNorm2d -> ReLU at
                   14x14 before the last layer; the shipped generator has K = 1)
    discriminator  x (N, 1, 28, 28) -> Conv2d 1->64, k4 s2 p1 -> (N, 64, 14, 14) -> LeakyReLU 0.2
                   -> Conv2d 64->128, k4 s2 p1 -> (N, 128, 7, 7) -> BatchNorm2d -> LeakyReLU 0.2
                   -> Flatten -> Linear -> (N, 1): one logit, "real" when large

Images live in [-1, 1] (``tanh``'s range): ``data.normalize(images, "tanh")`` is not a mode of
the loader, so :func:`to_tanh_range` does it. The layers that feed a batch norm have no bias
(it would be cancelled, lesson 10); all weights start as N(0, 0.02^2), the paper's choice.
"""

from __future__ import annotations

import numpy as np

from .data import ASSETS
from .layers import (
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Flatten,
    LeakyReLU,
    Linear,
    ReLU,
    Tanh,
    Unflatten,
    as_generator,
)
from .losses import BCEWithLogits
from .model import Sequential

__all__ = ["PRETRAINED", "WeightAverage", "discriminator", "generator", "latent_size", "pretrained",
           "refresh_batch_norm", "sample", "score", "shape_of", "to_pixels", "to_tanh_range", "train_step"]

#: The generator trained by ``python -m cnn_lib gan`` (the command is in ``cnn_lib/assets/README.md``).
PRETRAINED = ASSETS / "dcgan_generator_mnist.npz"

#: The generator's first transposed convolution, weight (2*width, width, 4, 4): where its width is read.
_WIDTH_KEY = "4.weight"


def generator(latent: int = 64, width: int = 64, rng=None, dtype=np.float32, refine: int = 0) -> Sequential:
    """The generator: ``latent`` noise numbers per image -> a (1, 28, 28) image in [-1, 1].
    ``width``: channels of the 14x14 layer (the 7x7 one has twice as many). ``refine``: that many
    more transposed convolutions (``width`` -> ``width``, k3 s1 p1, each with its batch norm and
    ReLU) at 14x14 before the last one, a deeper generator of the same output."""
    rng = as_generator(rng)
    refine = int(refine)
    if refine < 0:
        raise ValueError(f"generator: refine must be 0 or more, got {refine!r}")
    w2 = 2 * width
    extra = []
    for _ in range(refine):
        extra += [ConvTranspose2d(width, width, 3, stride=1, padding=1, bias=False, rng=rng, dtype=dtype,
                                  init="normal"), BatchNorm2d(width, dtype=dtype), ReLU()]
    return Sequential(
        Linear(latent, w2 * 7 * 7, bias=False, rng=rng, dtype=dtype, init="normal"), Unflatten((w2, 7, 7)),
        BatchNorm2d(w2, dtype=dtype), ReLU(),
        ConvTranspose2d(w2, width, 4, stride=2, padding=1, bias=False, rng=rng, dtype=dtype, init="normal"),
        BatchNorm2d(width, dtype=dtype), ReLU(), *extra,
        ConvTranspose2d(width, 1, 4, stride=2, padding=1, rng=rng, dtype=dtype, init="normal"), Tanh(),
    )


def discriminator(width: int = 64, rng=None, dtype=np.float32) -> Sequential:
    """The discriminator: a (1, 28, 28) image -> one logit (large: "real")."""
    rng = as_generator(rng)
    w2 = 2 * width
    return Sequential(
        Conv2d(1, width, 4, stride=2, padding=1, rng=rng, dtype=dtype, init="normal"), LeakyReLU(0.2),
        Conv2d(width, w2, 4, stride=2, padding=1, bias=False, rng=rng, dtype=dtype, init="normal"),
        BatchNorm2d(w2, dtype=dtype), LeakyReLU(0.2), Flatten(),
        Linear(w2 * 7 * 7, 1, rng=rng, dtype=dtype, init="normal"),
    )


def to_tanh_range(images) -> np.ndarray:
    """uint8 pixels 0..255 -> float32 in [-1, 1], the generator's output range."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"expected raw uint8 pixels (0..255), got dtype {images.dtype}")
    return images.astype(np.float32) / 127.5 - 1.0


def to_pixels(images) -> np.ndarray:
    """The generator's [-1, 1] back to uint8 pixels 0..255 (rounded, clipped): what the
    classifier and a PNG read."""
    images = np.asarray(images)
    return np.clip(np.round((images.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def latent_size(gen) -> int:
    """How many noise numbers per image the generator ``gen`` reads (its first layer's inputs)."""
    return int(gen.layers[0].params["weight"].shape[1])


def pretrained() -> Sequential:
    """The generator shipped in ``cnn_lib/assets/`` (lesson 11), in evaluation mode; a clear error names
    the file when it is missing."""
    if not PRETRAINED.is_file():
        raise FileNotFoundError(f"the shipped DCGAN generator is missing: expected {PRETRAINED} "
                                "(reinstall the course, or retrain with the command in "
                                "cnn_lib/assets/README.md)")
    with np.load(PRETRAINED, allow_pickle=False) as saved:
        latent, width, refine = shape_of(saved)
    gen = generator(latent, width, rng=0, refine=refine)
    gen.load(PRETRAINED)
    return gen.eval()


def shape_of(state) -> tuple[int, int, int]:
    """``(latent, width, refine)`` of the generator whose saved arrays (``state_dict()`` or an open
    ``.npz``) are ``state``: what :func:`generator` must be called with to load them."""
    latent = int(state["0.weight"].shape[1])      # Linear weight (2*width*7*7, latent)
    width = int(state[_WIDTH_KEY].shape[1])
    convolutions = sum(1 for key in state if key.endswith(".weight") and state[key].ndim == 4)
    return latent, width, convolutions - 2


def sample(gen, n: int = 64, seed=0, *, batch_size: int = 500) -> np.ndarray:
    """``n`` images ``(n, 1, 28, 28)`` in [-1, 1] from noise drawn with ``seed``, the generator
    in evaluation mode (its batch norms use their running statistics); its mode is restored."""
    z = as_generator(seed).standard_normal((n, latent_size(gen))).astype(gen.layers[0].params["weight"].dtype)
    was_training = gen.training
    gen.eval()
    try:
        return np.concatenate([gen.forward(z[i:i + batch_size]) for i in range(0, n, batch_size)])
    finally:
        gen.train(was_training)


def score(gen, n: int = 10_000, seed=0, real=None, classifier=None) -> dict:
    """Score ``n`` digits of ``gen`` (drawn by :func:`sample`) with the shipped classifier
    (``models.pretrained("lenet_small")``, or ``classifier``): inception score and each
    digit's share (:mod:`cnn_lib.metrics`), and, given ``real`` uint8 images (N, 1, 28, 28),
    the Fréchet distance of the classifier's penultimate features and the real images' own
    inception score. Returns a dict of plain numbers (JSON-ready)."""
    from . import metrics, models
    from .data import normalize
    from .training import predict

    classifier = classifier or models.pretrained("lenet_small")
    fake_x = normalize(to_pixels(sample(gen, n, seed)), "standard")
    probs = metrics.softmax(predict(classifier, fake_x))
    scores = {"n": n, "inception_score": metrics.inception_score(probs),
              "digit_shares": metrics.class_shares(probs).tolist()}
    if real is not None:
        real_x = normalize(real, "standard")
        scores["real_inception_score"] = metrics.inception_score(metrics.softmax(predict(classifier, real_x)))
        fake_features = metrics.penultimate_features(classifier, fake_x)
        real_features = metrics.penultimate_features(classifier, real_x)
        scores["frechet_distance"] = metrics.frechet_distance(fake_features, real_features)
    return scores


def train_step(gen, disc, opt_g, opt_d, real, z, loss_fn=None,
               real_label: float = 1.0) -> tuple[float, float]:
    """One DCGAN step on a batch of ``real`` images and noise ``z``: first the discriminator
    (real images labelled 1, generated ones 0, the two batches run separately so each gets
    its own batch statistics, their gradients added), then the generator (its images
    labelled 1: the gradient flows back through the discriminator, whose weights this half
    does not change). Returns ``(d_loss, g_loss)``; ``d_loss`` is the sum of its two halves.

    ``real_label`` < 1 is one-sided label smoothing (Salimans et al., 2016): the target of the
    discriminator's real half only; the generator's target stays 1.
    """
    if not 0.0 < real_label <= 1.0:
        raise ValueError(f"train_step: real_label must be in (0, 1], got {real_label!r}")
    loss_fn = loss_fn or BCEWithLogits()
    n = len(real)
    ones, zeros = np.ones((n, 1), real.dtype), np.zeros((len(z), 1), real.dtype)
    fake = gen.forward(z)

    opt_d.zero_grad()
    real_targets = ones if real_label == 1.0 else np.full_like(ones, real_label)
    d_loss = loss_fn.forward(disc.forward(real), real_targets)
    disc.backward(loss_fn.backward(), need_input_grad=False)
    d_loss += loss_fn.forward(disc.forward(fake), zeros)
    disc.backward(loss_fn.backward(), need_input_grad=False)
    opt_d.step()

    opt_g.zero_grad()
    g_loss = loss_fn.forward(disc.forward(fake), ones[: len(z)])
    d_fake = disc.backward(loss_fn.backward())   # dL/d(fake image): from D into G
    disc.zero_grad()                             # D's own gradients of this half are not used
    gen.backward(d_fake, need_input_grad=False)
    opt_g.step()
    return float(d_loss), float(g_loss)


class WeightAverage:
    """An exponential moving average of the weights of ``gen`` (made by :func:`generator`), kept
    in a second generator of the same shape (Polyak averaging; for GAN generators: Yazıcı et
    al., *The Unusual Effectiveness of Averaging in GAN Training*, ICLR 2019).

    A GAN's generator never settles: every step answers the discriminator of that moment, so
    the weights may circle around a good solution, and their average sit nearer its middle. (On
    this course's full-MNIST run it scored the same as the last step's weights after every
    epoch: ``benchmarks/RUNS.md``.) The average is never trained itself. After ``update()``
    number ``t``::

        averaged = d * averaged + (1 - d) * weights,    d = min(decay, (1 + t) / (10 + t))

    (the smaller ``d`` of the first steps lets the average leave the random start quickly).
    Batch-norm buffers are not averaged: call :meth:`finish` before the averaged generator is
    used in evaluation mode; it measures them again for the averaged weights.
    """

    def __init__(self, gen, decay: float = 0.999):
        decay = float(decay)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"WeightAverage: decay must be between 0 and 1, got {decay!r}")
        self.decay, self.steps = decay, 0
        first = gen.layers[0].params["weight"]
        latent, width, refine = shape_of(gen.state_dict())
        self.averaged = generator(latent, width, rng=0, dtype=first.dtype, refine=refine)
        self.averaged.load_state_dict(gen.state_dict())
        self._pairs = [(a.value, p.value) for a, p in zip(self.averaged.parameters(), gen.parameters())]

    def update(self) -> None:
        """Move the average one step towards the generator's current weights."""
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for average, weights in self._pairs:
            average *= d
            average += (1 - d) * weights

    def finish(self, seed=0, n: int = 10_000, batch_size: int = 500):
        """The averaged generator in evaluation mode, its batch norms' running statistics measured
        for the averaged weights (:func:`refresh_batch_norm` on ``n`` noise vectors drawn with ``seed``)."""
        refresh_batch_norm(self.averaged, seed=seed, n=n, batch_size=batch_size)
        return self.averaged.eval()


def refresh_batch_norm(gen, seed=0, n: int = 10_000, batch_size: int = 500) -> None:
    """Measure the running statistics of every batch norm in ``gen`` anew: run ``n`` noise
    vectors (drawn with ``seed``) through it in training mode, in batches, and set each
    ``running_mean``/``running_var`` to the plain average of the batches' statistics (a
    momentum of 1/k for batch k). The weights are not touched; the mode is restored."""
    norms = [layer for layer in gen.layers if isinstance(layer, (BatchNorm1d, BatchNorm2d))]
    momenta = [layer.momentum for layer in norms]
    was_training = gen.training
    z = as_generator(seed).standard_normal((n, latent_size(gen))).astype(gen.layers[0].params["weight"].dtype)
    gen.train()
    try:
        for k, first in enumerate(range(0, n, batch_size), start=1):
            for layer in norms:
                layer.momentum = 1.0 / k
            gen.forward(z[first:first + batch_size])
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
        gen.train(was_training)
