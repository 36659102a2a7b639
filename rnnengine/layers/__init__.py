"""Keras-compatible layers: the same names, arguments, defaults and weights."""
from . import activations, initializers
from .base import Layer
from .core import Dense, Dropout, Input, InputLayer, KerasTensor
from .recurrent import GRU, LSTM, SimpleRNN

__all__ = ["Layer", "Dense", "Dropout", "Input", "InputLayer", "KerasTensor",
           "SimpleRNN", "LSTM", "GRU", "activations", "initializers"]
