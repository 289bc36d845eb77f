"""Explorer for lesson 06: where does one input pixel's gradient come from?

Pick an input pixel of a convolution; the explorer highlights every output that read it and,
for each, the kernel tap that multiplied it. The pixel's gradient is the sum of
``dy[output] * W[tap]`` over those pairs, written out and compared with what
``Conv2d.backward`` returns. With stride 1 the taps form the mirror image of the outputs: the
kernel appears rotated by 180 degrees.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..kernels import conv_output_hw
from ..layers import Conv2d
from ..viz.conv_backward import outputs_reading_pixel, plot_input_pixel_reach

__all__ = ["InputPixelExplorer"]


class InputPixelExplorer:
    """Which outputs read input pixel (row, col), through which taps, and what dx is there.

    InputPixelExplorer(x_shape=(5, 5), kernel=None, stride=1, padding=0, dy=None, seed=0)

    x_shape: (H, W) of a single-channel input (the kernel must fit: kH <= H, kW <= W)
    kernel:  (kH, kW) array W; default [[1, 2, 3], [4, 5, 6], [7, 8, 9]] (every tap different,
             so you can see which one was used)
    stride, padding: the initial settings (ints)
    dy:      optional (H_out, W_out) upstream gradient for the initial stride and padding; when
             a setting changes the output shape (or dy is None) the explorer uses small non-zero
             random integers (-3..-1, 1..3) drawn from ``np.random.default_rng([seed, H_out, W_out])``
             instead, so a setting always shows the same numbers and no term of the sum is
             hidden by a zero factor
    seed:    see dy

    State: ``row``, ``col``, ``stride``, ``padding`` (the current setting), ``pairs`` (list of
    ((i, j), (p, q)): output y[i, j] read the pixel through tap W[p, q]), ``dx_sum`` (the sum
    of dy * W over the pairs) and ``dx_library`` (``Conv2d.backward``'s dx at the pixel).
    """

    def __init__(self, x_shape=(5, 5), kernel=None, stride=1, padding=0, dy=None, seed=0):
        h, w = (int(v) for v in x_shape)
        self.kernel = (np.arange(1.0, 10.0).reshape(3, 3) if kernel is None
                       else np.array(kernel, dtype=np.float64))
        if self.kernel.ndim != 2:
            raise ValueError(f"kernel must be a 2-D (kH, kW) array, got shape {self.kernel.shape}")
        kh, kw = self.kernel.shape
        if kh > h or kw > w:
            raise ValueError(f"kernel {kh}x{kw} does not fit the {h}x{w} input")
        self.x_shape = (h, w)
        self.seed = int(seed)
        self.row, self.col = h // 2, w // 2
        self.stride, self.padding = int(stride), int(padding)
        self._custom_dy = None if dy is None else np.array(dy, dtype=np.float64)
        if self._custom_dy is not None and self._custom_dy.shape != self.output_shape():
            raise ValueError(f"dy must have the output shape {self.output_shape()}, "
                             f"got {self._custom_dy.shape}")
        self.pairs: list = []
        self.dx_sum = 0.0
        self.dx_library = 0.0
        self.figure = None
        self.sliders: dict = {}
        self.output = None

    # ------------------------------------------------------------------ the numbers
    def output_shape(self) -> tuple[int, int]:
        """(H_out, W_out) for the current stride and padding."""
        (h, w), (kh, kw) = self.x_shape, self.kernel.shape
        s, p = self.stride, self.padding
        return conv_output_hw((h, w), (kh, kw), (s, s), (p, p))

    def upstream(self) -> np.ndarray:
        """The (H_out, W_out) upstream gradient dy used for the current setting."""
        shape = self.output_shape()
        if self._custom_dy is not None and self._custom_dy.shape == shape:
            return self._custom_dy
        rng = np.random.default_rng([self.seed, *shape])
        magnitude = rng.integers(1, 4, size=shape)
        sign = rng.choice(np.array([-1, 1]), size=shape)
        return (sign * magnitude).astype(np.float64)

    def library_dx(self) -> np.ndarray:
        """dx (H, W) from the library: a Conv2d with this kernel, backward of ``upstream()``.

        dx of a convolution does not depend on x, so the forward pass runs on zeros."""
        kh, kw = self.kernel.shape
        conv = Conv2d(1, 1, (kh, kw), stride=self.stride, padding=self.padding, bias=False,
                      dtype=np.float64, rng=0)
        conv.params["weight"][0, 0] = self.kernel
        conv.forward(np.zeros((1, 1, *self.x_shape)))
        return conv.backward(self.upstream()[None, None])[0, 0]

    def _update(self, row=None, col=None, stride=None, padding=None):
        h, w = self.x_shape
        kh, kw = self.kernel.shape
        row = self.row if row is None else int(row)
        col = self.col if col is None else int(col)
        stride = self.stride if stride is None else int(stride)
        padding = self.padding if padding is None else int(padding)
        if not (0 <= row < h and 0 <= col < w):
            raise ValueError(f"pixel ({row}, {col}) is outside the {h}x{w} input")
        if stride < 1 or padding < 0:
            raise ValueError(f"need stride >= 1 and padding >= 0, got stride={stride}, padding={padding}")
        self.row, self.col, self.stride, self.padding = row, col, stride, padding
        self.pairs = outputs_reading_pixel(self.x_shape, (kh, kw), stride, padding, row, col)
        dy = self.upstream()
        self.dx_sum = float(sum(dy[i, j] * self.kernel[p, q] for (i, j), (p, q) in self.pairs))
        self.dx_library = float(self.library_dx()[row, col])

    # ------------------------------------------------------------------ drawing
    def draw(self, row=None, col=None, stride=None, padding=None):
        """Update the setting (None keeps the current value) and return its Figure.

        row, col: input pixel (unpadded coordinates); stride >= 1; padding >= 0
        """
        self._update(row, col, stride, padding)
        self.figure = plot_input_pixel_reach(self.kernel, self.x_shape, self.stride, self.padding,
                                             self.row, self.col, self.upstream(),
                                             library_value=self.dx_library)
        return self.figure

    def widget(self):
        """Sliders for input row/col, stride and padding, redrawing into an ipywidgets.Output."""
        import ipywidgets as widgets
        from IPython.display import display

        h, w = self.x_shape
        kh, kw = self.kernel.shape
        style = {"description_width": "initial"}
        self.sliders = {
            "row": widgets.IntSlider(value=self.row, min=0, max=h - 1, description="input row", style=style),
            "col": widgets.IntSlider(value=self.col, min=0, max=w - 1, description="input col", style=style),
            "stride": widgets.IntSlider(value=self.stride, min=1, max=3, description="stride", style=style),
            "padding": widgets.IntSlider(value=self.padding, min=0, max=max(kh, kw) - 1,
                                         description="padding", style=style),
        }
        self.output = widgets.Output()

        def refresh(_change=None):
            with self.output:
                self.output.clear_output(wait=True)
                fig = self.draw(**{name: s.value for name, s in self.sliders.items()})
                display(fig)
                plt.close(fig)

        for slider in self.sliders.values():
            slider.observe(refresh, names="value")
        refresh()
        return widgets.VBox([widgets.HBox([self.sliders["row"], self.sliders["col"]]),
                             widgets.HBox([self.sliders["stride"], self.sliders["padding"]]),
                             self.output])
