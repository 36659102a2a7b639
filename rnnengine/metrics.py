"""``rnnengine.metrics``: Keras 3's metrics (``keras.metrics``), for training.

The implementation and its notes: ``rnnengine/training/metrics.py``.
"""
from .training.metrics import *  # noqa: F401,F403
from .training.metrics import __all__  # noqa: F401
