"""cnn_lib: the small NumPy library of the CNN-backprop course.

Every layer has a forward and a backward pass in three tiers of kernels
(:mod:`cnn_lib.kernels`: loops that read like the derivation, the vectorized NumPy the lessons
print, and a fast one), and gradients you can check with :mod:`cnn_lib.gradcheck`.
"""

from .gradcheck import check_layer, numerical_gradient, relative_error
from .kernels.fast import get_num_threads, set_num_threads
from .layers import (
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    Linear,
    MaxPool2d,
    Parameter,
    ReLU,
    Sigmoid,
    Tanh,
    Unflatten,
)
from .losses import BCEWithLogits, SoftmaxCrossEntropy
from .model import Sequential
from .optim import SGD, Adam
from .training import (
    Callback,
    Checkpoint,
    History,
    OneCycle,
    ProgressBar,
    StopWhen,
    evaluate,
    fit,
    predict,
)

__version__ = "0.1.0"

__all__ = [
    "Adam", "AvgPool2d", "BCEWithLogits", "BatchNorm1d", "BatchNorm2d", "Callback", "Checkpoint",
    "Conv2d", "ConvTranspose2d", "Dropout", "Flatten", "History", "Layer", "LeakyReLU", "Linear",
    "MaxPool2d", "OneCycle", "Parameter", "ProgressBar", "ReLU", "SGD", "Sequential", "Sigmoid",
    "SoftmaxCrossEntropy", "StopWhen", "Tanh", "Unflatten", "check_layer", "evaluate", "fit",
    "get_num_threads", "numerical_gradient", "predict", "relative_error", "set_num_threads",
]
