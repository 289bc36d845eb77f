"""The course's networks, by name: what lessons, benchmarks and the command line train.

``tutorial``: the network of the tutorial in the student's question, batched: conv 8x3x3 ->
max-pool 2 -> flatten -> linear 10 (softmax cross-entropy is the loss, not a layer).
``lenet``: a LeNet-style net: conv 32x3x3 pad 1 -> ReLU -> max-pool 2 -> conv 64x3x3 pad 1 ->
ReLU -> max-pool 2 -> flatten -> linear 128 -> ReLU -> linear 10.

Both take 28x28 one-channel images ``(N, 1, 28, 28)`` and return 10 logits per image.
"""

from __future__ import annotations

import numpy as np

from .layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU, as_generator
from .model import Sequential

__all__ = ["MODELS", "build", "lenet", "tutorial_net"]


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


def lenet(rng=None, dtype=np.float32) -> Sequential:
    """conv 32 -> ReLU -> pool -> conv 64 -> ReLU -> pool -> linear 128 -> ReLU -> linear 10."""
    rng = as_generator(rng)
    return Sequential(
        Conv2d(1, 32, 3, padding=1, rng=rng, dtype=dtype), ReLU(), MaxPool2d(2),
        Conv2d(32, 64, 3, padding=1, rng=rng, dtype=dtype), ReLU(), MaxPool2d(2), Flatten(),
        Linear(64 * 7 * 7, 128, rng=rng, dtype=dtype), ReLU(),
        Linear(128, 10, rng=rng, dtype=dtype),
    )


#: name -> builder(rng=None, dtype=np.float32)
MODELS = {"tutorial": tutorial_net, "lenet": lenet}


def build(name: str, rng=None, dtype=np.float32, **options) -> Sequential:
    """``MODELS[name](rng, dtype, **options)``, with a clear error for an unknown name."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[name](rng=rng, dtype=dtype, **options)
