"""Matplotlib figures used by the lessons, one module per topic.

Every function returns the ``matplotlib.figure.Figure`` it drew, so a lesson (or a test) can
keep, save or inspect it. Import as ``from cnn_lib import viz``.
"""

from .conv_backward import *  # noqa: F403
from .conv_forward import *  # noqa: F403
from .dense import *  # noqa: F403
from .digits import *  # noqa: F403
from .filters import *  # noqa: F403
from .gradients import *  # noqa: F403
from .pooling import *  # noqa: F403
from .softmax import *  # noqa: F403
from .training import *  # noqa: F403
