"""Training: ``fit``, ``evaluate`` and ``predict``, and the callbacks that watch a run.

    history = fit(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.05),
                  (x_train, y_train), epochs=3, batch_size=32, rng=0,
                  val=(x_test, y_test), callbacks=[ProgressBar()])
    history.epochs[-1]          # {"epoch": 3, "train_loss": ..., "val_accuracy": ..., ...}

One training step is the four lines every lesson writes by hand::

    optimizer.zero_grad()                                  # backward adds into grads
    loss = loss_fn.forward(model.forward(x_batch), y_batch)
    model.backward(loss_fn.backward())                     # gradients only
    optimizer.step()                                       # the only change to the weights

``fit`` repeats it over shuffled mini-batches and keeps a :class:`History`. Anything else (a
progress bar, live curves, checkpoints, stopping early) is a :class:`Callback`: an object whose
methods ``fit`` calls at the start, after every step, after every epoch and at the end. A
callback can end the run by setting ``run.stop = True``; so does Ctrl-C (Jupyter's stop
button), between two steps: the weights then are those of the last finished step, and the
history says ``stopped="interrupted"``. A run whose outputs become NaN or infinite (a learning
rate too large) stops there too, and ``stopped`` says at which step.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .data import iterate_minibatches
from .layers import as_generator


@dataclass
class History:
    """What a run of :func:`fit` measured.

    step_loss: the mini-batch loss of every step, in order
    epochs:    one dict per finished epoch: ``epoch``, ``train_loss`` and ``train_accuracy``
               (means over that epoch's steps, while the weights were still changing),
               ``val_loss`` and ``val_accuracy`` (after the epoch, when ``val`` was given),
               ``seconds`` (wall time of the epoch's training, evaluation excluded)
    stopped:   None if every epoch ran, else why not ("interrupted", or a callback's reason)
    """

    step_loss: list = field(default_factory=list)
    epochs: list = field(default_factory=list)
    stopped: str | None = None

    @property
    def seconds(self) -> float:
        """Training wall time of the finished epochs."""
        return float(sum(e["seconds"] for e in self.epochs))

    def to_json(self, path) -> None:
        with open(path, "w") as f:
            json.dump(asdict(self), f, indent=1)

    def to_csv(self, path) -> None:
        """One row per finished epoch."""
        keys = list(self.epochs[0]) if self.epochs else ["epoch"]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.epochs)


@dataclass
class Run:
    """The state of a run, as callbacks see it. Set ``stop = True`` to end the run after
    the current step (and ``reason`` to say why)."""

    model: object
    history: History
    epochs: int
    steps_per_epoch: int
    epoch: int = 0  # the current epoch, from 1
    step: int = 0  # steps finished so far, over all epochs
    loss: float = math.nan  # the last step's loss
    stop: bool = False
    reason: str = "stopped by a callback"


class Callback:
    """Override any of these; ``fit`` calls them in this order."""

    def on_train_begin(self, run: Run) -> None: ...

    def on_step_end(self, run: Run) -> None: ...

    def on_epoch_end(self, run: Run) -> None: ...

    def on_train_end(self, run: Run) -> None: ...


def _check_data(data, name):
    try:
        x, y = data
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (x, y) of arrays, got {type(data).__name__}") from None
    if len(x) != len(y):
        raise ValueError(f"{name}: x and y must have the same length, got {len(x)} and {len(y)}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty")
    return x, y


def fit(model, loss_fn, optimizer, train, *, epochs=1, batch_size=32, rng=None, val=None,
        callbacks=()) -> History:
    """Train ``model`` on ``train = (x, y)`` for ``epochs`` passes of shuffled mini-batches.

    rng:       the shuffling's ``np.random.Generator`` or int seed (None: unseeded)
    val:       an optional ``(x, y)`` measured after every epoch
    callbacks: :class:`Callback` objects (a progress bar, a dashboard, a checkpoint, ...)
    returns:   the :class:`History`; the model keeps the trained weights
    """
    x, y = _check_data(train, "train")
    if val is not None:
        val = _check_data(val, "val")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    rng = as_generator(rng)
    history = History()
    run = Run(model, history, epochs, steps_per_epoch=-(-len(x) // batch_size))
    for callback in callbacks:
        callback.on_train_begin(run)
    try:
        for epoch in range(1, epochs + 1):
            run.epoch = epoch
            model.train()
            start, losses, correct = time.perf_counter(), [], 0
            for x_batch, y_batch in iterate_minibatches(x, y, batch_size, rng=rng):
                optimizer.zero_grad()
                logits = model.forward(x_batch)
                if not np.all(np.isfinite(logits)):  # diverged: the weights have blown up
                    run.stop = True
                    run.reason = (f"diverged at step {run.step + 1}: the outputs became NaN or infinite "
                                  "(try a smaller learning rate)")
                    break
                loss = loss_fn.forward(logits, y_batch)
                model.backward(loss_fn.backward(), need_input_grad=False)  # images need no dL/dx
                optimizer.step()
                losses.append(loss * len(x_batch))
                correct += int(np.sum(logits.argmax(axis=1) == y_batch))
                history.step_loss.append(loss)
                run.step, run.loss = run.step + 1, loss
                for callback in callbacks:
                    callback.on_step_end(run)
                if run.stop:
                    break
            seconds = time.perf_counter() - start
            if run.stop:  # an unfinished epoch is not recorded as one
                history.stopped = run.reason
                break
            record = {"epoch": epoch, "train_loss": float(np.sum(losses) / len(x)),
                      "train_accuracy": correct / len(x)}
            if val is not None:
                record["val_loss"], record["val_accuracy"] = evaluate(model, loss_fn, *val)
            record["seconds"] = seconds
            history.epochs.append(record)
            for callback in callbacks:
                callback.on_epoch_end(run)
            if run.stop:
                history.stopped = run.reason
                break
    except KeyboardInterrupt:  # Ctrl-C or Jupyter's stop button: keep what was trained
        history.stopped = "interrupted"
    finally:
        model.eval()
        for callback in callbacks:
            callback.on_train_end(run)
    return history


def predict(model, x, *, batch_size=256) -> np.ndarray:
    """The model's outputs (logits) for every item of ``x``, in evaluation mode, in batches."""
    model.eval()
    return np.concatenate([model.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate(model, loss_fn, x, y, *, batch_size=256) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``(x, y)``, in evaluation mode."""
    x, y = _check_data((x, y), "evaluate")
    logits = predict(model, x, batch_size=batch_size)
    return float(loss_fn.forward(logits, y)), float(np.mean(logits.argmax(axis=1) == y))


# --------------------------------------------------------------------------- callbacks


class ProgressBar(Callback):
    """A tqdm progress bar over all steps, with the running loss and each epoch's accuracy:
    a widget in Jupyter, text in a terminal (``tqdm.auto``)."""

    def __init__(self, every: int = 10, **tqdm_options):
        self.every, self.options, self.bar = max(1, int(every)), tqdm_options, None

    def on_train_begin(self, run):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=run.epochs * run.steps_per_epoch, unit="step", **self.options)

    def on_step_end(self, run):
        self.bar.update(1)
        if run.step % self.every == 0:
            self.bar.set_postfix(epoch=run.epoch, loss=f"{run.loss:.3f}", refresh=False)

    def on_epoch_end(self, run):
        last = run.history.epochs[-1]
        shown = {"epoch": run.epoch, "train acc": f"{last['train_accuracy']:.3f}"}
        if "val_accuracy" in last:
            shown["val acc"] = f"{last['val_accuracy']:.3f}"
        self.bar.set_postfix(shown)

    def on_train_end(self, run):
        if self.bar is not None:
            self.bar.close()


class Checkpoint(Callback):
    """Save the weights after every epoch (``model.save``: atomic, so an interrupt never
    leaves a broken file), or only when ``monitor`` (e.g. ``"val_accuracy"``) improved."""

    def __init__(self, path, monitor: str | None = None):
        self.path, self.monitor, self.best = os.fspath(path), monitor, -math.inf
        self.saved_epochs: list[int] = []

    def on_epoch_end(self, run):
        last = run.history.epochs[-1]
        if self.monitor is not None:
            if self.monitor not in last:
                raise KeyError(f"Checkpoint: no {self.monitor!r} in the history; have {sorted(last)}")
            value = last[self.monitor] if "accuracy" in self.monitor else -last[self.monitor]
            if value <= self.best:
                return
            self.best = value
        run.model.save(self.path)
        self.saved_epochs.append(run.epoch)


class StopWhen(Callback):
    """End the run after a step whose loss is NaN or infinite (a diverged run), or once a step
    count is reached: ``StopWhen(max_steps=100)``."""

    def __init__(self, max_steps: int | None = None):
        self.max_steps = max_steps

    def on_step_end(self, run):
        if not math.isfinite(run.loss):
            run.stop, run.reason = True, f"the loss became {run.loss} at step {run.step}"
        elif self.max_steps is not None and run.step >= self.max_steps:
            run.stop, run.reason = True, f"max_steps={self.max_steps} reached"


class OneCycle(Callback):
    """Set the optimizer's learning rate before every step: a linear warm-up from
    ``peak_lr / 10`` to ``peak_lr`` over the first ``warmup`` share of the run, then a linear
    decay that reaches 0 as the run ends (the "one-cycle" shape of Smith and Topin, 2018, with straight
    lines). A short run gains most from the decay: the last steps, with a small learning rate,
    settle into a minimum instead of bouncing around it.

    OneCycle(optimizer, peak_lr, warmup=0.15)
    """

    def __init__(self, optimizer, peak_lr: float, warmup: float = 0.15):
        if not (isinstance(peak_lr, (int, float)) and peak_lr > 0):
            raise ValueError(f"OneCycle: peak_lr must be a positive number, got {peak_lr!r}")
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"OneCycle: warmup must be a share of the run in [0, 1), got {warmup!r}")
        self.optimizer, self.peak_lr, self.warmup = optimizer, float(peak_lr), float(warmup)
        self.total = 1
        self.lrs: list[float] = []  # the learning rate of every step, for plotting

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based) of a run of ``self.total`` steps."""
        up = max(1, round(self.warmup * self.total))
        if step < up and self.warmup > 0:
            return self.peak_lr * (0.1 + 0.9 * step / up)
        return self.peak_lr * max(0.0, (self.total - step) / max(1, self.total - up))

    def _set(self, step):
        self.optimizer.lr = self.lr_at(step)
        self.lrs.append(self.optimizer.lr)

    def on_train_begin(self, run):
        self.total, self.lrs = run.epochs * run.steps_per_epoch, []
        self._set(0)

    def on_step_end(self, run):
        if run.step < self.total:
            self._set(run.step)


class GradNorms(Callback):
    """Record the size of every weight's gradient during training: after every ``every``-th
    step, ``norms[name]`` gets the root mean square of ``grads[name]`` (one number per layer,
    comparable between layers of different sizes). Lesson 10 plots it layer by layer, to see
    gradients vanish or explode with depth.

    GradNorms(every=1, only="weight")    only: record the names that end with this ("" for all)
    """

    def __init__(self, every: int = 1, only: str = "weight"):
        self.every, self.only = max(1, int(every)), only
        self.steps: list[int] = []
        self.norms: dict[str, list[float]] = {}

    def on_step_end(self, run):
        if run.step % self.every:
            return
        self.steps.append(run.step)
        for name, grad in run.model.grads.items():
            if name.endswith(self.only):
                rms = float(np.sqrt(np.mean(np.square(grad, dtype=np.float64))))
                self.norms.setdefault(name, []).append(rms)
