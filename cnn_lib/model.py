"""Sequential: a stack of layers that is itself a layer (same forward/backward protocol)."""

from __future__ import annotations

import os

import numpy as np

from . import functional as F
from .layers import Conv2d, Layer, MaxPool2d, Parameter, ReLU


def _has_params(layer) -> bool:
    """Does backward have to run for this layer's gradients? (Unknown layer types: yes.)"""
    return not isinstance(layer, Layer) or bool(layer.params)


class Sequential(Layer):
    """Run layers one after another; backward runs them in reverse.

    Parameters are named ``"<index>.<key>"`` (``"0.weight"``, ``"4.bias"``), as in PyTorch.
    ``params``/``grads`` are dicts of those names onto the layers' own arrays, so
    ``Sequential`` can be gradient-checked like any single layer.
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not (hasattr(layer, "forward") and hasattr(layer, "backward")):
                raise TypeError(f"Sequential: item {i} ({layer!r}) has no forward/backward")
        self.layers = list(layers)

    # the container's params/grads are views of its layers' dicts
    @property
    def params(self):
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    @params.setter
    def params(self, value):  # Layer.__init__ assigns {}; a Sequential owns none itself
        pass

    @property
    def grads(self):
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()}

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

    def forward(self, x):
        with F.single_threaded_blas():  # cnn_lib's threads do the parallel work
            i = 0
            while i < len(self.layers):
                layer = self.layers[i]
                # a Conv2d and the ReLU and/or MaxPool2d after it, on the fast kernels, run as
                # one pass (Conv2d.forward_fused: the same results, one trip to memory; the
                # caches are the unfused ones, except a smaller mask for a ReLU under a pooling)
                block = layer.fusable(self.layers[i + 1 : i + 3]) if type(layer) is Conv2d else None
                if block is not None:
                    x = layer.forward_fused(x, *block)
                    i += 1 + sum(part is not None for part in block)
                else:
                    x = layer.forward(x)
                    i += 1
        return x

    def backward(self, dy, need_input_grad=True):
        """Run every layer's backward, last to first, and return dL/dx.

        ``need_input_grad=False`` is for training on data nobody differentiates (images):
        the gradients of all parameters are the same, but dL/dx is not wanted, so the layers
        below the first one with parameters are skipped, that layer is asked not to compute
        its own dL/dx (if it can: ``layer.can_skip_input_grad``), and None is returned.
        """
        with F.single_threaded_blas():  # cnn_lib's threads do the parallel work
            return self._backward(dy, need_input_grad)

    def _backward(self, dy, need_input_grad):
        stop = 0  # index of the last layer (counting backwards) that must run
        if not need_input_grad:
            stop = next((i for i, layer in enumerate(self.layers) if _has_params(layer)), len(self.layers))
        i = len(self.layers) - 1
        while i >= stop:
            layer = self.layers[i]
            block = self._fused_block_below(i, stop)
            if block is not None:
                # a MaxPool2d and/or ReLU and the Conv2d under them, in one pass
                # (Conv2d.backward_fused)
                conv, relu, pool = block
                j = i - (relu is not None) - (pool is not None)  # the Conv2d's index
                wanted = need_input_grad or j > stop
                dx = conv.backward_fused(dy, relu, pool, need_input_grad=wanted)
                if not wanted:
                    return None
                dy, i = dx, j - 1
                continue
            if i == stop and not need_input_grad:
                if getattr(layer, "can_skip_input_grad", False):
                    layer.backward(dy, need_input_grad=False)
                else:
                    layer.backward(dy)
                return None
            dx = layer.backward(dy)
            if not isinstance(dx, np.ndarray):
                raise TypeError(f"Sequential: layer {i} ({layer!r}) backward returned "
                                f"{type(dx).__name__}, expected dL/dx as an array")
            dy, i = dx, i - 1
        return dy if need_input_grad else None

    def _fused_block_below(self, i, stop):
        """(conv, relu, pool) when layer i is the top of a block that backward can run in one
        pass: [Conv2d, ReLU, MaxPool2d], [Conv2d, MaxPool2d] or [Conv2d, ReLU], whose caches
        the fast kernels made; else None."""
        for relu_at, pool_at in ((i - 1, i), (None, i), (i, None)):
            bottom = min(at for at in (relu_at, pool_at) if at is not None) - 1
            if bottom < stop:
                continue
            conv = self.layers[bottom]
            relu = None if relu_at is None else self.layers[relu_at]
            pool = None if pool_at is None else self.layers[pool_at]
            if (type(conv) is Conv2d and (relu is None or type(relu) is ReLU)
                    and (pool is None or type(pool) is MaxPool2d)
                    and conv.fusable_backward(relu, pool)):
                return conv, relu, pool
        return None

    def parameters(self):
        return [Parameter(layer, key, f"{i}.{key}")
                for i, layer in enumerate(self.layers) for key in layer.params]

    def zero_grad(self):
        for layer in self.layers:
            layer.zero_grad()

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter, by name."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state) -> None:
        """Copy arrays into the parameters in place; all names and shapes are checked first,
        so a mismatch leaves the model untouched."""
        own = self.params
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"state does not match the model: missing {missing}, unexpected {unexpected}")
        for name, value in own.items():
            if np.shape(state[name]) != value.shape:
                raise ValueError(f"state[{name!r}] has shape {np.shape(state[name])}, "
                                 f"the model's parameter has {value.shape}")
        for name, value in own.items():
            np.copyto(value, state[name], casting="same_kind")

    def save(self, path) -> None:
        """Save the parameters to a ``.npz`` file (plain arrays, no pickle)."""
        path = os.fspath(path)
        with open(path, "wb") as f:  # an open file keeps np.savez from appending ".npz"
            np.savez(f, **self.state_dict())

    def load(self, path) -> None:
        """Load parameters saved by :meth:`save` (never unpickles anything)."""
        with np.load(os.fspath(path), allow_pickle=False) as data:
            self.load_state_dict({name: data[name] for name in data.files})

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
