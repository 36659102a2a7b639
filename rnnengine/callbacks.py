"""``rnnengine.callbacks``: Keras 3's callbacks (``keras.callbacks``), for training.

The implementation and its notes: ``rnnengine/training/callbacks.py``.
"""
from .training.callbacks import *  # noqa: F401,F403
from .training.callbacks import __all__  # noqa: F401
