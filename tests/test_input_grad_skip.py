"""``Sequential.backward(dy, need_input_grad=False)``: a speed path for training on images
(nobody needs dL/dimage). The parameter gradients must be exactly those of the full pass."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_lib import Conv2d, ConvTranspose2d, Flatten, Linear, MaxPool2d, ReLU, Sequential


@pytest.mark.parametrize("first", ["conv", "relu-then-conv", "convT"])
def test_skipping_the_input_gradient_keeps_every_parameter_gradient(first):
    rng = np.random.default_rng(0)
    head = {
        "conv": [Conv2d(1, 3, 3, padding=1, rng=0, dtype=np.float64)],
        "relu-then-conv": [ReLU(), Conv2d(1, 3, 3, padding=1, rng=0, dtype=np.float64)],
        "convT": [ConvTranspose2d(1, 3, 3, stride=1, padding=1, rng=0, dtype=np.float64)],
    }[first]
    model = Sequential(*head, ReLU(), MaxPool2d(2), Flatten(), Linear(3 * 4 * 4, 5, rng=1, dtype=np.float64))
    x = rng.standard_normal((4, 1, 8, 8))
    dy = rng.standard_normal((4, 5))
    model.forward(x)
    dx = model.backward(dy)
    assert isinstance(dx, np.ndarray) and dx.shape == x.shape
    full = {k: v.copy() for k, v in model.grads.items()}
    model.forward(x)
    assert model.backward(dy, need_input_grad=False) is None
    for k, v in model.grads.items():
        np.testing.assert_allclose(v, full[k], rtol=1e-12, atol=1e-12, err_msg=k)
