"""Random numbers for training: shuffling and dropout masks.

One process-wide NumPy generator (``set_random_seed`` reseeds it, as
``keras.utils.set_random_seed`` does for Keras) feeds ``fit``'s shuffling, the
dropout of every layer without a ``seed`` and the weight initializers without a
``seed``; a layer or initializer with a ``seed`` keeps its own generator. The draws are NumPy's, not Keras's: a model
trained here and in Keras from the same weights sees different masks and orders.
"""
import numpy as np

_state = {"generator": np.random.default_rng()}


def set_random_seed(seed):
    """Seed the generator behind shuffling and unseeded dropout."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"Expected `seed` argument to be an integer. Received: seed={seed!r}")
    _state["generator"] = np.random.default_rng(int(seed))


def generator():
    return _state["generator"]


def layer_generator(layer):
    """The generator for ``layer``'s dropout: its own when it has a ``seed``."""
    seed = getattr(layer, "seed", None)
    if seed is None:
        return _state["generator"]
    own = getattr(layer, "_dropout_generator", None)
    if own is None:
        own = layer._dropout_generator = np.random.default_rng(int(seed))
    return own
