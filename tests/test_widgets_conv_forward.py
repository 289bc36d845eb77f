"""The lesson-01 explorer, driven without a browser: move its sliders and check what it draws."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from cnn_lib import Conv2d
from cnn_lib.viz import conv_forward as viz
from cnn_lib.widgets import ConvWindowExplorer

X = np.array([[1, 2, 0, 1, 3],
              [0, 1, 3, 2, 1],
              [2, 0, 1, 0, 2],
              [1, 3, 2, 1, 0],
              [0, 1, 0, 2, 1]], dtype=np.float64)
K = np.array([[1, 0, -1],
              [2, 0, -2],
              [1, 0, -1]], dtype=np.float64)


def library_conv(x, kernel, stride, padding):
    layer = Conv2d(1, 1, kernel.shape, stride=stride, padding=padding, bias=False, dtype=np.float64)
    layer.params["weight"][0, 0] = kernel
    return layer.forward(x[None, None])[0, 0]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_draw_returns_a_figure_titled_with_the_sum():
    explorer = ConvWindowExplorer(X, K)
    fig = explorer.draw(row=1, col=2)
    assert isinstance(fig, Figure)
    expected = library_conv(X, K, 1, 0)[1, 2]
    assert fig._suptitle.get_text() == f"y[1, 2] = sum of the 9 products = {viz.format_number(expected)}"


def test_sliders_move_the_window_and_the_output_cell():
    explorer = ConvWindowExplorer(X, K)
    explorer.widget()
    first = explorer.figure
    explorer.controls["row"].value = 2
    explorer.controls["col"].value = 1
    assert (explorer.row, explorer.col) == (2, 1)
    assert explorer.figure is not first  # redrawn
    step = explorer.numbers()
    assert (step["top"], step["left"]) == (2, 1)
    np.testing.assert_array_equal(step["window"], X[2:5, 1:4])
    assert step["value"] == library_conv(X, K, 1, 0)[2, 1]
    assert explorer.caption.value.endswith(f"= {viz.format_number(step['value'])}</code>")
    assert "y[2, 1]" in explorer.figure._suptitle.get_text()


def test_stride_and_padding_resize_the_cell_sliders():
    explorer = ConvWindowExplorer(X, K)
    explorer.widget()
    explorer.controls["row"].value = 2
    explorer.controls["col"].value = 2
    explorer.controls["stride"].value = 2          # 5x5, k=3, s=2, p=0 -> 2x2 output
    assert explorer.output_shape() == (2, 2)
    assert explorer.controls["row"].max == 1 and explorer.controls["col"].max == 1
    assert (explorer.row, explorer.col) == (1, 1)  # the cell was clipped into the output
    explorer.controls["padding"].value = 1         # 7x7 padded, s=2 -> 3x3 output
    assert explorer.output_shape() == (3, 3)
    assert explorer.controls["row"].max == 2
    explorer.controls["row"].value = 2
    step = explorer.numbers()
    assert (step["top"], step["left"]) == (4, 2)   # row 2 * stride 2, col 1 * stride 2
    assert step["value"] == library_conv(X, K, 2, 1)[2, 1]
    assert "stride 2" in explorer.figure.axes[3].get_title()


def test_step_numbers_agree_with_the_library_everywhere():
    for stride, padding in [(1, 0), (1, 1), (2, 0), (2, 2), (3, 1)]:
        y = library_conv(X, K, stride, padding)
        for i in range(y.shape[0]):
            for j in range(y.shape[1]):
                step = viz.conv_step_numbers(X, K, i, j, stride, padding)
                assert step["value"] == pytest.approx(y[i, j])
                np.testing.assert_allclose(step["y"], y)


def test_bad_settings_say_what_is_wrong():
    with pytest.raises(ValueError, match="does not fit"):
        ConvWindowExplorer(np.zeros((2, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        ConvWindowExplorer(np.zeros((1, 1, 5, 5)), K)
    with pytest.raises(ValueError, match="outside"):
        viz.conv_step_numbers(X, K, 3, 0)


def test_format_number():
    assert [viz.format_number(v) for v in (3.0, -0.0, -0.25, 1 / 3, 1e-9)] == ["3", "0", "-0.25", "0.33", "0"]


def test_a_slider_move_after_draw_follows_the_sliders_again():
    explorer = ConvWindowExplorer(X, K)
    explorer.widget()
    explorer.draw(row=1, col=1, stride=2, padding=1)   # a static figure with other settings
    explorer.controls["col"].value = 2                 # the sliders still say stride 1, padding 0
    assert (explorer.stride, explorer.padding) == (1, 0)
    assert (explorer.row, explorer.col) == (0, 2)
    assert "stride 1" in explorer.figure.axes[3].get_title()


def test_output_size_strip_names_padding_cells_instead_of_showing_zero():
    fig = viz.show_output_size_1d([(5, 3, 1, 1), (6, 3, 2, 0)])
    padded, plain = ([t.get_text() for t in ax.texts] for ax in fig.axes)
    assert padded[:7] == ["pad", "0", "1", "2", "3", "4", "pad"]   # H=5 padded by 1 on each side
    assert sum(t.startswith("y[") for t in padded) == 5               # floor((5 + 2 - 3) / 1) + 1
    assert "pad" not in plain and plain[:6] == ["0", "1", "2", "3", "4", "5"]
    assert sum(t.startswith("y[") for t in plain) == 2                # floor((6 - 3) / 2) + 1
    plt.close(fig)
