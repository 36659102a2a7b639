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
import importlib

__all__ = ["callbacks", "losses", "metrics", "optimizers", "set_random_seed"]


def __getattr__(name):
    # Imported on first use (PEP 562): a process that only loads a model and
    # predicts never pays for the training modules nor numpy.random (about
    # 20 ms of a 0.15 s cold start).
    if name in ("callbacks", "losses", "metrics", "optimizers"):
        return importlib.import_module("." + name, __name__)
    if name == "set_random_seed":
        from .random import set_random_seed
        return set_random_seed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
