"""Reproducible numbers (issue 13): the same call gives the same bits every
time, and deterministic mode (``rnnengine.set_deterministic``) makes a row's
bits independent of the batch it arrives in, the thread count and whether a
batch-1 call splits its units over two threads.

Bit-identity is asserted only within one ISA build (``rnnengine.info()["isa"]``):
.ci/run runs this file again with the AVX2 build forced."""
import numpy as np
import pytest

import rnnengine
from rnnengine import kernels, layers
from rnnengine.models import Model, Sequential

pytestmark = pytest.mark.skipif(not kernels.cython_available(),
                                reason="needs the Cython kernels")  # .ci/run builds them

BATCHES = (1, 2, 3, 5, 32, 61, 256)


def _randomize(model, rng):
    model.set_weights([rng.uniform(-0.4, 0.4, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


def _models(dtype="float32"):
    C = 12
    return {
        "lstm": Sequential([layers.Input(shape=(None, C)), layers.LSTM(40, dtype=dtype),
                            layers.Dense(5, activation="softmax", dtype=dtype)]),
        "gru": Sequential([layers.Input(shape=(None, C)), layers.GRU(36, return_sequences=True, dtype=dtype),
                           layers.GRU(20, reset_after=False, dtype=dtype), layers.Dense(3, dtype=dtype)]),
        "simple_rnn": Sequential([layers.Input(shape=(None, C)),
                                  layers.SimpleRNN(48, return_sequences=True, dtype=dtype),
                                  layers.Dense(4, activation="tanh", dtype=dtype)]),
    }


@pytest.fixture
def threads():
    """Restore the thread count and let small calls split over threads."""
    previous = rnnengine.config.get_num_threads()
    min_work = kernels._set_min_work_to_split(0)
    yield
    rnnengine.config.set_num_threads(previous)
    if min_work is not None:
        kernels._set_min_work_to_split(min_work)


@pytest.mark.parametrize("which", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_deterministic_row_bits_independent_of_batch_and_threads(which, dtype, rng, threads):
    model = _randomize(_models(dtype)[which], rng)
    T = 7
    x = rng.standard_normal((max(BATCHES), T, 12)).astype(dtype)
    with rnnengine.deterministic():
        assert rnnengine.get_deterministic() and rnnengine.info()["deterministic"]
        rows = {}
        for n_threads in (1, 2):
            rnnengine.config.set_num_threads(n_threads)
            for B in BATCHES:
                # row 0 is the same row in every batch; the others differ per batch
                xb = np.concatenate([x[:1], rng.standard_normal((B - 1, T, 12)).astype(dtype)])
                rows[(n_threads, B, "predict_on_batch")] = model.predict_on_batch(xb)[0]
                rows[(n_threads, B, "predict")] = model.predict(xb, batch_size=B)[0]
    assert not rnnengine.get_deterministic()
    reference = rows[(1, 1, "predict_on_batch")]
    for key, row in rows.items():
        assert row.tobytes() == reference.tobytes(), key
    default = model.predict_on_batch(x)[0]  # default mode agrees to rounding
    np.testing.assert_allclose(default, reference, rtol=1e-5, atol=1e-5 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("which", ["lstm", "gru"])
def test_deterministic_stream_rows_independent_of_session_count(which, rng, threads):
    model = _randomize(_models()[which], rng)
    frames = rng.standard_normal((6, 64, 12)).astype(np.float32)
    with rnnengine.deterministic():
        outs = {}
        for sessions in (1, 3, 64):
            stream = model.stream(batch_size=sessions)
            outs[sessions] = [stream.step(f[:sessions])[0].copy() for f in frames]
        whole = model.predict_on_batch(np.ascontiguousarray(frames[:, :1].transpose(1, 0, 2)))[0]
    for sessions, seq in outs.items():
        for a, b in zip(seq, outs[1]):
            assert a.tobytes() == b.tobytes(), sessions
    assert outs[1][-1].tobytes() == whole.tobytes()


def test_deterministic_functional_model(rng, threads):
    x_in = layers.Input(shape=(None, 12))
    seq = layers.Bidirectional(layers.LSTM(16, return_sequences=True))(x_in)
    out = layers.Dense(3)(layers.GRU(8)(seq))
    model = _randomize(Model(x_in, out), rng)
    x = rng.standard_normal((61, 5, 12)).astype(np.float32)
    with rnnengine.deterministic():
        first = model.predict_on_batch(x[:1])[0]
        for B in (2, 5, 61):
            assert model.predict_on_batch(x[:B])[0].tobytes() == first.tobytes(), B


def test_deterministic_training_independent_of_threads(rng, threads):
    x = rng.standard_normal((48, 6, 12)).astype(np.float32)
    y = rng.standard_normal((48, 5)).astype(np.float32)
    weights = []
    for n_threads in (1, 2):
        rnnengine.config.set_num_threads(n_threads)
        rnnengine.training.set_random_seed(3)
        model = _models()["lstm"]
        model.set_weights([np.random.default_rng(5).uniform(-0.4, 0.4, w.shape).astype(w.dtype)
                           for w in model.get_weights()])
        model.compile(optimizer="adam", loss="mse")
        with rnnengine.deterministic():
            for _ in range(3):
                model.train_on_batch(x, y)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        assert a.tobytes() == b.tobytes()


def test_deterministic_context_restores_and_nests():
    assert not rnnengine.get_deterministic()
    with rnnengine.deterministic():
        with rnnengine.deterministic(False):
            assert not rnnengine.get_deterministic()
        assert rnnengine.get_deterministic()
    assert not rnnengine.get_deterministic()
    assert rnnengine.set_deterministic(True) is False
    assert rnnengine.set_deterministic(False) is True
    with pytest.raises(TypeError):
        rnnengine.set_deterministic("yes")


@pytest.mark.parametrize("units,cell", [(128, layers.LSTM), (128, layers.GRU), (200, layers.SimpleRNN)])
def test_batch1_predicts_of_split_eligible_models_give_one_bit_pattern(units, cell, rng):
    """Whether a batch-1 call splits over two threads is decided by timing
    (src/_step_pool.h); it must never change the bits (default mode)."""
    model = _randomize(Sequential([layers.Input(shape=(20, 32)), cell(units), layers.Dense(10)]), rng)
    x = rng.standard_normal((1, 20, 32)).astype(np.float32)
    patterns = {model.predict_on_batch(x).tobytes() for _ in range(300)}
    patterns |= {model.predict(x).tobytes() for _ in range(20)}
    assert len(patterns) == 1


def test_deterministic_mode_refuses_the_numba_backend():
    previous = rnnengine.config.set_kernels("numba")
    try:
        with pytest.raises(RuntimeError, match="only the Cython kernels are batch-invariant"):
            rnnengine.set_deterministic(True)
        assert not rnnengine.get_deterministic()
        rnnengine.config.set_kernels("auto")
        with rnnengine.deterministic():
            with pytest.raises(RuntimeError, match="deterministic mode is on"):
                rnnengine.config.set_kernels("numba")
            assert rnnengine.config.get_kernels() == "auto"
    finally:
        rnnengine.config.set_kernels(previous)


@pytest.mark.parametrize("units,cell", [(128, layers.LSTM), (128, layers.GRU), (200, layers.SimpleRNN)])
def test_deterministic_split_eligible_row_equals_its_row_in_a_larger_batch(units, cell, rng):
    """Batch 1 may split its units over two threads; 5 rows never do: in
    deterministic mode the row's bits are the same either way."""
    model = _randomize(Sequential([layers.Input(shape=(20, 32)), cell(units), layers.Dense(10)]), rng)
    x = rng.standard_normal((5, 20, 32)).astype(np.float32)
    with rnnengine.deterministic():
        alone = {model.predict_on_batch(x[:1])[0].tobytes() for _ in range(50)}
        in_batch = model.predict_on_batch(x)[0].tobytes()
    assert alone == {in_batch}
