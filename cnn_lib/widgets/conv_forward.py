"""ipywidgets explorer for lesson 01: slide a convolution window by hand.

    explorer = ConvWindowExplorer(x, kernel)      # x (H, W), kernel (kH, kW)
    explorer.widget()                             # sliders: output row/col, stride, padding
    explorer.draw(row=1, col=2)                   # the same picture as a plain Figure
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..kernels import conv_output_hw
from ..viz.conv_forward import conv_step_numbers, format_number, show_conv_step

__all__ = ["ConvWindowExplorer"]


class ConvWindowExplorer:
    """Pick an output cell of a single-channel convolution and see how it is computed.

    The figure (:func:`cnn_lib.viz.show_conv_step`) outlines the window on the zero-padded
    input, shows the window's products with the kernel, and carries their sum into the output
    cell. The state (``row``, ``col``, ``stride``, ``padding``) lives on the explorer, so it can
    be driven by sliders or by calling :meth:`draw`.

    Args:
        x: ``(H, W)`` input, one channel.
        kernel: ``(kH, kW)``.
        stride, padding: starting values (ints, the same along both axes).
        max_stride, max_padding: the sliders' upper limits.
        annotate: write numbers in the input/output cells (default: when the padded input is
            at most 12 pixels wide).

    Attributes:
        row, col: the current output cell.
        stride, padding: the current settings.
        controls: after :meth:`widget`, the sliders by name ("row", "col", "stride", "padding").
        caption: after :meth:`widget`, an ``ipywidgets.HTML`` spelling out the current sum.
        figure: the last Figure :meth:`draw` made (None before the first draw).
    """

    def __init__(self, x, kernel, stride: int = 1, padding: int = 0, *, max_stride: int = 3,
                 max_padding: int = 2, annotate: bool | None = None):
        self.x = np.asarray(x, dtype=np.float64)
        self.kernel = np.asarray(kernel, dtype=np.float64)
        if self.x.ndim != 2 or self.kernel.ndim != 2:
            raise ValueError(f"x must be (H, W) and kernel (kH, kW); got {self.x.shape} and "
                             f"{self.kernel.shape} (take one channel, e.g. x[0, 0] of a batch)")
        self.max_stride, self.max_padding = int(max_stride), int(max_padding)
        self.annotate = annotate
        self.stride, self.padding = 1, 0
        self.row, self.col = 0, 0
        self._set(stride=stride, padding=padding)
        self.controls: dict = {}
        self.caption = None
        self.figure = None
        self._output = None
        self._syncing = False

    # ------------------------------------------------------------------ state
    def output_shape(self, stride: int | None = None, padding: int | None = None) -> tuple[int, int]:
        """``(H_out, W_out)`` for the given (default: current) stride and padding."""
        s = self.stride if stride is None else stride
        p = self.padding if padding is None else padding
        (h, w), (kh, kw) = self.x.shape, self.kernel.shape
        return conv_output_hw((h, w), (kh, kw), (s, s), (p, p))

    def _set(self, row=None, col=None, stride=None, padding=None):
        stride = self.stride if stride is None else int(stride)
        padding = self.padding if padding is None else int(padding)
        if stride < 1 or padding < 0:
            raise ValueError(f"stride must be >= 1 and padding >= 0, got {stride} and {padding}")
        ho, wo = self.output_shape(stride, padding)
        if ho < 1 or wo < 1:
            raise ValueError(f"the {self.kernel.shape[0]}x{self.kernel.shape[1]} kernel does not fit "
                             f"in the {self.x.shape[0]}x{self.x.shape[1]} input with padding {padding}")
        row = self.row if row is None else int(row)
        col = self.col if col is None else int(col)
        # A new stride/padding can shrink the output: keep the cell inside it.
        self.stride, self.padding = stride, padding
        self.row, self.col = min(max(row, 0), ho - 1), min(max(col, 0), wo - 1)

    def numbers(self) -> dict:
        """The current step's numbers (see :func:`cnn_lib.viz.conv_step_numbers`)."""
        return conv_step_numbers(self.x, self.kernel, self.row, self.col, self.stride, self.padding)

    def describe(self) -> str:
        """The current sum written out: ``"y[1, 2] = 3*1 + 0*0 + ... = 2"``."""
        step = self.numbers()
        terms = [f"{format_number(a)}*{format_number(b)}"
                 for a, b in zip(step["window"].ravel(), self.kernel.ravel())]
        kh, kw = self.kernel.shape
        top, left = step["top"], step["left"]
        return (f"window: rows {top}-{top + kh - 1}, columns {left}-{left + kw - 1} of the padded "
                f"input; y[{self.row}, {self.col}] = {' + '.join(terms)} = "
                f"{format_number(step['value'])}")

    # ------------------------------------------------------------------ drawing
    def draw(self, row: int | None = None, col: int | None = None, stride: int | None = None,
             padding: int | None = None):
        """Move to the given setting (None keeps the current value) and draw it.

        Args:
            row, col: output cell; clipped into the output if out of range.
            stride, padding: ints.

        Returns:
            The matplotlib Figure (also kept as ``self.figure``).
        """
        self._set(row, col, stride, padding)
        self.figure = show_conv_step(self.x, self.kernel, self.row, self.col, self.stride,
                                     self.padding, annotate=self.annotate)
        return self.figure

    # ------------------------------------------------------------------ widget
    def widget(self):
        """Sliders for output row/column, stride and padding above the live figure.

        Returns:
            An ``ipywidgets.VBox``; display it in a notebook.
        """
        import ipywidgets as widgets
        from IPython.display import display

        ho, wo = self.output_shape()
        # one description width for all four: their tracks start at the same place, one above the other
        style = {"description_width": "100px"}
        self.controls = {
            "row": widgets.IntSlider(value=self.row, min=0, max=ho - 1, description="output row",
                                     style=style, continuous_update=False),
            "col": widgets.IntSlider(value=self.col, min=0, max=wo - 1, description="output column",
                                     style=style, continuous_update=False),
            "stride": widgets.IntSlider(value=self.stride, min=1, max=self.max_stride,
                                        description="stride", style=style, continuous_update=False),
            "padding": widgets.IntSlider(value=self.padding, min=0, max=self.max_padding,
                                         description="padding", style=style,
                                         continuous_update=False),
        }
        self.caption = widgets.HTML()
        self._output = widgets.Output()

        def redraw():
            self.caption.value = f"<code>{self.describe()}</code>"
            with self._output:
                self._output.clear_output(wait=True)
                figure = self.draw()
                display(figure)
                plt.close(figure)

        def on_change(change):
            if self._syncing:
                return
            # Read all four sliders (not only the one that moved), so that the picture always
            # matches what the sliders show, even after draw() was called with other settings.
            self._set(row=self.controls["row"].value, col=self.controls["col"].value,
                      stride=self.controls["stride"].value, padding=self.controls["padding"].value)
            # Stride and padding change the output size: fit the cell sliders to it (and to the
            # clipped cell) without triggering another redraw.
            new_ho, new_wo = self.output_shape()
            self._syncing = True
            try:
                for name, limit, value in (("row", new_ho - 1, self.row), ("col", new_wo - 1, self.col)):
                    self.controls[name].max = limit
                    self.controls[name].value = value
            finally:
                self._syncing = False
            redraw()

        for slider in self.controls.values():
            slider.observe(on_change, names="value")
        redraw()
        sliders = widgets.HBox([widgets.VBox([self.controls["row"], self.controls["col"]]),
                                widgets.VBox([self.controls["stride"], self.controls["padding"]])])
        return widgets.VBox([sliders, self.caption, self._output])
