"""What the lessons' check cells use to run an exercise's answer: :func:`run`.

A check cell calls the function a student wrote and compares its result with the library's.
Two things would make that comparison mean less than it says, and :func:`run` rules out both:

* **The answer calls the library function it is meant to re-create** (``return
  vectorized.maxpool2d_backward(dy, cache)`` in the exercise "write max pooling's backward").
  ``run(..., forbid=["maxpool2d_backward"])`` watches every Python call made while the
  answer runs (``sys.setprofile``), so it sees the kernel of that name in every tier
  (:data:`cnn_lib.kernels.TIERS`), however it is reached: imported under another name, or
  through a layer's ``backward``. Such an answer fails the check with a message that says so.
* **A correct answer that writes to stderr** (a debug print to ``sys.stderr``, a
  ``warnings.warn``, NumPy's "RuntimeWarning: divide by zero") would score 0 under nbgrader,
  which gives no points to a check cell with *any* stderr output. :func:`run` catches what
  the answer writes to ``sys.stderr`` and the warnings it raises, and prints them on stdout
  (so the student still sees them), marked as coming from the answer.

Nothing here needs nbgrader: students run the same check cells on a laptop.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import types
import warnings

__all__ = ["ForbiddenCall", "answered", "run"]


class ForbiddenCall(AssertionError):
    """The answer called a library function that the exercise asks the student to write."""


def _code_objects(forbid) -> dict:
    """``forbid`` (kernel names and/or functions) -> {code object: name shown to the student}."""
    from .kernels import TIERS

    if isinstance(forbid, (str, types.FunctionType, types.MethodType)):
        forbid = [forbid]
    watched = {}
    for item in forbid:
        if isinstance(item, str):
            found = [(getattr(module, item), f"kernels.{tier}.{item}")
                     for tier, module in TIERS.items() if hasattr(module, item)]
            if not found:
                raise ValueError(f"run: forbid names {item!r}, which is no kernel of cnn_lib.kernels")
        else:
            function = getattr(item, "__func__", item)
            if not hasattr(function, "__code__"):
                raise TypeError(f"run: forbid takes kernel names and Python functions, got {item!r}")
            found = [(function, f"{function.__module__}.{function.__qualname__}")]
        for function, name in found:
            watched.setdefault(function.__code__, name)
    return watched


def run(function, *args, forbid=(), **kwargs):
    """``function(*args, **kwargs)``, as an exercise's check cell calls the student's answer.

    forbid:  kernel names (``"maxpool2d_backward"``: that kernel in every tier) and/or
             functions (``losses.SoftmaxCrossEntropy.backward``) the answer must not call.
    returns: what ``function`` returned.
    raises:  :class:`ForbiddenCall` (an ``AssertionError``) if the answer called one of them,
             naming it; anything the answer itself raised, unchanged.

    What the answer writes to ``sys.stderr`` and the warnings it raises are printed on stdout
    afterwards, after a line that says so, and do not reach stderr (see the module's docstring).
    """
    if not callable(function):
        raise TypeError(f"run: expected your function, got {type(function).__name__} {function!r}: "
                        "did the cell that defines it run?")
    watched = _code_objects(forbid)
    calls: list[str] = []

    def spy(frame, event, arg):
        if event == "call" and frame.f_code in watched:
            calls.append(watched[frame.f_code])

    stderr = io.StringIO()
    previous = sys.getprofile()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(stderr):
        warnings.simplefilter("always")
        if watched:
            sys.setprofile(spy)
            threading.setprofile(spy)
        try:
            result = function(*args, **kwargs)
        finally:
            if watched:
                threading.setprofile(None)
                sys.setprofile(previous)
    said = stderr.getvalue()
    said += "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
                    for w in caught)
    if said:
        name = getattr(function, "__name__", "your function")
        print(f"(what {name} wrote to stderr or warned, shown here; it does not cost points:)\n"
              + said.rstrip("\n"))
    if calls:
        names = ", ".join(dict.fromkeys(calls))
        raise ForbiddenCall(f"your answer called cnn_lib's own {names}, the very function this exercise "
                            "asks you to write. Compute it yourself (NumPy is fine).")
    return result


def answered(*names) -> None:
    """Check that the notebook defines every name in ``names`` (the answers of an exercise whose
    solution cell sets variables rather than writing a function); raise ``NotImplementedError``
    naming the missing ones otherwise, as an unanswered function exercise does."""
    namespace = sys._getframe(1).f_globals
    missing = [name for name in names if name not in namespace]
    if missing:
        raise NotImplementedError(f"not answered yet: {', '.join(missing)} "
                                  f"{'is' if len(missing) == 1 else 'are'} not defined. Write your answer "
                                  "in the exercise's cell above, run it, then run this check again.")
