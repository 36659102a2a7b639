"""Keras-compatible layers: the same names, arguments, defaults and weights."""
from . import activations, initializers
from .base import KerasTensor, Layer
from .core import Activation, Dense, Dropout, Embedding, Flatten, Input, InputLayer, Masking, RepeatVector
from .merge import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract
from .recurrent import GRU, LSTM, SimpleRNN
from .wrappers import Bidirectional, TimeDistributed

__all__ = ["Layer", "KerasTensor", "Input", "InputLayer", "Dense", "Dropout", "Activation", "Flatten",
           "RepeatVector", "Masking", "Embedding", "SimpleRNN", "LSTM", "GRU", "Bidirectional",
           "TimeDistributed", "Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum",
           "Minimum", "activations", "initializers"]
