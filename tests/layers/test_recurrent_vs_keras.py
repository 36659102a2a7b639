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


# -- saturation and evaluation order, against Keras itself -----------------------------------------

LONG_T = 5000


@functools.lru_cache(maxsize=None)
def _saturated_case(cls):
    """A float32 LSTM/GRU whose gates sit far in sigmoid's saturation for 5,000 steps.

    Step 0 writes a state; from step 1 on, column 0 of x is 1 and drives the GRU
    update gate z (or the LSTM forget and output gates) to +19..+45 and the LSTM
    input gate to -45..-19, while columns 1 and 2 (noise) move the candidate and
    jitter every gate. TensorFlow's float32 sigmoid is exactly 1.0 from 16.6355 on
    and exp(x)-small below, so Keras holds the state; a sigmoid that stops at
    1 - 1.19e-7 (the gate blocks' former 0.5 * tanh(x / 2) + 0.5) leaks 1.2e-7 of
    it per step, 1e-4..1e-3 after 5,000 steps.
    """
    rng = np.random.default_rng(77)
    Bs, Cs, Hs = 3, 3, 4
    x = np.zeros((Bs, LONG_T, Cs), np.float32)
    x[:, 0, 1:] = rng.uniform(-1.0, 1.0, (Bs, 2))  # the write step
    x[:, 1:, 0] = 1.0
    x[:, 1:, 1:] = rng.standard_normal((Bs, LONG_T - 1, 2)) * 0.5
    K = 4 if cls == "LSTM" else 3
    kernel = rng.uniform(-0.5, 0.5, (Cs, K * Hs))
    recurrent_kernel = rng.uniform(-0.3, 0.3, (Hs, K * Hs))
    keep = rng.uniform(24.0, 40.0, Hs)  # the noise moves a gate by less than 6
    if cls == "LSTM":  # blocks i, f, c, o
        kernel[0] = np.r_[-keep, keep, np.zeros(Hs), keep]
    else:  # blocks z, r, h: z keeps the state, r and the candidate move with the noise
        kernel[0] = np.r_[keep, np.zeros(2 * Hs)]
    kernel[1:, :] *= 4.0
    weights = [kernel.astype(np.float32), recurrent_kernel.astype(np.float32)]
    kwargs = dict(units=Hs, dtype="float32", use_bias=False, return_sequences=True)
    return x, weights, kwargs, keras_layer_outputs(cls, kwargs, x, weights)


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
def test_saturated_gates_over_a_long_sequence_match_keras(backend, cls):
    x, weights, kwargs, want = _saturated_case(cls)
    layer = getattr(layers, cls)(**kwargs)
    layer.build((None, x.shape[2]))
    layer.set_weights(weights)
    got = layer(x)
    assert np.abs(want[:, 2:] - want[:, 1:2]).max() < 1e-6  # Keras holds the state from step 1 on
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=cls)


# The cases of tests/test_fuzz_api.py where fastmath "reassoc" reordered the Numba
# GRU update h = z * h_tm1 + (1 - z) * hh: -inf input with linear activations
# (Keras: inf * 0 = NaN; reordered: +-inf), and z = 1 with |hh| = 1e17 |h_tm1|
# (Keras: h_tm1 exactly; reordered: hh + z * (h_tm1 - hh) = 0).
GRU_ORDER_CASES = {
    "inf_input": (dict(activation="linear", recurrent_activation="linear"),
                  [np.array([[0.3, 0.8, 0.3]]), np.array([[-1.3, 0.9, 0.4]]),
                   np.array([[-0.5, 0.6, 0.4], [0.3, 0.0, 0.5]])],
                  np.array([[[-np.inf]], [[np.inf]], [[0.5]]])),
    "z_one_huge_candidate": (dict(activation="relu", recurrent_activation="hard_sigmoid", use_bias=False),
                             [np.array([[40.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), np.zeros((1, 3))],
                             np.array([[[0.0, 1.0], [1.0, 1e17]], [[0.0, 3.0], [1.0, -1e18]]])),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(GRU_ORDER_CASES))
def test_gru_update_order_matches_keras(backend, case, dtype):
    kwargs, weights, x = GRU_ORDER_CASES[case]
    kwargs = dict(units=1, dtype=dtype, return_sequences=True, **kwargs)
    weights = [w.astype(dtype) for w in weights]
    x = x.astype(dtype)
    want = keras_layer_outputs("GRU", kwargs, x, weights)
    layer = layers.GRU(**kwargs)
    layer.build((None, x.shape[2]))
    layer.set_weights(weights)
    with np.errstate(invalid="ignore"):
        got = layer(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert_close(np.nan_to_num(got), np.nan_to_num(want), dtype, case)
    if case == "z_one_huge_candidate":  # z = 1 keeps h_tm1 exactly
        np.testing.assert_array_equal(got[:, 1], got[:, 0])
