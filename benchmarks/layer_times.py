"""One layer of the LeNet-style net at a time: forward + backward, cnn_lib vs PyTorch.

bench_training.py times whole training steps; this module lets it say *where* a step's time
goes. Each case is one layer of the LeNet-style net (benchmarks/bench_training.py) at the
shape it has inside that net, run on its own: forward on a fixed random input, then backward
of a fixed random upstream gradient. The first convolution skips dL/dx on both sides (the
images need no gradient), exactly as in the training step. "sgd" is the optimizer step over
all the net's parameters. Inputs to cnn_lib are channels-last in memory, as its own layers
hand them on; PyTorch gets its default contiguous NCHW tensors, as in its training step.
"""

from __future__ import annotations

import warnings

import numpy as np

#: (name, input shape without the batch) in the order a training step meets them
LAYERS = (
    ("conv1", (1, 28, 28)), ("relu1", (32, 28, 28)), ("pool1", (32, 28, 28)),
    ("conv2", (32, 14, 14)), ("relu2", (64, 14, 14)), ("pool2", (64, 14, 14)),
    ("flatten", (64, 7, 7)), ("fc1", (3136,)), ("relu3", (128,)), ("fc2", (128,)),
    ("loss", (10,)), ("sgd", None),
)


def _data(name, shape, batch, dtype, seed=0):
    """Input, upstream gradient (or labels for the loss), the same numbers on both sides."""
    rng = np.random.default_rng([seed, batch, len(name)])
    if shape is None:
        return None, None
    x = rng.standard_normal((batch, *shape)).astype(dtype)
    if name == "loss":
        return x, rng.integers(0, 10, batch)
    return x, None


def _nets(dtype):
    """The layers of bench_training's LeNet-style net, keyed like LAYERS."""
    from bench_training import cnn_lib_net

    model = cnn_lib_net("lenet", dtype)
    names = [n for n, _ in LAYERS if n not in ("loss", "sgd")]
    return model, dict(zip(names, model.layers))


class CnnLibLayer:
    """forward + backward of one cnn_lib layer (or the loss, or an SGD step)."""

    def __init__(self, name, batch, dtype):
        from cnn_lib import SGD, SoftmaxCrossEntropy
        from cnn_lib.kernels import fast

        self.fast = fast
        shape = dict(LAYERS)[name]
        self.name = name
        model, layers = _nets(dtype)
        x, labels = _data(name, shape, batch, dtype)
        if x is not None and x.ndim == 4:  # channels-last in memory, as cnn_lib's layers make it
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        self.x, self.labels = x, labels
        if name == "loss":
            self.layer = SoftmaxCrossEntropy()
        elif name == "sgd":
            rng = np.random.default_rng(1)
            for p in model.parameters():  # gradients as after a backward pass
                p.layer.grads[p.key] = rng.standard_normal(p.value.shape).astype(dtype)
            self.opt = SGD(model.parameters(), lr=1e-9, momentum=0.9)
            self.opt.step()  # creates the momentum buffers, as after the first step
            # every timed step reuses these gradients, on purpose: no "not cleared" warning
            warnings.filterwarnings("ignore", message=r"SGD\.step\(\): the gradients")
        else:
            self.layer = layers[name]
            y = self.layer.forward(x)
            self.dy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
            if y.ndim == 4:
                self.dy = np.ascontiguousarray(self.dy.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)

    def __call__(self):
        if self.name == "sgd":
            self.opt.step()
            return
        with self.fast.single_threaded_blas():  # as inside Sequential
            if self.name == "loss":
                self.layer.forward(self.x, self.labels)
                self.layer.backward()
            elif self.name == "conv1":
                self.layer.zero_grad()
                self.layer.forward(self.x)
                self.layer.backward(self.dy, need_input_grad=False)
            else:
                self.layer.zero_grad()
                self.layer.forward(self.x)
                self.layer.backward(self.dy)


class TorchLayer:
    """The same with PyTorch: forward, then autograd's backward."""

    def __init__(self, name, batch, dtype):
        import torch
        from bench_training import torch_net

        self.torch, self.name = torch, name
        torch_dtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
        model = torch_net("lenet").to(torch_dtype)
        names = [n for n, _ in LAYERS if n not in ("loss", "sgd")]
        layers = dict(zip(names, model))
        x, labels = _data(name, dict(LAYERS)[name], batch, dtype)
        if name == "sgd":
            self.opt = torch.optim.SGD(model.parameters(), lr=1e-9, momentum=0.9)
            for p in model.parameters():
                p.grad = torch.randn_like(p)
            self.opt.step()  # creates the momentum buffers, as after the first step
            return
        self.x = torch.from_numpy(x).requires_grad_(name != "conv1")  # images need no gradient
        if name == "loss":
            self.labels = torch.from_numpy(labels)
            self.module = torch.nn.CrossEntropyLoss()
            self.params = []
        else:
            self.module = layers[name]
            self.params = list(self.module.parameters())
            with torch.no_grad():
                self.dy = torch.randn_like(self.module(self.x))

    def __call__(self):
        if self.name == "sgd":
            self.opt.step()
            return
        for p in self.params:  # zero_grad(set_to_none=True), as in the training step
            p.grad = None
        self.x.grad = None
        if self.name == "loss":
            self.module(self.x, self.labels).backward()
        else:
            self.module(self.x).backward(self.dy)
