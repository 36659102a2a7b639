"""``rnnengine.optimizers``: Keras 3's optimizers (``keras.optimizers``), for training.

The implementation and its notes: ``rnnengine/training/optimizers.py``.
"""
from .training.optimizers import *  # noqa: F401,F403
from .training.optimizers import __all__  # noqa: F401
