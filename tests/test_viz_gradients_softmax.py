"""Tests for the figures of lessons 02 (computational graphs, finite-difference errors) and
03 (softmax pipeline, gradient vs the correct logit): they return Figures and show the right
numbers."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cnn_lib import viz  # noqa: E402
from cnn_lib.kernels.vectorized import softmax  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(fig):
    """Every string drawn in the figure (axes texts, annotations, titles, figure texts)."""
    found = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        found += [t.get_text() for t in ax.texts]
        found.append(ax.get_title())
    found += [fig._suptitle.get_text()] if fig._suptitle is not None else []
    return found


# --------------------------------------------------------------------------- lesson 02


def small_graph():
    # f = a*b + a at a = 2, b = 4: df/da = 4 (via g) + 1 (direct) = 5, df/db = 2
    nodes = [
        dict(name="a", pos=(0, 1), value=2.0, grad=5.0),
        dict(name="b", pos=(0, -1), value=4.0, grad=2.0),
        dict(name="g", op="a·b", pos=(1, 0), value=8.0, grad=1.0),
        dict(name="f", op="g+a", pos=(2, 1), value=10.0, grad=1.0),
    ]
    edges = [("a", "g", 4.0), ("b", "g"), ("a", "f", 1.0), ("g", "f")]
    return nodes, edges


def test_draw_graph_returns_figure_with_values_and_gradients():
    nodes, edges = small_graph()
    fig = viz.draw_graph(nodes, edges, title="fan-out", show_node_grads=True)
    assert isinstance(fig, Figure)
    found = texts(fig)
    # node boxes: leaves by name, operations as "name = op"
    for label in ["a", "b", "g = a·b", "f = g+a"]:
        assert label in found
    # forward values on the wires (src values) and the output stub's value
    for value in ["2", "4", "8", "10"]:
        assert value in found
    # per-wire gradient shares (4 and 1 out of a) and node totals
    assert found.count("4") >= 2          # a's value on its wires... and the share 4 on a->g
    assert "dL/da = 5" in found and "dL/db = 2" in found
    assert "fan-out" in found


def test_draw_graph_wire_gradient_defaults_to_source_grad():
    nodes = [dict(name="x", pos=(0, 0), value=1.5, grad=-0.0846),
             dict(name="y", op="2x", pos=(1, 0), value=3.0, grad=0.25)]
    fig = viz.draw_graph(nodes, [("x", "y")], digits=3)
    found = texts(fig)
    assert "1.5" in found and "-0.0846" in found        # the wire x -> y
    assert "3" in found and "0.25" in found             # the output stub of y


def test_draw_graph_rejects_unknown_node():
    nodes, _ = small_graph()
    with pytest.raises(ValueError, match="'c'"):
        viz.draw_graph(nodes, [("a", "c")])
    with pytest.raises(ValueError, match="unique"):
        viz.draw_graph(nodes + [dict(name="a", pos=(3, 0), value=0.0)], [])


def test_plot_fd_errors_marks_the_minimum_of_each_line():
    hs = np.logspace(-12, 0, 25)
    centred = hs**2 + 1e-16 / hs
    one_sided = hs + 1e-16 / hs
    fig = viz.plot_fd_errors(hs, {"centred": centred, "one-sided": one_sided},
                             eps=np.finfo(np.float64).eps)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "centred" in labels and "one-sided" in labels
    found = texts(fig)
    assert f"best h = {hs[np.argmin(centred)]:.0e}" in found
    assert f"best h = {hs[np.argmin(one_sided)]:.0e}" in found
    # the plotted data are the errors themselves
    line = next(line for line in ax.get_lines() if line.get_label() == "centred")
    assert np.allclose(line.get_ydata(), centred)


def test_plot_fd_errors_checks_shapes():
    with pytest.raises(ValueError, match="shape"):
        viz.plot_fd_errors(np.logspace(-3, 0, 4), {"x": np.ones(3)})


# --------------------------------------------------------------------------- lesson 03


def test_softmax_pipeline_annotates_probabilities_and_gradient():
    z = np.array([2.0, 1.0, -1.0])
    p = softmax(z)
    fig = viz.plot_softmax_pipeline(z, 0)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    found = texts(fig)
    for value in z:
        assert f"{value:.2f}" in found
    for value in p:
        assert f"{value:.3f}" in found
    grad = p - np.eye(3)[0]
    for value in grad:
        assert f"{value:.3f}" in found
    assert any(f"{-np.log(p[0]):.3f}" in t for t in found)      # the loss in the title
    assert "dL/dz = p − t" in found                              # t: the one-hot target, as in lesson 03
    # bar heights are the numbers
    heights = [patch.get_height() for patch in fig.axes[2].patches]
    assert np.allclose(heights, grad)


def test_softmax_pipeline_with_image_and_true_class_colour():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1, 10))
    fig = viz.plot_softmax_pipeline(z, 7, image=rng.random((1, 28, 28)))
    assert len(fig.axes) == 4
    bars = fig.axes[2].patches
    colours = [matplotlib.colors.to_hex(b.get_facecolor()) for b in bars]
    assert colours[7] != colours[0] and len(set(colours)) == 2
    # the digit is drawn like in lessons 00, 01, 04: dark ink on a light background
    assert fig.axes[0].images[0].get_cmap().name == "gray_r"


def test_softmax_pipeline_rejects_bad_label():
    with pytest.raises(ValueError, match="label"):
        viz.plot_softmax_pipeline(np.zeros(3), 3)
    with pytest.raises(ValueError, match="logits"):
        viz.plot_softmax_pipeline(np.zeros((2, 3)), 0)


def test_gradient_vs_logit_curves_are_p_minus_t():
    z = np.array([0.5, -1.0, 2.0, 0.0])
    values = np.linspace(-6, 6, 13)
    fig = viz.plot_gradient_vs_logit(z, 1, values=values)
    assert isinstance(fig, Figure)
    right = fig.axes[1]
    true_line = next(line for line in right.get_lines() if line.get_label().startswith("true class"))
    expected = []
    for v in values:
        zz = z.copy()
        zz[1] = v
        expected.append(softmax(zz)[1] - 1)
    assert np.allclose(true_line.get_xdata(), values)
    assert np.allclose(true_line.get_ydata(), expected)
    # gradient of the true class rises toward 0, always within (-1, 0)
    assert np.all(np.diff(true_line.get_ydata()) > 0) and np.all(true_line.get_ydata() < 0)
    assert any("now: z[1] = -1.00" in t for t in texts(fig))
