"""The live training dashboard (lessons 07, 08, 10): a :class:`cnn_lib.training.Callback`.

    dashboard = Dashboard(every=20)
    history = fit(model, loss_fn, opt, (x, y), epochs=3, val=(x_val, y_val), callbacks=[dashboard])

In Jupyter it shows the loss and accuracy curves, redrawn every ``every`` steps and after
every epoch while ``fit`` runs, and a **Stop** button that ends the run cleanly between two
steps (the weights are those of the last finished step). When the run ends, the widget is
replaced by a static figure of the final curves, so a saved notebook (and its web page) shows
them. Outside Jupyter (a script, the command line) nothing is drawn while training;
``dashboard.figure()`` gives the final curves.
"""

from __future__ import annotations

import contextlib

import matplotlib.pyplot as plt

from ..training import Callback
from ..viz.training import plot_histories

__all__ = ["Dashboard"]


def _in_a_kernel() -> bool:
    """Is this code running in a Jupyter kernel (not a plain Python or IPython terminal)?"""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Dashboard(Callback):
    """Live loss/accuracy curves and a Stop button while :func:`cnn_lib.training.fit` runs.

    every:   redraw after this many steps (and after every epoch); each redraw costs a few
             tens of milliseconds, so do not make it 1 for a long run
    compare: other finished runs to draw beside this one, ``{label: History}``
    label:   this run's name in the legend
    """

    def __init__(self, every: int = 25, *, compare=None, label: str = "this run", live=None):
        self.every, self.compare, self.label = max(1, int(every)), dict(compare or {}), label
        self.live = _in_a_kernel() if live is None else bool(live)
        self.stop_requested = False
        self.redraws = 0
        self._run = None
        self._handle = self._output = self._button = None
        self._widgets = []
        self._events = contextlib.ExitStack()
        self._poll = None

    # what a student can call -----------------------------------------------------------
    def figure(self, title=None):
        """The curves of the run so far (or the finished run), as a matplotlib figure."""
        runs = {**self.compare, self.label: self._run.history} if self._run else dict(self.compare)
        return plot_histories(runs, title=title)

    def request_stop(self) -> None:
        """What the Stop button does: end the run after the current step."""
        self.stop_requested = True

    # the callback ------------------------------------------------------------------------
    def on_train_begin(self, run):
        self._run, self.stop_requested = run, False
        if not self.live:
            return
        import ipywidgets as w
        from IPython.display import display

        self._output = w.Output()
        self._button = w.Button(description="Stop", icon="stop", button_style="danger",
                                tooltip="end training after the current step")
        self._button.on_click(lambda _: self.request_stop())
        self._status = w.HTML(self._status_text(run))
        row = w.HBox([self._button, self._status])
        self._widgets = [w.VBox([row, self._output]), row, self._button, self._status, self._output]
        self._handle = display(self._widgets[0], display_id=True)
        self._poll = self._start_polling()
        self._redraw()

    def on_step_end(self, run):
        if self._poll is not None:
            self._poll(5)  # let a click on Stop reach us while the cell is still running
        if self.stop_requested:
            run.stop, run.reason = True, "stopped with the dashboard's Stop button"
        if self.live and run.step % self.every == 0:
            self._redraw()

    def on_epoch_end(self, run):
        if self.live:
            self._redraw()

    def on_train_end(self, run):
        self._events.close()
        self._poll = None
        if not self.live or self._handle is None:
            return
        fig = self.figure(title=self._status_text(run, final=True))
        self._handle.update(fig)  # the widget gives way to a static figure of the final curves
        plt.close(fig)
        for widget in self._widgets:  # nothing of it is left in the notebook's saved widget state
            widget.close()

    # inside ------------------------------------------------------------------------------
    def _start_polling(self):
        """A function that handles pending widget events (the Stop button) for a few ms.

        A Jupyter kernel handles a button's click only between cells; jupyter-ui-poll lets a
        running cell handle it. Without it, Jupyter's own stop button (an interrupt) still ends
        a run cleanly."""
        try:
            from jupyter_ui_poll import ui_events
        except ImportError:
            return None
        try:
            return self._events.enter_context(ui_events())
        except Exception:  # noqa: BLE001 -- a frontend or kernel it does not know: no polling
            return None

    def _status_text(self, run, final=False):
        done = run.history.epochs
        text = f"epoch {run.epoch}/{run.epochs}, step {run.step}"
        if done:
            last = done[-1]
            text += f", train accuracy {last['train_accuracy']:.3f}"
            if "val_accuracy" in last:
                text += f", held-out accuracy {last['val_accuracy']:.3f}"
        if final and run.history.stopped:
            text += f" ({run.history.stopped})"
        return text

    def _redraw(self):
        from IPython.display import display

        self.redraws += 1
        self._status.value = self._status_text(self._run)
        fig = self.figure()
        with self._output:
            self._output.clear_output(wait=True)
            display(fig)
        plt.close(fig)
