"""Every shipped Keras fixture loads and gives Keras's outputs, under both kernel backends.

The fixtures are real Keras files (Keras 3 and tf_keras 2.x, see
tools/make_keras_fixtures.py) with Keras's own outputs for fixed inputs
(``model(x)``). float32 within the suite's 2e-5, float64 within 1e-9.
"""
import numpy as np
import pytest

import rnnengine
from rnnengine.models import Model, Sequential
from tests.conftest import assert_close

from .helpers import CASES, data, fixture, inputs, outputs

MODEL_FILES = [(name, kind) for name, case in CASES.items() for kind in ("keras", "h5")
               if kind in case["files"] and "calls" not in case]
WEIGHT_FILES = [(name, kind) for name, case in CASES.items() for kind in ("weights", "legacy_weights", "keras")
                if kind in case["files"]]
STATEFUL = [(name, kind) for name, case in CASES.items() if "calls" in case for kind in ("keras", "h5")]


def _as_list(y):
    return y if isinstance(y, list) else [y]


@pytest.mark.parametrize("name,kind", MODEL_FILES, ids=[f"{n}{CASES[n]['files'][k][len(n):]}" for n, k in MODEL_FILES])
def test_fixture_matches_keras(backend, name, kind):
    case = CASES[name]
    model = rnnengine.load_keras(fixture(name, kind))
    assert isinstance(model, Sequential if name in ("k3_simple_rnn", "k3_lstm_stack", "k3_gru", "k3_float64",
                                                    "k2_sequential") else Model)
    want = outputs(name)
    got = _as_list(model.predict(inputs(name)))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == np.dtype(case["dtype"]), (g.shape, w.shape, g.dtype)
        assert_close(g, w, case["dtype"], f"{name} output {i}")
    # A different batching gives the same numbers.
    for i, (g, w) in enumerate(zip(_as_list(model.predict(inputs(name), batch_size=2)), want)):
        assert_close(g, w, case["dtype"], f"{name} output {i}, batch_size=2")


@pytest.mark.parametrize("name,kind", STATEFUL)
def test_stateful_chunks_match_keras_call_by_call(backend, name, kind):
    """Keras's outputs were recorded call by call, with reset_states() between
    some calls; rnnengine must carry and reset state at exactly the same points."""
    case, d = CASES[name], data(name)
    model = rnnengine.load_keras(fixture(name, kind))
    k = 0
    for step in case["calls"]:
        if step == "reset":
            model.reset_states()
            continue
        assert_close(model.predict(d[f"c{k}_x0"]), d[f"c{k}_y0"], case["dtype"], f"{name} call {k}")
        k += 1
    assert k >= 4


def test_stateful_reset_restarts_from_zero_state(backend):
    d = data("k3_stateful")
    model = rnnengine.load_keras(fixture("k3_stateful", "keras"))
    first = model.predict(d["c0_x0"])
    again = model.predict(d["c0_x0"])  # carries the state: differs
    assert not np.allclose(first, again)
    model.reset_states()
    assert_close(model.predict(d["c0_x0"]), first, "float32", "after reset_states")


@pytest.mark.parametrize("name,kind", WEIGHT_FILES, ids=[f"{n}-{k}" for n, k in WEIGHT_FILES])
def test_load_weights_sets_every_weight(name, kind):
    """load_weights reads each weights format into a model (here one loaded from
    the .h5 file, then zeroed) and restores exactly the saved weights."""
    model = rnnengine.load_keras(fixture(name, "h5"))
    reference = model.get_weights()
    model.set_weights([np.zeros_like(w) for w in reference])
    rnnengine.io.load_weights(model, fixture(name, kind))
    for got, want in zip(model.get_weights(), reference):
        np.testing.assert_array_equal(got, want)


def test_model_load_weights_method_then_predict(backend):
    """Model.load_weights is the same reader; a freshly built rnnengine model
    with Keras's architecture takes a Keras 3 .weights.h5 and matches Keras."""
    from rnnengine.layers import LSTM, Dense, Dropout, Input

    model = Sequential([Input(shape=(7, 4)), LSTM(6, return_sequences=True), Dropout(0.3),
                        LSTM(4, use_bias=False, go_backwards=True, recurrent_activation="hard_sigmoid"),
                        Dense(2)])
    model.load_weights(fixture("k3_lstm_stack", "weights"))
    assert_close(model.predict(inputs("k3_lstm_stack")), outputs("k3_lstm_stack")[0], "float32")


def test_keras2_hard_sigmoid_is_keras2s():
    """tf.keras 2.x's hard_sigmoid is clip(0.2 x + 0.5): the loaded layers say so."""
    model = rnnengine.load_keras(fixture("k2_sequential", "h5"))
    lstm, gru_v1, _, dense = model.layers
    assert lstm.recurrent_activation == "hard_sigmoid_keras2"
    assert gru_v1.recurrent_activation == "hard_sigmoid_keras2" and gru_v1.reset_after is False
    assert dense.activation == "hard_sigmoid_keras2"
    k3 = rnnengine.load_keras(fixture("k3_lstm_stack", "keras"))
    assert k3.layers[2].recurrent_activation == "hard_sigmoid"


def test_loaded_names_and_config_follow_the_file():
    model = rnnengine.load_keras(fixture("k3_seq2seq", "keras"))
    assert model.name == "k3_seq2seq"
    names = [layer.name for layer in model.layers]
    assert {"encoder_in", "decoder_in", "encoder", "decoder", "per_step"} <= set(names)
    encoder = model.get_layer("encoder")
    assert encoder.return_state and encoder.units == 5
    assert model.count_params() == sum(w.size for w in model.get_weights())
