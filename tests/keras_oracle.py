"""Real Keras as the oracle: build the same layer or model in Keras, run it, cache it.

Keras (on TensorFlow, CPU) is a test dependency. Its results are cached per case
so that both kernel backends are compared against one Keras run.
"""
import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np


@functools.lru_cache(maxsize=None)
def keras():
    import keras as _keras

    return _keras


def keras_layer_outputs(layer_cls_name, kwargs, x, weights, initial_state=None):
    """Run ``keras.layers.<layer_cls_name>(**kwargs)`` eagerly on ``x`` with ``weights``."""
    k = keras()
    layer = getattr(k.layers, layer_cls_name)(**kwargs)
    layer.build(x.shape)
    layer.set_weights(weights)
    if initial_state is not None:
        out = layer(x, initial_state=[k.ops.convert_to_tensor(s) for s in initial_state])
    else:
        out = layer(x)
    if isinstance(out, (list, tuple)):
        return [np.asarray(o) for o in out]
    return np.asarray(out)
