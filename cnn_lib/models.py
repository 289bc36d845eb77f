"""The course's networks, by name: what lessons, benchmarks and the command line train.

``tutorial``: the network of the tutorial in the student's question, batched: conv 8x3x3 ->
max-pool 2 -> flatten -> linear 10 (softmax cross-entropy is the loss, not a layer).
``lenet``: a LeNet-style net: conv 32x3x3 pad 1 -> ReLU -> max-pool 2 -> conv 64x3x3 pad 1 ->
ReLU -> max-pool 2 -> flatten -> linear 128 -> ReLU -> linear 10.
``lenet_small``: the same with half the channels (16, 32): a third of the multiply-adds, and
with five epochs of SGD and a one-cycle learning rate it passes 99.2% on full MNIST in under
two minutes on two cores (lesson 10, the README's results table).

Both take 28x28 one-channel images ``(N, 1, 28, 28)`` and return 10 logits per image.
"""

from __future__ import annotations

import numpy as np

from .data import ASSETS
from .layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU, as_generator
from .model import Sequential

__all__ = ["MODELS", "PRETRAINED", "build", "lenet", "lenet_small", "pretrained", "tutorial_net"]


def tutorial_net(rng=None, dtype=np.float32, init="pytorch") -> Sequential:
    """conv 8x3x3 -> max-pool 2 -> flatten -> linear 10, for (N, 1, 28, 28) inputs.

    init: ``"pytorch"``: cnn_lib's (and PyTorch's) default, uniform in +-1/sqrt(fan_in), with
          biases; ``"tutorial"``: exactly the tutorial's start: filters ``randn / 9`` and no
          conv bias, dense weights ``randn / 1352`` and zero biases.
    """
    rng = as_generator(rng)
    tutorial = init == "tutorial"
    if init not in ("pytorch", "tutorial"):
        raise ValueError(f"init must be 'pytorch' or 'tutorial', got {init!r}")
    conv = Conv2d(1, 8, 3, bias=not tutorial, rng=rng, dtype=dtype)
    dense = Linear(8 * 13 * 13, 10, rng=rng, dtype=dtype)
    if tutorial:
        conv.params["weight"][...] = rng.standard_normal((8, 1, 3, 3)) / 9
        dense.params["weight"][...] = rng.standard_normal((10, 8 * 13 * 13)) / (8 * 13 * 13)
        dense.params["bias"][...] = 0
    return Sequential(conv, MaxPool2d(2), Flatten(), dense)


def lenet(rng=None, dtype=np.float32, channels=(32, 64)) -> Sequential:
    """conv 32 -> ReLU -> pool -> conv 64 -> ReLU -> pool -> linear 128 -> ReLU -> linear 10
    (``channels``: the two convolutions' output channels)."""
    rng = as_generator(rng)
    c1, c2 = channels
    return Sequential(
        Conv2d(1, c1, 3, padding=1, rng=rng, dtype=dtype), ReLU(), MaxPool2d(2),
        Conv2d(c1, c2, 3, padding=1, rng=rng, dtype=dtype), ReLU(), MaxPool2d(2), Flatten(),
        Linear(c2 * 7 * 7, 128, rng=rng, dtype=dtype), ReLU(),
        Linear(128, 10, rng=rng, dtype=dtype),
    )


def lenet_small(rng=None, dtype=np.float32) -> Sequential:
    """conv 16 -> ReLU -> pool -> conv 32 -> ReLU -> pool -> linear 128 -> ReLU -> linear 10."""
    return lenet(rng, dtype, channels=(16, 32))


#: name -> builder(rng=None, dtype=np.float32)
MODELS = {"tutorial": tutorial_net, "lenet": lenet, "lenet_small": lenet_small}


#: The weights shipped with the course, by model name: trained on full MNIST *without* the
#: shipped sample's 5,000 images (``--holdout-sample``), so the sample is a fair test of them.
#: The exact command, seed and time are in ``cnn_lib/assets/README.md``.
PRETRAINED = {"lenet_small": ASSETS / "lenet_small_mnist.npz"}


def pretrained(name: str = "lenet_small") -> Sequential:
    """The network ``name`` with the trained weights shipped in ``cnn_lib/assets/`` (lesson 10), in
    evaluation mode. A clear error names the file when it is missing."""
    if name not in PRETRAINED:
        raise ValueError(f"no shipped weights for {name!r}: there are weights for {', '.join(PRETRAINED)}")
    path = PRETRAINED[name]
    if not path.is_file():
        raise FileNotFoundError(f"the shipped weights of {name!r} are missing: expected {path} "
                                "(reinstall the course, or retrain with the command in "
                                "cnn_lib/assets/README.md)")
    model = build(name)
    model.load(path)
    return model.eval()


def build(name: str, rng=None, dtype=np.float32, **options) -> Sequential:
    """``MODELS[name](rng, dtype, **options)``, with a clear error for an unknown name."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[name](rng=rng, dtype=dtype, **options)
