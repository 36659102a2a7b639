"""State setters validate everything before changing anything: a bad array
anywhere in the list leaves the old state whole. ``reset_states(states)``
(Keras 2's) sets a stateful layer's carried state, checked against Keras 3
with the same state assigned to its state variables."""
import numpy as np
import pytest

from rnnengine import layers
from rnnengine.models import Sequential


def _stateful(cell="LSTM", batch=2):
    return Sequential([layers.Input(shape=(3, 2), batch_size=batch),
                       getattr(layers, cell)(4, stateful=True, return_sequences=True),
                       layers.GRU(3, stateful=True)])


BAD = [np.array([["a"] * 4] * 2), np.ones((2, 5)), np.ones((3, 4)), np.ones((2, 4), complex), [[1, 2], [3]],
       np.empty((2, 4), object)]


@pytest.mark.parametrize("bad", BAD, ids=["str", "units", "batch", "complex", "ragged", "object"])
def test_stream_set_state_with_a_bad_array_changes_nothing(backend, rng, bad):
    model = _stateful()
    stream = model.stream(batch_size=2)
    for _ in range(3):
        stream.step(rng.standard_normal((2, 2)).astype(np.float32))
    before = stream.get_state()
    good = [[rng.standard_normal((2, 4)), rng.standard_normal((2, 4))], [rng.standard_normal((2, 3))]]
    for where in ((0, 1), (1, 0)):  # the bad array second in a layer's list, and in the second layer
        states = [list(s) for s in good]
        states[where[0]][where[1]] = bad
        with pytest.raises((TypeError, ValueError), match="set_state"):
            stream.set_state(states)
        after = stream.get_state()
        for b, a in zip(before, after):
            for x, y in zip(b, a):
                np.testing.assert_array_equal(x, y)
    x = rng.standard_normal((2, 2)).astype(np.float32)
    stream.set_state(good)  # a good one still works, and is what the next step starts from
    got = stream.step(x)
    stream.set_state(good)
    np.testing.assert_array_equal(stream.step(x), got)


@pytest.mark.parametrize("bad", BAD, ids=["str", "units", "batch", "complex", "ragged", "object"])
def test_reset_states_with_a_bad_array_changes_nothing(rng, bad):
    model = _stateful()
    x = rng.standard_normal((2, 3, 2)).astype(np.float32)
    model.predict(x, verbose=0)
    layer = model.layers[0]
    before = layer.states
    with pytest.raises((TypeError, ValueError), match="reset_states"):
        layer.reset_states([rng.standard_normal((2, 4)), bad])
    for b, a in zip(before, layer.states):
        np.testing.assert_array_equal(b, a)
    with pytest.raises(ValueError, match="expects 2 state arrays"):
        layer.reset_states([rng.standard_normal((2, 4))])


def test_reset_states_needs_a_stateful_layer():
    layer = layers.LSTM(3)
    with pytest.raises(AttributeError, match="stateful"):
        layer.reset_states([np.zeros((1, 3)), np.zeros((1, 3))])


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM", "GRU"])
def test_reset_states_with_states_matches_keras(backend, rng, cell):
    from tests.keras_oracle import keras

    k = keras()
    kmodel = k.Sequential([k.Input(shape=(3, 2), batch_size=2),
                           getattr(k.layers, cell)(4, stateful=True, return_sequences=True),
                           k.layers.GRU(3, stateful=True)])
    for w in kmodel.weights:
        w.assign(rng.uniform(-0.5, 0.5, w.shape).astype("float32"))
    model = _stateful(cell)
    model.set_weights(kmodel.get_weights())
    x = rng.standard_normal((2, 3, 2)).astype(np.float32)
    n = 2 if cell == "LSTM" else 1
    states = [rng.standard_normal((2, 4)).astype(np.float32) for _ in range(n)]
    for before_call in (True, False):  # on a layer that has run, and on a fresh one
        model = _stateful(cell)
        model.set_weights(kmodel.get_weights())
        if not before_call:
            model.predict(x, verbose=0)
        model.layers[0].reset_states(states if n > 1 else states[0])
        for v, s in zip(kmodel.layers[0].states, states):
            v.assign(s)
        kmodel.layers[1].reset_states()
        model.layers[1].reset_states()
        for _ in range(2):  # the set state, then the state it carries on to
            np.testing.assert_allclose(model.predict(x, verbose=0), np.asarray(kmodel.predict(x, verbose=0)),
                                       rtol=1e-5, atol=1e-5)
