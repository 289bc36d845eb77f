"""The lesson-06 explorer, driven without a browser: sliders change the state and the figure,
and the sum it writes out is the library's dx."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cnn_lib import Conv2d, viz  # noqa: E402
from cnn_lib.widgets import InputPixelExplorer  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _texts(fig):
    return " ".join(t.get_text() for t in fig.texts)


def test_draw_returns_figure_and_matches_hand_example():
    x = np.array([[1, 2, 0, 1], [0, 1, 3, 1], [2, 0, 1, 0], [1, 1, 0, 2]], dtype=float)
    w = np.array([[1.0, 2.0], [3.0, 4.0]])
    dy = np.array([[1.0, 2.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    explorer = InputPixelExplorer((4, 4), kernel=w, dy=dy)
    fig = explorer.draw(row=1, col=1)
    assert isinstance(fig, Figure)
    # output up-left used the tap down-right: the kernel is met rotated
    assert explorer.pairs == [((0, 0), (1, 1)), ((0, 1), (1, 0)), ((1, 0), (0, 1)), ((1, 1), (0, 0))]
    assert explorer.dx_sum == 9 and explorer.dx_library == 9
    assert "= 9" in _texts(fig) and "Conv2d.backward gives 9" in _texts(fig)
    conv = Conv2d(1, 1, 2, dtype=np.float64, rng=0)
    conv.params["weight"][0, 0] = w
    conv.forward(x[None, None])
    assert conv.backward(dy[None, None])[0, 0, 1, 1] == 9


def test_sliders_drive_state_and_figure():
    explorer = InputPixelExplorer((6, 6))
    box = explorer.widget()
    assert box.children, "widget() must return a container"
    first = explorer.figure
    explorer.sliders["stride"].value = 1
    explorer.sliders["padding"].value = 0
    explorer.sliders["row"].value = 2
    explorer.sliders["col"].value = 3
    assert (explorer.row, explorer.col, explorer.stride, explorer.padding) == (2, 3, 1, 0)
    assert explorer.figure is not first
    assert len(explorer.pairs) == 9
    assert all((p, q) == (2 - i, 3 - j) for (i, j), (p, q) in explorer.pairs)
    assert "x[2, 3]" in explorer.figure._suptitle.get_text()

    explorer.sliders["stride"].value = 2
    assert explorer.stride == 2
    assert explorer.output_shape() == (2, 2)
    assert explorer.pairs == [((0, 1), (2, 1)), ((1, 1), (0, 1))]
    assert np.isclose(explorer.dx_sum, explorer.dx_library)

    explorer.sliders["row"].value = 5        # (6 - 3) % 2 == 1: row 5 is in no window
    assert explorer.pairs == [] and explorer.dx_sum == 0 == explorer.dx_library
    assert "no output read x[5, 3]" in _texts(explorer.figure)

    explorer.sliders["padding"].value = 1
    assert explorer.padding == 1 and explorer.output_shape() == (3, 3)
    assert np.isclose(explorer.dx_sum, explorer.dx_library)


@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 2), (2, 1), (3, 0), (3, 2)])
def test_sum_equals_library_dx_everywhere(stride, padding):
    explorer = InputPixelExplorer((5, 6), kernel=np.arange(1.0, 7.0).reshape(3, 2), stride=stride,
                                  padding=padding)
    explorer._update()
    dx = explorer.library_dx()
    for row in range(5):
        for col in range(6):
            explorer._update(row=row, col=col)
            assert np.isclose(explorer.dx_sum, dx[row, col])


def test_outputs_reading_pixel_and_errors():
    assert viz.outputs_reading_pixel((7, 7), (3, 3), 2, 0, 4, 3) == [((1, 1), (2, 1)), ((2, 1), (0, 1))]
    assert len(viz.outputs_reading_pixel((7, 7), (3, 3), 2, 0, 2, 2)) == 4
    with pytest.raises(ValueError, match="outside"):
        viz.outputs_reading_pixel((4, 4), (3, 3), 1, 0, 4, 0)
    with pytest.raises(ValueError, match="does not fit"):
        InputPixelExplorer((2, 2))
    with pytest.raises(ValueError, match="output shape"):
        InputPixelExplorer((4, 4), kernel=np.ones((2, 2)), dy=np.ones((2, 2)))
    explorer = InputPixelExplorer((4, 4))
    with pytest.raises(ValueError, match="outside"):
        explorer.draw(row=9)


def test_default_dy_has_no_zero_terms():
    # a zero in dy would hide one term of the written-out sum
    explorer = InputPixelExplorer((6, 6))
    for stride in (1, 2, 3):
        for padding in (0, 1, 2):
            explorer._update(stride=stride, padding=padding)
            dy = explorer.upstream()
            assert np.all(dy != 0) and np.all(np.abs(dy) <= 3)
            assert np.array_equal(dy, explorer.upstream())      # same setting, same numbers
    explorer.sliders = {}
    fig = explorer.draw(row=4, col=2, stride=2, padding=0)
    assert len(explorer.pairs) == 2
    assert all(explorer.upstream()[out] != 0 for out, _ in explorer.pairs)
    assert isinstance(fig, Figure)


def _as_matrix(layer, in_shape):
    size = int(np.prod(in_shape))
    columns = []
    for index in range(size):
        unit = np.zeros(size)
        unit[index] = 1.0
        columns.append(layer.forward(unit.reshape(in_shape)).ravel())
    return np.stack(columns, axis=1)


def test_conv_matrices_colour_scale():
    from cnn_lib import ConvTranspose2d

    conv = Conv2d(1, 1, 3, bias=False, dtype=np.float64, rng=0)
    conv.params["weight"][0, 0] = np.arange(1.0, 10.0).reshape(3, 3)
    conv_t = ConvTranspose2d(1, 1, 3, bias=False, dtype=np.float64, rng=0)
    conv_t.params["weight"][...] = conv.params["weight"]
    small = viz.plot_conv_matrices(_as_matrix(conv, (1, 1, 4, 4)), _as_matrix(conv_t, (1, 1, 2, 2)),
                                   x_shape=(4, 4), y_shape=(2, 2))
    # numbers written in, so no colour bar; the colour scale ends at the largest weight
    assert len(small.axes) == 3
    assert small.axes[0].images[0].get_clim() == (0.0, 9.0)
    assert "9" in [t.get_text() for t in small.axes[0].texts]

    conv_big = Conv2d(1, 1, 3, bias=False, dtype=np.float64, rng=0)
    conv_t.params["weight"][...] = conv_big.params["weight"]
    big = viz.plot_conv_matrices(_as_matrix(conv_big, (1, 1, 6, 6)), _as_matrix(conv_t, (1, 1, 4, 4)))
    assert len(big.axes) == 4                                    # three panels and a colour bar
    top = np.abs(conv_big.params["weight"]).max()
    assert np.allclose(big.axes[0].images[0].get_clim(), (-top, top))
