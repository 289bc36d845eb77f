"""Figures for lesson 02: computational graphs with numbers on every wire, and the error of
finite differences as a function of the step h.

    from cnn_lib import viz
    fig = viz.draw_graph(nodes, edges)           # boxes and arrows, values above, gradients below
    fig = viz.plot_fd_errors(hs, {"centred": errors})
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["draw_graph", "plot_fd_errors"]

VALUE_COLOR = "tab:green"
GRAD_COLOR = "tab:red"


def _fmt(value, digits):
    return f"{value:.{digits}g}"


def _check_graph(nodes, edges):
    names = [node.get("name") for node in nodes]
    for i, node in enumerate(nodes):
        for key in ("name", "pos", "value"):
            if key not in node:
                raise ValueError(f"draw_graph: node {i} ({node!r}) has no {key!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"draw_graph: node names must be unique, got {names}")
    checked = []
    for edge in edges:
        if len(edge) not in (2, 3):
            raise ValueError(f"draw_graph: an edge is (src, dst) or (src, dst, grad), got {edge!r}")
        src, dst = edge[0], edge[1]
        for end in (src, dst):
            if end not in names:
                raise ValueError(f"draw_graph: edge {edge!r} names {end!r}, which is not a node "
                                 f"(nodes: {names})")
        checked.append((src, dst, edge[2] if len(edge) == 3 else None))
    return checked


def draw_graph(nodes, edges, title=None, figsize=(10, 3.6), digits=3, show_node_grads=False,
               output_stub=True):
    """Draw a small computational graph: nodes as boxes, wires as arrows with numbers on them.

    nodes: list of dicts, one per node, with keys
        "name"  (str)            the variable the node computes, e.g. "z"
        "pos"   ((x, y) floats)  where to put the box (data units; any scale, e.g. columns 0, 1, 2)
        "value" (float)          its forward value
        "grad"  (float, optional) dL/d(this node), the total gradient arriving at it
        "op"    (str, optional)  the operation that produced it, e.g. "*", "+", "sigmoid";
                                 leaves (inputs, weights) have none
    edges: list of (src, dst) or (src, dst, grad) tuples of node names. The wire from src to
        dst is labelled with src's value above it (green) and, below it (red), the gradient
        that flows back along this wire: ``grad`` if given, else src's "grad". When a node
        feeds two nodes (fan-out), give each wire its own share; the node's total is their sum.
    title: figure title (a line explaining the colours is added below the graph)
    figsize: (width, height) in inches
    digits: significant digits of every number printed
    show_node_grads: also write "dL/dname = total" under each box that has a "grad"
        (useful for fan-out, where the wires carry the parts and the box the sum)
    output_stub: draw a short arrow out of every node that feeds no other node (the final
        output, e.g. the loss L) labelled with its value and gradient (1 for L itself)
    returns: the matplotlib Figure
    """
    edges = _check_graph(nodes, edges)
    by_name = {node["name"]: node for node in nodes}
    xs = np.array([node["pos"][0] for node in nodes], dtype=float)
    ys = np.array([node["pos"][1] for node in nodes], dtype=float)

    fig, ax = plt.subplots(figsize=figsize)
    ax.set_axis_off()
    span_x = max(xs.max() - xs.min(), 1.0)
    span_y = max(ys.max() - ys.min(), 1.0)
    stub = 0.8 * span_x / max(len(set(xs)) - 1, 1)
    has_out = {src for src, _, _ in edges}
    right = xs.max() + (stub if output_stub else 0.0)
    ax.set_xlim(xs.min() - 0.12 * span_x, right + 0.1 * span_x)
    ax.set_ylim(ys.min() - 0.3 * span_y, ys.max() + 0.3 * span_y)

    boxes = {}
    for node in nodes:
        op = node.get("op")
        label = node["name"] if not op else f"{node['name']} = {op}"
        leaf = not op
        boxes[node["name"]] = ax.text(
            *node["pos"], label, ha="center", va="center", fontsize=11, zorder=3,
            fontweight="bold" if leaf else "normal",
            bbox=dict(boxstyle="round,pad=0.45", facecolor="#eef3fb" if leaf else "#fdf6e3",
                      edgecolor="0.3"),
        )
        if show_node_grads and node.get("grad") is not None:
            ax.annotate(f"dL/d{node['name']} = {_fmt(node['grad'], digits)}", node["pos"],
                        xytext=(0, -24), textcoords="offset points", ha="center", va="top",
                        fontsize=9, color=GRAD_COLOR, zorder=4)

    def wire_labels(p, q, value, grad):
        """Value above, gradient below the middle of the segment p -> q."""
        mid = (np.asarray(p, dtype=float) + np.asarray(q, dtype=float)) / 2
        # the perpendicular must be taken on screen, where the axes' scales differ
        d = ax.transData.transform(q) - ax.transData.transform(p)
        normal = np.array([-d[1], d[0]])
        norm = np.hypot(*normal)
        normal = np.array([0.0, 1.0]) if norm == 0 else normal / norm
        if normal[1] < 0:
            normal = -normal
        off = 10 * normal
        ax.annotate(_fmt(value, digits), mid, xytext=off, textcoords="offset points", ha="center",
                    va="center", color=VALUE_COLOR, fontsize=10, fontweight="bold", zorder=4)
        if grad is not None:
            ax.annotate(_fmt(grad, digits), mid, xytext=-off, textcoords="offset points",
                        ha="center", va="center", color=GRAD_COLOR, fontsize=10, zorder=4)

    for src, dst, grad in edges:
        p, q = by_name[src]["pos"], by_name[dst]["pos"]
        ax.annotate("", xy=q, xytext=p, zorder=2,
                    arrowprops=dict(arrowstyle="-|>", color="0.35", lw=1.3, shrinkA=0, shrinkB=0,
                                    patchA=boxes[src].get_bbox_patch(),
                                    patchB=boxes[dst].get_bbox_patch()))
        wire_labels(p, q, by_name[src]["value"], by_name[src].get("grad") if grad is None else grad)

    if output_stub:
        for node in nodes:
            if node["name"] in has_out:
                continue
            p = np.asarray(node["pos"], dtype=float)
            q = p + np.array([stub, 0.0])
            ax.annotate("", xy=q, xytext=p, zorder=2,
                        arrowprops=dict(arrowstyle="-|>", color="0.35", lw=1.3, shrinkA=0,
                                        patchA=boxes[node["name"]].get_bbox_patch()))
            wire_labels(p + np.array([stub * 0.3, 0.0]), q, node["value"], node.get("grad"))

    if title:
        ax.set_title(title, fontsize=12)
    fig.text(0.5, 0.02, "green (above a wire): forward value     red (below): gradient dL/d(wire) "
             "flowing back", ha="center", fontsize=9, color="0.25")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_fd_errors(hs, errors, title="Error of finite differences vs step h", eps=None,
                   figsize=(8, 4.2), guides=True):
    """Log-log plot of |numerical - exact derivative| against the step h, one line per method.

    hs:     (M,) positive steps
    errors: dict {label: (M,) errors}, e.g. {"centred, float64": ..., "one-sided, float64": ...};
            zeros (an exactly right difference) are drawn at the bottom of the axis
    title:  axes title
    eps:    if given (e.g. np.finfo(np.float64).eps), draw the round-off guide eps/h
    guides: draw dotted slope guides proportional to h and h**2 (the truncation errors of the
            one-sided and the centred difference)
    returns: the matplotlib Figure; the smallest error of every line is marked and labelled
    """
    hs = np.asarray(hs, dtype=float)
    if hs.ndim != 1 or np.any(hs <= 0):
        raise ValueError(f"plot_fd_errors: hs must be a 1-D array of positive steps, got shape {hs.shape}")
    fig, ax = plt.subplots(figsize=figsize)
    floor = np.inf
    for label, err in errors.items():
        err = np.asarray(err, dtype=float)
        if err.shape != hs.shape:
            raise ValueError(f"plot_fd_errors: errors[{label!r}] has shape {err.shape}, hs has {hs.shape}")
        positive = err[err > 0]
        if positive.size:
            floor = min(floor, positive.min())
    floor = 1e-16 if not np.isfinite(floor) else floor / 3
    for label, err in errors.items():
        err = np.maximum(np.asarray(err, dtype=float), floor)
        (line,) = ax.loglog(hs, err, "o-", ms=3, lw=1.5, label=label)
        best = int(np.argmin(err))
        ax.plot(hs[best], err[best], "*", ms=14, color=line.get_color(), markeredgecolor="k", zorder=5)
        ax.annotate(f"best h = {hs[best]:.0e}", (hs[best], err[best]), xytext=(0, -14),
                    textcoords="offset points", ha="center", va="top", fontsize=9,
                    color=line.get_color())
    if guides:
        ref = hs[hs >= hs.max() * 1e-4]
        for power, scale, text in ((1, 2e-2, "~ h"), (2, 1e-3, "~ h²")):
            ax.loglog(ref, scale * ref**power, ":", color="0.35", lw=1.2)
            ax.annotate(text, (ref[-1], scale * ref[-1] ** power), xytext=(4, 0), textcoords="offset points",
                        fontsize=9, color="0.35", va="center", ha="left")
        ax.set_xlim(hs.min() / 3, hs.max() * 30)
    if eps is not None:
        ax.loglog(hs, eps / hs, "--", color="0.6", lw=1, label=f"round-off eps/h (eps = {eps:.1e})")
    ax.set_xlabel("step h")
    ax.set_ylabel("|numerical − exact|")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ymax = max(np.nanmax(np.asarray(e, dtype=float)) for e in errors.values())
    ax.set_ylim(floor / 20, max(ymax * 3, 1e-2))
    ax.legend(fontsize=9, loc="lower left")
    fig.tight_layout()
    return fig
