"""Exceptions rnnengine raises on purpose, so callers can catch them by kind."""


class RNNEngineError(Exception):
    """Base class of rnnengine's own errors."""


class ModelFormatError(RNNEngineError, ValueError):
    """A file is truncated, corrupt or not a Keras model; the message names the file."""


class UnsupportedKerasFeature(RNNEngineError, ValueError):
    """A Keras layer or option rnnengine does not run; the message lists each one."""
