"""Numerical gradient checking that talks to a student.

    from cnn_lib.gradcheck import check_layer
    report = check_layer(Conv2d(1, 2, 3, dtype=np.float64, rng=0), x)   # x float64
    print(report)          # one line per input/parameter, plus plain-words diagnostics
    report.assert_ok()     # raise AssertionError with the same text if anything failed

How it works: pick a fixed random "upstream gradient" G of the output's shape and look at the
scalar L = sum(forward(x) * G). Then dL/dx is exactly what ``backward(G)`` must return, and
dL/dW what it must write into ``grads["W"]``. We estimate the same numbers by nudging each
entry by ±h (centred differences) and compare.

The relative error we report is ``max|analytic - numerical| / max(max|analytic|, max|numerical|)``:
the largest disagreement measured against the size of the gradient. In float64, a right
gradient gives about 1e-10 or less; a wrong one gives 1e-2 to 1.

It works on any object with a forward and a backward method, not only cnn_lib layers: name
the methods (``forward="feedforward", backward="backprop"``) and the weight attributes
(``params=["filters"]``) of a layer written in another style.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def numerical_gradient(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Centred-difference estimate of the gradient of a scalar function.

    f:       a function of x returning a scalar (x is nudged in place, then restored, so f may
             also read x through a closure or as a layer's weight)
    x:       float64 array of any shape
    returns: array of x's shape with (f(x + h e_i) - f(x - h e_i)) / (2h) at every index i
    """
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"numerical_gradient: x must be a float array, got {x.dtype}")
    grad = np.zeros(x.shape, dtype=np.float64)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        f_plus = float(f(x))
        x[index] = old - h
        f_minus = float(f(x))
        x[index] = old
        grad[index] = (f_plus - f_minus) / (2 * h)
    return grad


def relative_error(analytic, numerical) -> float:
    """max|a - n| / max(max|a|, max|n|); 0.0 when both are exactly zero."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numerical, dtype=np.float64)
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(n), initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(a - n)) / scale)


@dataclass
class GradResult:
    """The comparison for one gradient (the input's or one parameter's)."""

    name: str
    shape: tuple
    error: float | None  # None when the analytic gradient was missing or unusable
    passed: bool
    worst_index: tuple | None = None
    analytic_at_worst: float | None = None
    numerical_at_worst: float | None = None
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        status = "ok  " if self.passed else "FAIL"
        err = "   n/a   " if self.error is None else f"{self.error:9.2e}"
        text = f"  {status} {self.name:<16} {str(self.shape):<18} rel. error {err}"
        if not self.passed and self.worst_index is not None:
            text += (f"  worst at {self.worst_index}: analytic {self.analytic_at_worst:.6g},"
                     f" numerical {self.numerical_at_worst:.6g}")
        return text


@dataclass
class GradCheckReport:
    """Everything ``check_layer`` found. ``passed`` is True only if every gradient matched
    and no problem was seen. Printing it gives a table and plain-words diagnostics."""

    layer: str
    tol: float
    results: list[GradResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and all(r.passed for r in self.results)

    @property
    def max_error(self) -> float:
        errors = [r.error for r in self.results if r.error is not None]
        return max(errors) if errors else float("nan")

    def __getitem__(self, name) -> GradResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def __str__(self):
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [f"gradient check of {self.layer}: {verdict} (tolerance {self.tol:.0e})"]
        lines += [r.line() for r in self.results]
        notes = [f"{r.name}: {n}" for r in self.results for n in r.notes]
        if self.problems or notes:
            lines.append("what looks wrong:")
            lines += [f"  - {p}" for p in self.problems + notes]
        return "\n".join(lines)

    __repr__ = __str__

    def assert_ok(self) -> None:
        if not self.passed:
            raise AssertionError(str(self))


def _diagnose(analytic: np.ndarray, numerical: np.ndarray, tol: float) -> list[str]:
    """Plain-words guesses about *how* a wrong gradient is wrong."""
    notes = []
    if not np.any(analytic) and np.any(numerical):
        return ["the analytic gradient is all zeros, but the loss does depend on these numbers "
                "(was this gradient never computed, or computed into a variable nobody returns?)"]
    denom = float(np.sum(numerical * numerical))
    if denom > 0:
        c = float(np.sum(analytic * numerical) / denom)  # least-squares factor: analytic ≈ c * numerical
        if abs(c - 1) > 1e-3 and relative_error(analytic, c * numerical) < 1e-5:
            if abs(c + 1) < 1e-3:
                notes.append("the analytic gradient has the wrong sign (it is -1 x the numerical one)")
            else:
                notes.append(f"the analytic gradient is {c:.4g} x the numerical one everywhere: a "
                             "constant factor is off (a missing 1/N from a mean? a factor of 2? "
                             "1/(kH*kW) in average pooling?)")
    if not notes:
        scale = max(np.max(np.abs(numerical)), np.max(np.abs(analytic)), 1e-300)
        wrong = np.abs(analytic - numerical) > tol * scale
        notes.append(f"{int(wrong.sum())} of {wrong.size} entries disagree by more than the tolerance")
        if relative_error(analytic, numerical) < 1e-4:
            notes.append(f"the disagreement is small: with gradients as small as {scale:.2g} it may be "
                         "finite-difference round-off rather than a bug; try a larger h (1e-5) "
                         "and make sure everything is float64")
    return notes


def _upstream_shape_hint(out) -> str:
    return "" if out is None else f" (forward returned shape {np.shape(out)})"


def check_layer(layer, x, *forward_args, params=None, h: float = 1e-6, tol: float = 1e-7,
                seed: int = 0, forward: str = "forward", backward: str = "backward",
                backward_args: tuple = (), check_input: bool = True) -> GradCheckReport:
    """Compare a layer's backward pass with finite differences.

    layer:         any object with forward/backward methods (names set by ``forward=``/``backward=``)
    x:             float64 input; ``forward_args`` are passed after it (e.g. labels for a loss)
    params:        which weights to check: a dict {name: array} or a list of attribute names;
                   default ``layer.params`` if the layer has one
    h, tol:        finite-difference step and the largest relative error that passes
    seed:          seed of the random upstream gradient G
    backward_args: extra arguments for backward after G (e.g. a learning rate, for layers
                   written in the tutorial's style)
    returns:       a :class:`GradCheckReport`; the layer's weights are left as they were.

    If forward returns a scalar (a loss), L is that scalar and backward is called with no
    upstream gradient. A layer with ``zero_grad`` has it called before its backward (cnn_lib's
    backward adds into ``grads``); a layer's ``buffers`` are restored after every forward pass,
    and the random generators of a layer and its sub-layers (an ``rng`` attribute, as Dropout
    has) before each one, so that every probe sees the same random mask.
    """
    fwd, bwd = getattr(layer, forward), getattr(layer, backward)
    name = getattr(layer, "name", None)
    report = GradCheckReport(name if isinstance(name, str) else type(layer).__name__, tol)
    x = np.array(x, copy=True)
    if x.dtype != np.float64:
        report.problems.append(f"x is {x.dtype}: finite differences need float64 (x.astype(np.float64))")
        x = x.astype(np.float64)

    if params is None:
        params = dict(getattr(layer, "params", {}) or {})
    elif not isinstance(params, dict):
        params = {name: getattr(layer, name) for name in params}
    for name, value in params.items():
        if value.dtype != np.float64:
            report.problems.append(f"parameter {name!r} is {value.dtype}: create the layer with "
                                   "dtype=np.float64 for a gradient check")
    saved = {name: value.copy() for name, value in params.items()}
    # buffers (running statistics) change on every forward in training mode: each probe
    # starts from the same ones, and the layer gets its own back at the end
    buffers = dict(getattr(layer, "buffers", None) or {})
    saved_buffers = {name: value.copy() for name, value in buffers.items()}
    # a layer that draws random numbers (Dropout's masks) draws the same ones on every probe
    generators = _random_generators(layer)
    saved_states = [g.bit_generator.state for g in generators]

    def restore_buffers():
        for name, value in buffers.items():
            value[...] = saved_buffers[name]
        for g, state in zip(generators, saved_states):
            g.bit_generator.state = state

    def restore():
        for name, value in params.items():
            value[...] = saved[name]
        restore_buffers()

    def run_forward(x_in):
        restore_buffers()
        y = fwd(x_in, *forward_args)
        restore_buffers()
        return y

    try:
        out = run_forward(x.copy())
        if out is None:
            report.problems.append("forward returned None: it must return its output")
            return report
        scalar = np.ndim(out) == 0
        rng = np.random.default_rng(seed)
        upstream = None if scalar else rng.standard_normal(np.shape(out))
        if not np.all(np.isfinite(out)):
            report.problems.append("forward produced NaN or inf")

        def loss(_=None):
            y = run_forward(x_work)
            return float(y) if scalar else float(np.sum(np.asarray(y, dtype=np.float64) * upstream))

        x_work = x.copy()
        run_forward(x_work)
        if callable(getattr(layer, "zero_grad", None)):  # backward adds into grads: start at 0
            layer.zero_grad()
        dx = bwd(*backward_args) if scalar else bwd(upstream.copy(), *backward_args)

        changed = [name for name, value in params.items() if not np.array_equal(value, saved[name])]
        if changed:
            report.problems.append(
                f"backward changed the weights {changed}: it looks like an update hidden inside "
                "backprop. backward should only compute gradients; let an optimizer update, so the "
                "gradients can be checked (and a missing return cannot hide)")
            restore()
        grads = getattr(layer, "grads", {}) or {}
        analytic = {name: (None if grads.get(name) is None else np.array(grads[name], dtype=np.float64))
                    for name in params}

        if check_input:
            numerical = numerical_gradient(loss, x_work, h)
            report.results.append(_compare("input x", x.shape, dx, numerical, tol,
                                           what="backward's return value"))
        for name, value in params.items():
            numerical = numerical_gradient(loss, value, h)
            report.results.append(_compare(name, value.shape, analytic[name], numerical, tol,
                                           what=f"grads[{name!r}]"))
    finally:
        restore()
    return report


def _random_generators(layer) -> list[np.random.Generator]:
    """The ``rng`` generators of a layer and of its sub-layers (``layers``), each once."""
    found, todo = [], [layer]
    while todo:
        item = todo.pop()
        g = getattr(item, "rng", None)
        if isinstance(g, np.random.Generator) and all(g is not f for f in found):
            found.append(g)
        todo.extend(getattr(item, "layers", None) or [])
    return found


def _compare(name, shape, analytic, numerical, tol, what) -> GradResult:
    if analytic is None:
        hint = (" It must return dL/dx (the gradient for the layer below); a function that "
                "ends without `return` gives None.") if name == "input x" else \
               " Did backward fill the layer's grads dict?"
        return GradResult(name, shape, None, False, notes=[f"{what} is None.{hint}"])
    analytic = np.asarray(analytic)
    if analytic.shape != tuple(shape):
        return GradResult(name, shape, None, False, notes=[
            f"{what} has shape {analytic.shape}, expected {tuple(shape)} (a gradient always has "
            "the shape of the thing it is the gradient of)"])
    if not np.all(np.isfinite(analytic)):
        return GradResult(name, shape, None, False, notes=[f"{what} contains NaN or inf"])
    analytic = analytic.astype(np.float64)
    error = relative_error(analytic, numerical)
    passed = error <= tol
    result = GradResult(name, shape, error, passed)
    if not passed:
        worst = np.unravel_index(np.argmax(np.abs(analytic - numerical)), analytic.shape)
        result.worst_index = tuple(int(i) for i in worst)
        result.analytic_at_worst = float(analytic[worst])
        result.numerical_at_worst = float(numerical[worst])
        result.notes = _diagnose(analytic, numerical, tol)
    return result
