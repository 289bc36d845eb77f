"""Fast kernels: the vectorized tier's arithmetic, reorganised for speed on every core.

Same calling convention and results as :mod:`cnn_lib.kernels.reference` and
:mod:`cnn_lib.kernels.vectorized` (see :mod:`cnn_lib.kernels`). What makes them fast, module
by module (lesson 09 walks through it):

* :mod:`.layout`: images stored **channels-last** in memory behind PyTorch's (N, C, H, W)
  shape, so copies and shifted adds move long contiguous runs.
* :mod:`.threads`: a batch goes through **in slices** of about ``CHUNK_BYTES`` each, on
  ``NUM_THREADS`` threads at once (NumPy releases the GIL inside its loops), with NumPy's
  own BLAS kept to one thread meanwhile; big matrix products share their columns out.
* :mod:`.conv`: im2col with a column of ones for the bias, dL/dx as one product and one
  shifted add per kernel tap, and the **fused conv + ReLU + max-pool block** that
  :mod:`cnn_lib.fusion` runs.
* :mod:`.pool`: pooling on the kH*kW strided sub-grids of the input.
* :mod:`.dense`: dense layers, ReLU and leaky ReLU on the threads.
* :mod:`.norm`: batch normalisation on a channels-last batch seen as a (pixels, channels)
  matrix, its statistics summed slice by slice on the threads.

Nothing here makes a float64 array out of float32 inputs. These modules are free to change
for speed: no lesson prints them, and the tests hold them to the other two tiers.
"""

from ..vectorized import (
    sigmoid_backward,
    sigmoid_forward,
    softmax_cross_entropy,
    tanh_backward,
    tanh_forward,
)
from .conv import (
    conv2d_backward,
    conv2d_block_backward,
    conv2d_block_forward,
    conv2d_forward,
    conv_transpose2d_backward,
    conv_transpose2d_forward,
)
from .dense import (
    leaky_relu_backward,
    leaky_relu_forward,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
)
from .norm import batchnorm_backward, batchnorm_forward
from .pool import avgpool2d_backward, avgpool2d_forward, maxpool2d_backward, maxpool2d_forward
from .threads import get_num_threads, set_num_threads, single_threaded_blas

__all__ = [
    "avgpool2d_backward", "avgpool2d_forward", "batchnorm_backward", "batchnorm_forward",
    "conv2d_backward", "conv2d_block_backward",
    "conv2d_block_forward", "conv2d_forward", "conv_transpose2d_backward",
    "conv_transpose2d_forward", "get_num_threads", "leaky_relu_backward", "leaky_relu_forward",
    "linear_backward", "linear_forward", "maxpool2d_backward", "maxpool2d_forward",
    "relu_backward", "relu_forward", "set_num_threads", "sigmoid_backward", "sigmoid_forward",
    "single_threaded_blas", "softmax_cross_entropy", "tanh_backward", "tanh_forward",
]
