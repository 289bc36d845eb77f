"""Output sizes: the one place where the shape arithmetic of convolution and pooling lives.

Every layer, kernel, figure and widget of cnn_lib takes its sizes from here. The formulas are
PyTorch's (no dilation), in the course's notation (lesson 00: kernel size k, stride s,
padding P):

    convolution, pooling:    H_out = floor((H + 2*P - k) / s) + 1
    transposed convolution:  H_out = (H - 1)*s - 2*P + k + output_padding

A transposed convolution with the same k, s, P maps a convolution's output size back to its
input size. With s > 1 several input sizes give the same convolution output (the floor
drops up to s - 1 rows), and ``output_padding`` (0 <= output_padding < s) picks which one.
"""

from __future__ import annotations


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length along one axis of a convolution or a pooling:
    ``floor((size + 2*padding - kernel) / stride) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def conv_transpose_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                               output_padding: int = 0) -> int:
    """Output length along one axis of a transposed convolution:
    ``(size - 1)*stride - 2*padding + kernel + output_padding``."""
    return (size - 1) * stride - 2 * padding + kernel + output_padding


def conv_output_hw(hw, kernel, stride=(1, 1), padding=(0, 0)) -> tuple[int, int]:
    """(H_out, W_out) of a convolution or pooling of an (H, W) image: both axes at once."""
    return tuple(conv_output_size(*args) for args in zip(hw, kernel, stride, padding))


def conv_transpose_output_hw(hw, kernel, stride=(1, 1), padding=(0, 0),
                             output_padding=(0, 0)) -> tuple[int, int]:
    """(H_out, W_out) of a transposed convolution of an (H, W) image."""
    return tuple(conv_transpose_output_size(*args)
                 for args in zip(hw, kernel, stride, padding, output_padding))
