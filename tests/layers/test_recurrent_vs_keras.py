"""Every recurrent layer option x dtype x backend against real Keras.

Each case builds ``keras.layers.X(**kwargs)`` and ``rnnengine.layers.X(**kwargs)``
with the same arguments, gives both the same random non-zero weights (biases
too), and compares outputs and final states.
"""
import functools

import numpy as np
import pytest

from rnnengine import layers
from tests.conftest import assert_close
from tests.keras_oracle import keras_layer_outputs

B, T, C, H = 3, 6, 5, 4

OPTIONS = [
    {},
    {"return_sequences": True},
    {"go_backwards": True},
    {"go_backwards": True, "return_sequences": True},
    {"use_bias": False, "return_sequences": True},
    {"return_state": True},
    {"return_state": True, "return_sequences": True, "go_backwards": True},
    {"activation": "relu", "return_sequences": True},
    {"dropout": 0.4, "recurrent_dropout": 0.3, "unroll": True},
]
GATED_OPTIONS = [
    {"recurrent_activation": "hard_sigmoid", "return_sequences": True},
    {"activation": "softsign", "recurrent_activation": "tanh"},
]
CELLS = [
    ("SimpleRNN", {}),
    ("LSTM", {}),
    ("LSTM", {"unit_forget_bias": False}),
    ("GRU", {}),
    ("GRU", {"reset_after": False}),
]

CASES = []
for cls, base in CELLS:
    for opts in OPTIONS + (GATED_OPTIONS if cls != "SimpleRNN" else []):
        CASES.append((cls, {**base, **opts}))


def _case_id(case):
    cls, kwargs = case
    return cls + ("-" + "-".join(f"{k}={v}" for k, v in sorted(kwargs.items())) if kwargs else "")


def _weight_shapes(cls, kwargs, C, H):
    K = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[cls]
    shapes = [(C, K * H), (H, K * H)]
    if kwargs.get("use_bias", True):
        if cls == "GRU" and kwargs.get("reset_after", True):
            shapes.append((2, K * H))
        else:
            shapes.append((K * H,))
    return shapes


@functools.lru_cache(maxsize=None)
def _keras_case(index, dtype_name):
    cls, kwargs = CASES[index]
    rng = np.random.default_rng(1000 + index)
    x = rng.standard_normal((B, T, C)).astype(dtype_name)
    weights = [rng.uniform(-0.6, 0.6, s).astype(dtype_name) for s in _weight_shapes(cls, kwargs, C, H)]
    out = keras_layer_outputs(cls, dict(units=H, dtype=dtype_name, **kwargs), x, weights)
    return x, weights, out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("index", range(len(CASES)), ids=[_case_id(c) for c in CASES])
def test_layer_matches_keras(backend, index, dtype):
    cls, kwargs = CASES[index]
    x, weights, want = _keras_case(index, dtype)
    layer = getattr(layers, cls)(H, dtype=dtype, **kwargs)
    layer.build((None, C))
    assert [tuple(w.shape) for w in layer.get_weights()] == [w.shape for w in weights]
    layer.set_weights(weights)
    got = layer(x)
    if kwargs.get("return_state"):
        assert isinstance(got, list) and len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want)):
            assert g.dtype == np.dtype(dtype)
            assert_close(g, w, dtype, f"{cls} output {i}")
    else:
        assert got.dtype == np.dtype(dtype)
        assert got.shape == want.shape
        assert_close(got, want, dtype, cls)


@pytest.mark.parametrize("cls", ["SimpleRNN", "LSTM", "GRU"])
def test_initial_state_matches_keras(backend, rng, cls):
    x = rng.standard_normal((B, T, C)).astype("float32")
    n_states = 2 if cls == "LSTM" else 1
    states = [rng.standard_normal((B, H)).astype("float32") for _ in range(n_states)]
    weights = [rng.uniform(-0.6, 0.6, s).astype("float32") for s in _weight_shapes(cls, {}, C, H)]
    want = keras_layer_outputs(cls, dict(units=H, return_sequences=True, return_state=True), x, weights,
                               initial_state=states)
    layer = getattr(layers, cls)(H, return_sequences=True, return_state=True)
    layer.build((None, C))
    layer.set_weights(weights)
    got = layer(x, initial_state=states)
    for g, w in zip(got, want):
        assert_close(g, w, np.float32, cls)


@pytest.mark.parametrize("cls", ["SimpleRNN", "LSTM", "GRU"])
def test_stateful_carries_state_across_calls_like_keras(backend, rng, cls):
    from tests.keras_oracle import keras

    k = keras()
    x = rng.standard_normal((2, 8, C)).astype("float32")
    weights = [rng.uniform(-0.6, 0.6, s).astype("float32") for s in _weight_shapes(cls, {}, C, H)]
    klayer = getattr(k.layers, cls)(H, stateful=True, return_sequences=True)
    klayer.build((2, 4, C))
    klayer.set_weights(weights)
    layer = getattr(layers, cls)(H, stateful=True, return_sequences=True)
    layer.build((None, C))
    layer.set_weights(weights)
    for chunk in (x[:, :4], x[:, 4:]):  # two chunks: state must carry over
        assert_close(layer(chunk), np.asarray(klayer(chunk)), np.float32, cls)
    layer.reset_states()
    klayer.reset_states()
    assert_close(layer(x[:, 4:]), np.asarray(klayer(x[:, 4:])), np.float32, cls)


@pytest.mark.parametrize("cls", ["SimpleRNN", "LSTM", "GRU"])
def test_default_weights_have_keras_shapes_and_initializers(cls):
    """A fresh layer gets Keras's weight shapes; recurrent_kernel is orthogonal, bias zero
    (LSTM: forget-gate bias one, as unit_forget_bias=True does)."""
    layer = getattr(layers, cls)(6)
    layer.build((None, 3))
    kernel, recurrent_kernel, bias = layer.get_weights()
    K = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[cls]
    assert kernel.shape == (3, K * 6) and recurrent_kernel.shape == (6, K * 6)
    limit = np.sqrt(6.0 / (3 + K * 6))  # glorot_uniform
    assert np.abs(kernel).max() <= limit and np.abs(kernel).std() > 0
    gram = recurrent_kernel @ recurrent_kernel.T
    np.testing.assert_allclose(gram, np.eye(6), atol=1e-5)
    if cls == "LSTM":
        np.testing.assert_array_equal(bias, np.r_[np.zeros(6), np.ones(6), np.zeros(12)])
    elif cls == "GRU":
        assert bias.shape == (2, 18) and not bias.any()
    else:
        assert not bias.any()
