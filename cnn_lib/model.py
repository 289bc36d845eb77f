"""Sequential: a stack of layers that is itself a layer (same forward/backward protocol)."""

from __future__ import annotations

import numpy as np

from . import fusion
from .kernels.fast import single_threaded_blas
from .layers import Layer, Parameter


def _has_params(step) -> bool:
    """Does backward have to run for this step's gradients? (Unknown layer types: yes.)"""
    return bool(getattr(step, "params", True))


class Sequential(Layer):
    """Run layers one after another; backward runs them in reverse.

    Sequential(*layers, fuse=True)

    Parameters and buffers are named ``"<index>.<key>"`` (``"0.weight"``, ``"4.bias"``), as in
    PyTorch. ``params``/``buffers``/``grads`` are dicts of those names onto the layers' own
    arrays, so a ``Sequential`` can be gradient-checked, saved and loaded like any single layer.
    ``train()``/``eval()``, ``impl`` and ``zero_grad()`` reach every layer.

    ``fuse=True``: a Conv2d followed by a ReLU and/or a MaxPool2d, all on the fast kernels,
    runs as one pass (:mod:`cnn_lib.fusion`); those layers then keep nothing of the pass
    themselves. ``fuse=False`` runs every layer on its own, and each keeps its own cache
    (outputs, masks) from the last forward pass.
    """

    can_skip_input_grad = True

    def __init__(self, *layers, fuse=True):
        super().__init__()
        for i, layer in enumerate(layers):
            if not (hasattr(layer, "forward") and hasattr(layer, "backward")):
                raise TypeError(f"Sequential: item {i} ({layer!r}) has no forward/backward")
        self.layers = list(layers)
        self.fuse = bool(fuse)
        self._steps = None  # (index of the step's first layer, step) of the last forward pass

    # the container's dicts are views of its layers' dicts
    def _named(self, attribute):
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers)
                for k, v in (getattr(layer, attribute, None) or {}).items()}

    @property
    def params(self):
        return self._named("params")

    @params.setter
    def params(self, value):  # Layer.__init__ assigns {}; a Sequential owns none itself
        pass

    @property
    def buffers(self):
        return self._named("buffers")

    @buffers.setter
    def buffers(self, value):
        pass

    @property
    def grads(self):
        return self._named("grads")

    @grads.setter
    def grads(self, value):
        pass

    @property
    def impl(self):
        return self._impl

    @impl.setter
    def impl(self, value):
        Layer.impl.fset(self, value)
        for layer in getattr(self, "layers", []):
            layer.impl = value

    def train(self, mode: bool = True):
        self.training = bool(mode)
        for layer in self.layers:
            if hasattr(layer, "train"):
                layer.train(mode)
        return self

    def forward(self, x):
        layers = fusion.plan(self.layers) if self.fuse else self.layers
        steps, i = [], 0
        for step in layers:
            steps.append((i, step))
            i += len(step.layers) if isinstance(step, fusion.ConvBlock) else 1
        self._steps = steps
        with single_threaded_blas():  # cnn_lib's threads do the parallel work
            for _, step in steps:
                x = step.forward(x)
        return x

    def backward(self, dy, need_input_grad=True):
        """Run every layer's backward, last to first, and return dL/dx.

        ``need_input_grad=False`` is for training on data nobody differentiates (images):
        the gradients of all parameters are the same, but dL/dx is not wanted, so the layers
        below the first one with parameters are skipped, that layer is asked not to compute
        its own dL/dx (if it can: ``layer.can_skip_input_grad``), and None is returned.
        """
        if self._steps is None:
            raise RuntimeError("Sequential.backward called before forward: run forward(x) first")
        steps = self._steps
        stop = 0  # the last step (counting backwards) that must run
        if not need_input_grad:
            stop = next((s for s, (_, step) in enumerate(steps) if _has_params(step)), len(steps))
        with single_threaded_blas():  # cnn_lib's threads do the parallel work
            for s in range(len(steps) - 1, stop - 1, -1):
                i, step = steps[s]
                if s == stop and not need_input_grad:
                    if getattr(step, "can_skip_input_grad", False):
                        step.backward(dy, need_input_grad=False)
                    else:
                        step.backward(dy)
                    return None
                dx = step.backward(dy)
                if not isinstance(dx, np.ndarray):
                    raise TypeError(f"Sequential: layer {i} ({step!r}) backward returned "
                                    f"{type(dx).__name__}, expected dL/dx as an array")
                dy = dx
        return dy if need_input_grad else None

    def parameters(self):
        return [Parameter(layer, key, f"{i}.{key}")
                for i, layer in enumerate(self.layers) for key in layer.params]

    def zero_grad(self):
        for layer in self.layers:
            if hasattr(layer, "zero_grad"):
                layer.zero_grad()
            elif isinstance(getattr(layer, "grads", None), dict):
                layer.grads.clear()

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
