"""rnnengine: a fast, Keras-faithful CPU engine for SimpleRNN, LSTM and GRU.

Quick start::

    from rnnengine.models import Sequential
    from rnnengine.layers import Input, LSTM, Dense

    model = Sequential([Input(shape=(50, 32)), LSTM(128), Dense(10, activation="softmax")])
    model.set_weights(keras_model.get_weights())
    y = model.predict(x)
"""
from . import config, kernels, layers, models
from .errors import ModelFormatError, RNNEngineError, UnsupportedKerasFeature
from .io import from_keras, load_keras, load_weights

__version__ = "0.1.0"

__all__ = ["config", "kernels", "layers", "models", "ModelFormatError", "RNNEngineError",
           "UnsupportedKerasFeature", "from_keras", "load_keras", "load_weights", "__version__"]
