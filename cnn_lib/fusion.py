"""Fusion: which layers of a Sequential run as one pass, and the block that runs them.

A Conv2d followed by a ReLU and/or a MaxPool2d (all three on the ``"fast"`` kernels) can run
as one pass over the batch (:func:`cnn_lib.kernels.fast.conv2d_block_forward`): each slice of
the batch goes through the pooling and the ReLU while the convolution's output is still in the
CPU cache, and the convolution's output for the whole batch is never stored. Inference
engines fuse conv + ReLU the same way; it makes the LeNet-style net of ``benchmarks/`` train
about 10% faster here.

:class:`cnn_lib.Sequential` asks :func:`plan` for its steps on every forward pass
(``Sequential(..., fuse=False)`` switches this off). A :class:`ConvBlock` owns its cache: the
layers it runs keep nothing of that pass (their own ``forward`` and ``backward`` are not
called), it adds the gradients into the Conv2d's ``grads`` as the Conv2d's backward would,
and the results are those of the layers one by one (the outputs exactly, the gradients up to
rounding). With ``fuse=False`` every layer runs on its own and keeps its own outputs and
masks (lesson 08 counts dead ReLUs that way).

This is the only module that looks at concrete layer types to decide how to run them.
"""

from __future__ import annotations

from . import _checks
from .kernels import fast
from .layers import Conv2d, MaxPool2d, ReLU


class ConvBlock:
    """A Conv2d, then an optional ReLU, then an optional MaxPool2d, run as one pass.

    forward(x (N, C_in, H, W)) -> the output of the last layer of the block
    backward(dy, need_input_grad=True) -> dL/dx (None when not wanted); adds dL/dweight and
             dL/dbias into ``conv.grads``
    cache:   what :func:`cnn_lib.kernels.fast.conv2d_block_forward` returned: the
             convolution's input, the ReLU's 0/1 mask of the block's output, the pooling's
             winners; held here, never in the layers.
    """

    can_skip_input_grad = True

    def __init__(self, conv: Conv2d, relu: ReLU | None, pool: MaxPool2d | None):
        self.conv, self.relu, self.pool = conv, relu, pool
        self.layers = [layer for layer in (conv, relu, pool) if layer is not None]
        self._cache = None

    @property
    def name(self) -> str:
        return "+".join(layer.name for layer in self.layers)

    @property
    def params(self):
        return self.conv.params

    def forward(self, x):
        self.conv.check_input(x)
        shape = self.conv.output_shape(x.shape)
        pool = None
        if self.pool is not None:
            shape = self.pool.output_shape(shape)  # checks that the window fits
            pool = (self.pool.kernel_size, self.pool.stride)
        y, cache = fast.conv2d_block_forward(x, *self.conv.conv_args(x), relu=self.relu is not None,
                                             pool=pool)
        self._cache = (cache, y.shape)
        return y

    def backward(self, dy, need_input_grad=True):
        _checks.forward_called(self._cache, self.name)
        cache, y_shape = self._cache
        _checks.upstream(dy, y_shape, self.name)
        dx, dweight, dbias = fast.conv2d_block_backward(dy, cache, need_input_grad)
        self.conv.add_grads(weight=dweight, bias=dbias)
        return dx if need_input_grad else None

    def __repr__(self):
        return f"ConvBlock({', '.join(map(repr, self.layers))})"


def _block_at(layers, i) -> ConvBlock | None:
    """The block that starts at ``layers[i]``, or None if no block starts there."""
    conv = layers[i]
    if type(conv) is not Conv2d or conv.impl != "fast":
        return None
    after = list(layers[i + 1 : i + 3])
    relu = pool = None
    if after and type(after[0]) is ReLU and after[0].impl == "fast":
        relu = after.pop(0)
    if after and type(after[0]) is MaxPool2d and after[0].impl == "fast":
        pool = after[0]
    return None if relu is None and pool is None else ConvBlock(conv, relu, pool)


def plan(layers) -> list:
    """The steps that run ``layers`` one after another: each a layer, or a
    :class:`ConvBlock` in place of the two or three layers it runs."""
    steps, i = [], 0
    while i < len(layers):
        block = _block_at(layers, i)
        steps.append(layers[i] if block is None else block)
        i += 1 if block is None else len(block.layers)
    return steps

