"""Shared helpers for the training tests: build the same model in Keras and rnnengine."""
import numpy as np

from tests.keras_oracle import keras


def max_diff(a_list, b_list):
    return max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
               for a, b in zip(a_list, b_list))


def check_weights(name, got, want, atol=1e-5, rtol=1e-5):
    assert len(got) == len(want), f"{name}: {len(got)} weights vs {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{name}: weight {i} {np.shape(w)}")


def twin(build):
    """``build(layers_module, Model)`` called for Keras and for rnnengine; the rnnengine
    model gets Keras's (random) initial weights."""
    from rnnengine import layers as rl
    from rnnengine.models import Model, Sequential

    k = keras()
    km = build(k.layers, k.Model, k.Sequential)
    rm = build(rl, Model, Sequential)
    rm.set_weights(km.get_weights())
    return km, rm
