"""rnnengine: a fast, Keras-faithful CPU engine for SimpleRNN, LSTM and GRU.

Quick start::

    from rnnengine.models import Sequential
    from rnnengine.layers import Input, LSTM, Dense

    model = Sequential([Input(shape=(50, 32)), LSTM(128), Dense(10, activation="softmax")])
    model.set_weights(keras_model.get_weights())
    y = model.predict(x)

Training speaks Keras too: ``model.compile(optimizer="adam",
loss="categorical_crossentropy", metrics=["accuracy"])``, ``model.fit(...)``,
``model.evaluate(...)``, and ``model.save("m.keras")`` for real Keras.
"""
import importlib

from . import config, constraints, kernels, layers, models, regularizers
from .errors import ModelFormatError, RNNEngineError, UnsupportedKerasFeature
from ._info import info
from .config import deterministic, get_deterministic, set_deterministic
from .io import from_keras, load_keras, load_keras_untrusted, load_weights

__version__ = "0.1.0"

__all__ = ["callbacks", "config", "constraints", "kernels", "layers", "losses", "metrics", "models", "optimizers",
           "regularizers", "training", "ModelFormatError", "RNNEngineError", "UnsupportedKerasFeature",
           "deterministic", "get_deterministic", "set_deterministic", "info", "from_keras", "load_keras", "load_keras_untrusted", "load_weights", "__version__"]

# Training's modules load on first use (see rnnengine/training/__init__.py).
_LAZY = ("callbacks", "losses", "metrics", "optimizers", "training")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
