"""ipywidgets explorers: pooling (lesson 05).

:class:`PoolingRoutingExplorer` shows, for one channel, how a pooling layer routes each
output's upstream gradient back to its input: choose the window size, the stride, max or
average pooling, the tie rule, and the output cell to follow.

    explorer = PoolingRoutingExplorer()
    explorer.widget()                                     # interactive (in Jupyter)
    explorer.draw(kernel=3, stride=2, window=(0, 1))      # one static figure
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..kernels import conv_output_hw
from ..viz.pooling import plot_pool_routing, pool_routes, routed_gradient

__all__ = ["PoolingRoutingExplorer", "DEFAULT_POOLING_INPUT"]

#: A 6x6 patch that looks like a corner of an MNIST digit: a flat zero background (ties!),
#: a stroke, and one window holding two equal maxima (the 9s).
DEFAULT_POOLING_INPUT = np.array([
    [0, 0, 0, 0, 1, 0],
    [0, 0, 3, 8, 9, 2],
    [0, 4, 9, 9, 5, 0],
    [0, 7, 6, 0, 0, 0],
    [0, 0, 8, 5, 0, 0],
    [0, 0, 2, 0, 0, 0],
], dtype=np.float64)


class PoolingRoutingExplorer:
    """Follow the gradient of one pooling window back to the input.

    x: (H, W) one channel of input (default :data:`DEFAULT_POOLING_INPUT`); keep it small
       (<= 8x8), every number is printed.

    After each :meth:`draw`, ``self.last`` holds what was drawn: the settings, ``y``
    (H_out, W_out), ``dy`` (H_out, W_out), ``dx`` (H, W) and ``routes`` (output cell -> list of
    (row, col, weight) input cells that receive its gradient).
    """

    max_kernel = 4
    max_stride = 4

    def __init__(self, x=None):
        self.x = (DEFAULT_POOLING_INPUT if x is None else np.asarray(x, dtype=np.float64)).copy()
        if self.x.ndim != 2:
            raise ValueError(f"x must be one (H, W) channel, got shape {self.x.shape}")
        self.last = None
        self.controls = {}
        self.output = None

    def output_shape(self, kernel, stride):
        """(H_out, W_out) = (floor((H - k) / s) + 1, floor((W - k) / s) + 1)."""
        h, w = self.x.shape
        return conv_output_hw((h, w), (kernel, kernel), (stride, stride))

    def draw(self, kernel=2, stride=2, mode="max", window=(0, 0), tie_rule="first",
             only_selected=False):
        """One figure: x with its windows, y with dy, and dx with arrows from ``window``.

        kernel, stride: ints (square windows); mode: "max" or "avg";
        window: (i, j) output cell to follow (clipped into the output);
        tie_rule: "first" (cnn_lib) or "all" (the tutorial's rule, max only);
        only_selected: upstream gradient only at ``window`` (else 1, 2, 3, ... everywhere).
        returns: the matplotlib Figure
        """
        ho, wo = self.output_shape(kernel, stride)
        if ho < 1 or wo < 1:
            raise ValueError(f"kernel {kernel} does not fit the {self.x.shape} input")
        window = (min(max(int(window[0]), 0), ho - 1), min(max(int(window[1]), 0), wo - 1))
        fig = plot_pool_routing(self.x, kernel, stride, mode, window=window, tie_rule=tie_rule,
                                only_selected=only_selected)
        y, routes = pool_routes(self.x, kernel, stride, mode, tie_rule)
        dy = np.arange(1, ho * wo + 1, dtype=np.float64).reshape(ho, wo)
        if only_selected:
            keep = np.zeros_like(dy)
            keep[window] = 1.0
            dy = dy * keep
        self.last = {
            "kernel": kernel, "stride": stride, "mode": mode, "window": window,
            "tie_rule": tie_rule, "only_selected": only_selected,
            "y": y, "dy": dy, "dx": routed_gradient(routes, dy, self.x.shape), "routes": routes,
        }
        return fig

    def widget(self):
        """An ipywidgets box: sliders for kernel/stride/window, buttons for mode and tie rule."""
        import ipywidgets as W
        from IPython.display import display

        c = {
            "kernel": W.IntSlider(value=2, min=1, max=min(self.max_kernel, *self.x.shape),
                                  description="kernel"),
            "stride": W.IntSlider(value=2, min=1, max=self.max_stride, description="stride"),
            # button_width "auto": each button as wide as its text ("every max (tutorial)" was cut)
            "mode": W.ToggleButtons(options=["max", "avg"], value="max", description="pooling",
                                    style={"button_width": "auto"}),
            "tie_rule": W.ToggleButtons(
                options=[("first max (cnn_lib)", "first"), ("every max (tutorial)", "all")],
                value="first", description="ties", style={"button_width": "auto"}),
            "row": W.IntSlider(value=0, min=0, max=2, description="output row"),
            "col": W.IntSlider(value=0, min=0, max=2, description="output col"),
            "only_selected": W.Checkbox(value=False, description="dy only at this output"),
        }
        self.controls = c
        self.output = W.Output()

        busy = []

        def redraw(_=None):
            if busy:  # shrinking a slider's max below its value fires another change event
                return
            busy.append(True)
            ho, wo = self.output_shape(c["kernel"].value, c["stride"].value)
            # keep the window sliders inside the output (setting max clips value too)
            c["row"].max, c["col"].max = ho - 1, wo - 1
            c["tie_rule"].disabled = c["mode"].value != "max"
            with self.output:
                self.output.clear_output(wait=True)
                fig = self.draw(c["kernel"].value, c["stride"].value, c["mode"].value,
                                (c["row"].value, c["col"].value), c["tie_rule"].value,
                                c["only_selected"].value)
                display(fig)
                plt.close(fig)
            busy.clear()

        for control in c.values():
            control.observe(redraw, names="value")
        redraw()
        return W.VBox([
            W.HBox([c["kernel"], c["stride"]]),
            W.HBox([c["mode"]]),
            W.HBox([c["tie_rule"]]),
            W.HBox([c["row"], c["col"], c["only_selected"]]),
            self.output,
        ])
