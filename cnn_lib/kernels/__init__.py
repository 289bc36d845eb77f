"""Kernels: the arithmetic behind every layer, in three tiers with one calling convention.

A layer (:mod:`cnn_lib.layers`) checks its input, then hands plain arrays to a kernel of the
tier its ``impl`` names; the kernel knows nothing about layers. Every tier has every kernel:

    y, cache       = conv2d_forward(x, weight, bias, stride, padding)
    dx, dw, db     = conv2d_backward(dy, cache, need_input_grad=True)
    y, cache       = conv_transpose2d_forward(x, weight, bias, stride, padding, output_padding)
    dx, dw, db     = conv_transpose2d_backward(dy, cache, need_input_grad=True)
    y, cache       = maxpool2d_forward(x, kernel, stride)      dx = maxpool2d_backward(dy, cache)
    y, cache       = avgpool2d_forward(x, kernel, stride)      dx = avgpool2d_backward(dy, cache)
    y, cache       = linear_forward(x, weight, bias)           dx, dw, db = linear_backward(dy, cache)
    y, cache       = relu_forward(x)                           dx = relu_backward(dy, cache)
    (likewise leaky_relu (with ``slope``), sigmoid, tanh)
    loss, dlogits  = softmax_cross_entropy(logits, labels)
    y, mean, var, cache = batchnorm_forward(x, gamma, beta, eps, mean=None, var=None)
    dx, dgamma, dbeta   = batchnorm_backward(dy, cache)

* Shapes are PyTorch's: images ``(N, C, H, W)``, conv weights ``(C_out, C_in, kH, kW)``,
  transposed-conv weights ``(C_in, C_out, kH, kW)``, linear weights ``(out, in)``;
  ``kernel``, ``stride``, ``padding`` and ``output_padding`` are ``(int, int)`` pairs; ``bias``
  may be None (then ``db`` is None). Output sizes come from :mod:`cnn_lib.kernels.shapes`.
* Letters in docstrings are the course's (the table in lesson 00): taps ``(p, q)``, output
  position ``(i, j)``, stride ``s`` (``sh``, ``sw``), padding ``P`` (``ph``, ``pw``).
* ``cache`` is whatever that tier's backward needs; it belongs to the tier that made it (a
  cache of one tier is no input for another) and is read, never changed, by backward.
* ``need_input_grad=False``: dx is not wanted (a network's first layer) and None is returned
  in its place; a tier may skip computing it.
* Gradients are new arrays that the caller may keep and add to; inputs are never changed.
* dtype follows the input: float32 in, float32 out.
* No kernel checks its arguments: the layers do that, with messages meant for a student.

The tiers, from the one that reads like the math to the one that is fast:

``reference`` (:mod:`.reference`)
    plain loops, one Python iteration per output number: each line matches a line of a
    lesson's derivation. Slow on purpose.
``vectorized`` (:mod:`.vectorized`)
    the same arithmetic as whole-array NumPy: im2col + a matrix product for convolution,
    strided window views for pooling. No threads, no layout tricks: what lessons 05, 06
    and 09 print, short enough to read in one sitting.
``fast`` (:mod:`.fast`)
    threads over slices of the batch, channels-last memory, fused conv + ReLU + pool blocks
    (see :mod:`cnn_lib.fusion`). Free to change for speed without touching a lesson; the
    tests hold all three tiers to each other (1e-10 in float64) and to finite differences.
"""

from . import fast, reference, vectorized
from .shapes import conv_output_hw, conv_output_size, conv_transpose_output_hw, conv_transpose_output_size

#: ``layer.impl`` -> the module of kernels it runs.
TIERS = {"reference": reference, "vectorized": vectorized, "fast": fast}

#: The kernels every tier provides (the tests check that each one has them all).
KERNELS = (
    "conv2d_forward", "conv2d_backward", "conv_transpose2d_forward", "conv_transpose2d_backward",
    "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
    "linear_forward", "linear_backward", "relu_forward", "relu_backward",
    "leaky_relu_forward", "leaky_relu_backward", "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward", "softmax_cross_entropy",
    "batchnorm_forward", "batchnorm_backward",
)

__all__ = ["KERNELS", "TIERS", "conv_output_hw", "conv_output_size", "conv_transpose_output_hw",
           "conv_transpose_output_size", "fast", "reference", "vectorized"]
