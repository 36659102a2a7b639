"""Streams: stepping one timestep at a time equals predicting the whole sequence."""
import threading

import numpy as np
import pytest

from rnnengine import layers
from rnnengine.models import Sequential


def _model(final_sequences=True):
    return Sequential([layers.Input(shape=(None, 4)), layers.LSTM(8, return_sequences=True),
                       layers.GRU(6, return_sequences=True), layers.SimpleRNN(5, return_sequences=final_sequences),
                       layers.Dense(3, activation="softmax")])


@pytest.mark.parametrize("final_sequences", [True, False])
def test_steps_equal_the_whole_sequence(backend, rng, final_sequences):
    model = _model(final_sequences)
    x = rng.standard_normal((3, 9, 4)).astype(np.float32)
    full = _model(True)
    full.set_weights(model.get_weights())
    want = full.predict(x)  # (3, 9, 3): the output at every step
    stream = model.stream(batch_size=3)
    got = np.stack([stream.step(x[:, t]) for t in range(9)], axis=1)
    np.testing.assert_allclose(got, want, atol=2e-6)
    # A single row as (features,) gives (outputs,).
    one = model.stream(batch_size=1)
    assert one.step(x[0, 0]).shape == (3,)


def test_state_snapshot_restore_and_reset(rng):
    model = _model()
    x = rng.standard_normal((2, 6, 4)).astype(np.float32)
    stream = model.stream(batch_size=2)
    for t in range(3):
        stream.step(x[:, t])
    snapshot = stream.get_state()
    assert [len(s) for s in snapshot] == [2, 1, 1]  # LSTM [h, c], GRU [h], SimpleRNN [h]
    assert snapshot[0][1].shape == (2, 8)
    after = [stream.step(x[:, t]) for t in range(3, 6)]
    stream.set_state(snapshot)
    replay = [stream.step(x[:, t]) for t in range(3, 6)]
    np.testing.assert_array_equal(np.array(after), np.array(replay))
    stream.reset()
    np.testing.assert_array_equal(stream.step(x[:, 0]), model.stream(batch_size=2).step(x[:, 0]))
    with pytest.raises(ValueError, match=r"state 0: expected shape \(2, 8\), received \(3, 8\)"):
        stream.set_state([[np.zeros((3, 8)), np.zeros((2, 8))], [np.zeros((2, 6))], [np.zeros((2, 5))]])


def test_many_sessions_in_one_call(backend, rng):
    """rows= steps a subset of sessions; each session's outputs equal its own solo stream."""
    model = _model()
    n_sessions, steps = 6, 5
    x = rng.standard_normal((n_sessions, steps, 4)).astype(np.float32)
    shared = model.stream(batch_size=n_sessions)
    solo = [model.stream(batch_size=1) for _ in range(n_sessions)]
    cursor = [0] * n_sessions
    for tick in range(12):
        active = [s for s in range(n_sessions) if (s + tick) % 3 != 0 and cursor[s] < steps]
        if not active:
            continue
        batch = np.stack([x[s, cursor[s]] for s in active])
        got = shared.step(batch, rows=active)
        for row, s in zip(got, active):
            np.testing.assert_allclose(row, solo[s].step(x[s, cursor[s]]), atol=2e-6)
            cursor[s] += 1


def test_stream_errors_and_zero_allocation_out(rng):
    model = _model()
    stream = model.stream(batch_size=2)
    with pytest.raises(ValueError, match="expected 2 rows"):
        stream.step(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="rows must be in"):
        stream.step(np.ones((1, 4), np.float32), rows=[5])
    with pytest.raises(ValueError, match="axis -1"):
        stream.step(np.ones((2, 7), np.float32))
    with pytest.raises(ValueError, match="backwards"):
        Sequential([layers.Input(shape=(None, 4)), layers.LSTM(3, go_backwards=True)]).stream()
    out = np.empty((2, 3), np.float32)
    assert stream.step(np.ones((2, 4), np.float32), out=out) is out


def test_one_stream_is_single_owner(rng):
    model = _model()
    stream = model.stream(batch_size=1)
    stream._busy.acquire()  # as if another thread were inside step()
    try:
        with pytest.raises(RuntimeError, match="single-owner"):
            stream.step(np.ones(4, np.float32))
    finally:
        stream._busy.release()
    results = []
    streams = [model.stream(batch_size=1) for _ in range(4)]
    threads = [threading.Thread(target=lambda s=s: results.append(s.step(np.ones(4, np.float32))))
               for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, results[0]) for r in results)


def test_an_embedding_model_streams_token_ids_as_a_stateful_keras_model_steps(rng):
    """Token by token (a language model's generation loop): one id per row and step, masked
    (id 0) steps included, equal to Keras's stateful model fed one step at a time."""
    from tests.keras_oracle import keras

    from rnnengine import config

    k = keras()

    def build(m, stateful, inp):
        return [inp, m.Embedding(20, 6, mask_zero=True), m.LSTM(8, return_sequences=True, stateful=stateful),
                m.GRU(5, stateful=stateful), m.Dense(4, activation="softmax")]

    ours = Sequential(build(layers, False, layers.Input(shape=(None,))))
    ours.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5 for w in ours.get_weights()])
    tokens = rng.integers(1, 20, (3, 7))
    tokens[1, 3] = 0  # a masked step inside a row, and trailing ones: the state carries through
    tokens[2, 5:] = 0
    previous = config.get_kernels()
    try:
        for backend in ("cython", "numba"):
            config.set_kernels(backend)
            theirs = k.Sequential(build(k.layers, True, k.Input(shape=(None,), batch_size=3, dtype="int64")))
            theirs.set_weights(ours.get_weights())
            stream = ours.stream(batch_size=3)
            for t in range(7):
                np.testing.assert_allclose(stream.step(tokens[:, t]), np.asarray(theirs(tokens[:, t:t + 1])),
                                           atol=1e-5, err_msg=f"{backend} step {t}")
            one = ours.stream(batch_size=1)
            np.testing.assert_allclose(one.step(5), ours.predict(np.array([[5]]))[0], atol=1e-6)  # a bare id
            with pytest.raises(ValueError, match="indices must be in"):
                one.step(20)
    finally:
        config.set_kernels(previous)
