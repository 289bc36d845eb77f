"""Input checks shared by every layer.

Each check raises a ``TypeError``/``ValueError`` whose message names what was expected and
what arrived, so a student never has to decode a NumPy broadcasting traceback from inside a
kernel. Checks run *before* a layer touches its cache or parameters, so a rejected call leaves
the layer exactly as it was.
"""

from __future__ import annotations

import numbers

import numpy as np


def pair(value, name: str, *, minimum: int) -> tuple[int, int]:
    """Return ``value`` as an ``(int, int)`` pair; accept an int or a pair of ints."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value), int(value))
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
    ):
        value = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def positive_int(value, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def float_array(x, name: str, layer: str, *, ndim: int | None = None, layout: str = "") -> None:
    """Check that ``x`` is a finite floating-point ndarray of the given rank."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{layer}: {name} must be a NumPy array, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        hint = ""
        if np.issubdtype(x.dtype, np.integer):
            hint = " (images stored as integers? convert first, e.g. x.astype(np.float32) / 255)"
        raise TypeError(f"{layer}: {name} must have a floating dtype, got {x.dtype}{hint}")
    if ndim is not None and x.ndim != ndim:
        hint = ""
        if ndim == 4 and x.ndim == 2:
            hint = "; a single image (H, W) becomes x[None, None] with shape (1, 1, H, W)"
        elif ndim == 4 and x.ndim == 3:
            hint = "; a batch of one-channel images (N, H, W) becomes x[:, None]"
        raise ValueError(
            f"{layer}: {name} must have {ndim} dimensions {layout}, got shape {x.shape}{hint}"
        )
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(
            f"{layer}: {name} contains {bad} NaN or inf value(s); expected finite numbers "
            "(a diverging loss upstream? try a smaller learning rate)"
        )


def channels(x: np.ndarray, expected: int, layer: str) -> None:
    if x.shape[1] != expected:
        raise ValueError(
            f"{layer}: expected input with {expected} channel(s) (N, {expected}, H, W), "
            f"got shape {x.shape} with {x.shape[1]} channel(s)"
        )


def upstream(dy, expected_shape: tuple, layer: str) -> None:
    """Check the gradient handed to ``backward`` against the output of ``forward``."""
    if not isinstance(dy, np.ndarray):
        raise TypeError(
            f"{layer}.backward: dy must be a NumPy array of shape {expected_shape}, "
            f"got {type(dy).__name__}"
            + (" (did the layer after this one return None from its backward?)" if dy is None else "")
        )
    if dy.shape != tuple(expected_shape):
        raise ValueError(
            f"{layer}.backward: dy must have the shape of the forward output {tuple(expected_shape)}, "
            f"got {dy.shape}"
        )


def forward_called(cache, layer: str) -> None:
    if cache is None:
        raise RuntimeError(f"{layer}.backward called before forward: run forward(x) first")
