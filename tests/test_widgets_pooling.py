"""The pooling explorer (lesson 05) without a browser: drive its controls, check what it draws."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from cnn_lib.kernels import vectorized
from cnn_lib.viz import plot_pool_routing, plot_tie_windows, pool_routes, routed_gradient, tied_windows
from cnn_lib.widgets import DEFAULT_POOLING_INPUT, PoolingRoutingExplorer


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _library_dx(x, kernel, stride, mode, dy):
    """dx of cnn_lib's fast kernels for one (H, W) channel."""
    op = "maxpool2d" if mode == "max" else "avgpool2d"
    _, cache = getattr(vectorized, op + "_forward")(x[None, None], (kernel, kernel), (stride, stride))
    return getattr(vectorized, op + "_backward")(dy[None, None], cache)[0, 0]


def test_draw_returns_figure_and_records_state():
    explorer = PoolingRoutingExplorer()
    fig = explorer.draw(kernel=2, stride=2, mode="max", window=(1, 1))
    assert isinstance(fig, Figure)
    last = explorer.last
    assert last["y"].shape == (3, 3) and last["window"] == (1, 1)
    # the window at (1, 1) holds two 9s; the first one in row-major order, (2, 2), wins
    assert last["routes"][1, 1] == [(2, 2, 1.0)]
    assert np.array_equal(last["dx"], _library_dx(explorer.x, 2, 2, "max", last["dy"]))


@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 2), (2, 3), (2, 1), (4, 1)])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_routing_matches_library(kernel, stride, mode):
    # the routes the explorer draws (no figure needed) give cnn_lib's dx, ties included
    x = DEFAULT_POOLING_INPUT
    y, routes = pool_routes(x, kernel, stride, mode)
    dy = np.arange(1, y.size + 1, dtype=float).reshape(y.shape)
    dx = routed_gradient(routes, dy, x.shape)
    assert np.allclose(dx, _library_dx(x, kernel, stride, mode, dy))
    assert np.isclose(dx.sum(), dy.sum())  # every window passes on exactly its dy


def test_tutorial_tie_rule_inflates_gradient_mass():
    y, routes = pool_routes(DEFAULT_POOLING_INPUT, 2, 2, tie_rule="all")
    assert routes[1, 1] == [(2, 2, 1.0), (2, 3, 1.0)]
    dy = np.arange(1, 10, dtype=float).reshape(3, 3)
    assert routed_gradient(routes, dy, (6, 6)).sum() == 101 and dy.sum() == 45


def test_widget_callbacks_redraw_with_new_settings():
    explorer = PoolingRoutingExplorer()
    box = explorer.widget()
    c = explorer.controls
    assert box is not None and explorer.last["kernel"] == 2 and explorer.last["window"] == (0, 0)

    c["row"].value, c["col"].value = 2, 1
    assert explorer.last["window"] == (2, 1)

    # kernel 3, stride 2 on 6x6 gives a 2x2 output: the row slider shrinks and clips its value
    c["kernel"].value = 3
    assert c["row"].max == 1 and c["col"].max == 1
    assert explorer.last["kernel"] == 3 and explorer.last["y"].shape == (2, 2)
    assert explorer.last["window"] == (1, 1)
    assert explorer.last["dx"][2, 2] == 1 + 3 + 4  # the 9 at (2, 2) wins three overlapping windows

    c["mode"].value = "avg"
    assert explorer.last["mode"] == "avg" and c["tie_rule"].disabled
    assert np.allclose(explorer.last["routes"][1, 1][0][2], 1 / 9)

    c["mode"].value = "max"
    c["tie_rule"].value = "all"
    assert explorer.last["tie_rule"] == "all" and not c["tie_rule"].disabled
    assert explorer.last["dx"].sum() > explorer.last["dy"].sum()  # ties get the gradient twice

    c["only_selected"].value = True
    dy = explorer.last["dy"]
    assert np.count_nonzero(dy) == 1 and dy[explorer.last["window"]] != 0


def test_uncovered_rows_get_zero_and_bad_input_is_refused():
    _, routes = pool_routes(DEFAULT_POOLING_INPUT, 2, 3)
    dx = routed_gradient(routes, np.ones((2, 2)), (6, 6))
    assert not dx[2].any() and not dx[5].any() and not dx[:, 2].any() and not dx[:, 5].any()
    with pytest.raises(ValueError):
        PoolingRoutingExplorer(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError):
        plot_pool_routing(DEFAULT_POOLING_INPUT, kernel=2, window=(5, 0))


def test_helpers():
    y, routes = pool_routes(np.zeros((4, 4)), kernel=2, tie_rule="all")
    assert y.shape == (2, 2) and all(len(r) == 4 for r in routes.values())
    dx = routed_gradient(routes, np.ones((2, 2)), (4, 4))
    assert dx.sum() == 16
    ties = tied_windows(np.array([[0, 0, 1, 2], [0, 0, 3, 4]]))
    assert ties.tolist() == [[True, False]]


def test_tie_figure_outlines_exactly_the_tied_windows():
    image = np.array([[0, 0, 1, 2], [0, 0, 3, 4], [5, 5, 0, 1], [0, 1, 2, 0]], dtype=float)
    fig = plot_tie_windows([image], ["toy"])
    ax = fig.axes[0]
    assert ax.images[0].get_cmap().name == "gray_r"                 # ink dark, as in lesson 00
    corners = sorted((round(p.get_y() + 0.5), round(p.get_x() + 0.5)) for p in ax.patches)
    assert corners == [(0, 0), (2, 0)]                               # the two tied windows' top-left cells
    assert all(not p.get_fill() for p in ax.patches)                 # outlines, not tints
    assert "50% of 2x2 windows tie" in ax.get_title()
