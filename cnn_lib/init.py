"""Weight initialisers, by name: what ``Conv2d(..., init=...)``, ``ConvTranspose2d`` and
``Linear`` accept, one layer at a time.

Every initialiser is a function ``(rng, shape, dtype) -> array`` of the weight's shape; the
fans come from the shape alone, with PyTorch's rule (so a weight means the same in both)::

    fan_in  = shape[1] * kH * kW        (Linear: in_features;  Conv2d: C_in * kH * kW)
    fan_out = shape[0] * kH * kW        (Linear: out_features; Conv2d: C_out * kH * kW)

(for a ConvTranspose2d, whose weight is ``(C_in, C_out, kH, kW)``, that makes fan_in
``C_out * kH * kW``, as in PyTorch).

==============  ====================================================  ===========================
name            weights                                               bias
==============  ====================================================  ===========================
``"uniform"``   U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default  the same (PyTorch's default)
``"he"``        N(0, 2/fan_in): He et al. 2015, for ReLU networks      0
``"xavier"``    U(-a, a), a = sqrt(6/(fan_in + fan_out)): Glorot and   0
                Bengio 2010, for tanh/sigmoid networks
``"normal"``    N(0, 0.02^2): the DCGAN paper's (Radford et al. 2016)  0
==============  ====================================================  ===========================

Why they differ (lesson 10 measures it): a layer's output variance is about
``fan_in * Var(w) * E[x^2]``. He's ``Var(w) = 2/fan_in`` keeps the mean square constant through
ReLUs, which zero half their inputs; Glorot's compromise between the forward (fan_in) and the backward
(fan_out) pass suits activations that are linear near 0.
"""

from __future__ import annotations

import numpy as np


def fans(shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of this shape (PyTorch's rule, see the module)."""
    if len(shape) < 2:
        raise ValueError(f"a weight has at least 2 dimensions, got shape {tuple(shape)}")
    receptive = int(np.prod(shape[2:], dtype=np.int64))
    return int(shape[1]) * receptive, int(shape[0]) * receptive


def uniform(rng, shape, dtype=np.float32):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for conv and linear weights."""
    bound = 1.0 / np.sqrt(fans(shape)[0])
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def he(rng, shape, dtype=np.float32):
    """N(0, 2/fan_in) (He, Zhang, Ren and Sun, 2015): keeps the mean square through ReLUs."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fans(shape)[0])).astype(dtype)


def xavier(rng, shape, dtype=np.float32):
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio, 2010)."""
    fan_in, fan_out = fans(shape)
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def normal(rng, shape, dtype=np.float32):
    """N(0, 0.02^2), the DCGAN paper's initialisation (Radford, Metz and Chintala, 2016)."""
    return (rng.standard_normal(shape) * 0.02).astype(dtype)


#: name -> initialiser of the weights. The bias is 0 for all but "uniform".
INITIALISERS = {"uniform": uniform, "he": he, "xavier": xavier, "normal": normal}


def initialise(rng, init: str, w_shape, b_shape, bias: bool, dtype):
    """``(weight, bias or None)`` for the initialiser named ``init`` (see the table above)."""
    if init not in INITIALISERS:
        raise ValueError(f"init must be one of {sorted(INITIALISERS)}, got {init!r}")
    weight = INITIALISERS[init](rng, w_shape, dtype)
    if not bias:
        return weight, None
    if init == "uniform":  # PyTorch's bias: the same bound as the weight's
        bound = 1.0 / np.sqrt(fans(w_shape)[0])
        return weight, rng.uniform(-bound, bound, size=b_shape).astype(dtype)
    return weight, np.zeros(b_shape, dtype=dtype)
