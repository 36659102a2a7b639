"""``rnnengine.losses``: Keras 3's losses (``keras.losses``), for training.

The implementation and its notes: ``rnnengine/training/losses.py``.
"""
from .training.losses import *  # noqa: F401,F403
from .training.losses import __all__  # noqa: F401
