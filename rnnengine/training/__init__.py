"""Training: Keras 3's losses, optimizers, metrics, callbacks and fit loop.

``Model.compile/fit/evaluate/train_on_batch/test_on_batch`` (on both
``Sequential`` and the functional ``Model``) delegate to ``engine``. The
user-facing modules are also exposed as ``rnnengine.losses``,
``rnnengine.optimizers``, ``rnnengine.metrics`` and ``rnnengine.callbacks``.

- ``losses``: Keras's losses and their gradients, in NumPy
- ``optimizers``: Keras 3's update rules over one flat parameter array
- ``metrics``: running means over an epoch
- ``callbacks``: History, progress bar, EarlyStopping, ModelCheckpoint, ...
- ``params``: the flat parameter and gradient arrays behind the layers' weights
- ``engine``: compile, fit, evaluate, one train / test step
- ``random``: ``set_random_seed`` for shuffling and dropout
"""
from . import callbacks, losses, metrics, optimizers
from .random import set_random_seed

__all__ = ["callbacks", "losses", "metrics", "optimizers", "set_random_seed"]
