"""ipywidgets explorers built on :mod:`cnn_lib.viz`.

Each explorer is a small class holding its state, with a ``draw(...)`` method that returns a
matplotlib figure for one setting of its controls (so it works headless and in tests), and a
``widget()`` method that wires ipywidgets sliders to ``draw``. Import as
``from cnn_lib import widgets``.
"""

from .conv_backward import *  # noqa: F403
from .conv_forward import *  # noqa: F403
from .filters import *  # noqa: F403
from .gan import *  # noqa: F403
from .pooling import *  # noqa: F403
from .training import *  # noqa: F403
