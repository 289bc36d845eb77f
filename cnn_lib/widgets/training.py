"""The live training dashboard (lessons 07, 08, 10): a :class:`cnn_lib.training.Callback`.

    dashboard = Dashboard(every=20)
    history = fit(model, loss_fn, opt, (x, y), epochs=3, val=(x_val, y_val), callbacks=[dashboard])

In Jupyter it shows the loss and accuracy curves, redrawn every ``every`` steps and after
every epoch while ``fit`` runs, and a status line. To stop a run, press Jupyter's own stop
button (the square in the toolbar: it interrupts the kernel); ``fit`` ends the run cleanly
between two steps and returns the history so far. When the run ends, the widget is replaced by
a static figure of the final curves, so a saved notebook (and its web page) shows them. Outside
Jupyter (a script, the command line) nothing is drawn while training; ``dashboard.figure()``
gives the final curves.

(Why no Stop button of its own: a running cell's kernel handles a widget's click only after
the cell ends. jupyter-ui-poll works around that on older kernels; with ipykernel 7 the click
was not delivered in this course's tests, while the interrupt always is.)
"""

from __future__ import annotations

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
    """Live loss/accuracy curves while :func:`cnn_lib.training.fit` runs.

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
        self._handle = self._output = self._status = None
        self._widgets = []

    # what a student can call -----------------------------------------------------------
    def figure(self, title=None):
        """The curves of the run so far (or the finished run), as a matplotlib figure."""
        runs = {**self.compare, self.label: self._run.history} if self._run else dict(self.compare)
        return plot_histories(runs, title=title)

    def request_stop(self) -> None:
        """End the run after the current step (for a callback or a test; in Jupyter, the
        toolbar's stop button interrupts the kernel, which ``fit`` handles the same way)."""
        self.stop_requested = True

    # the callback ------------------------------------------------------------------------
    def on_train_begin(self, run):
        self._run, self.stop_requested = run, False
        if not self.live:
            return
        import ipywidgets as w
        from IPython.display import display

        self._output = w.Output()
        self._status = w.HTML(self._status_text(run))
        hint = w.HTML("<i>to stop: Jupyter's stop button &#9632; (training ends cleanly after the current "
                      "step)</i>")
        self._widgets = [w.VBox([self._status, hint, self._output]), self._status, hint, self._output]
        self._handle = display(self._widgets[0], display_id=True)
        self._redraw()

    def on_step_end(self, run):
        if self.stop_requested:
            run.stop, run.reason = True, "stopped with Dashboard.request_stop()"
        if self.live and run.step % self.every == 0:
            self._redraw()

    def on_epoch_end(self, run):
        if self.live:
            self._redraw()

    def on_train_end(self, run):
        if not self.live or self._handle is None:
            return
        fig = self.figure(title=self._status_text(run, final=True))
        self._handle.update(fig)  # the widget gives way to a static figure of the final curves
        plt.close(fig)
        for widget in self._widgets:  # nothing of it is left in the notebook's saved widget state
            widget.close()

    # inside ------------------------------------------------------------------------------
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
        before = set(plt.get_fignums())
        try:
            fig = self.figure()
            with self._output:
                self._output.clear_output(wait=True)
                display(fig)
        finally:  # also when an interrupt lands mid-drawing: no half-made figure is left to show
            for number in set(plt.get_fignums()) - before:
                plt.close(number)
