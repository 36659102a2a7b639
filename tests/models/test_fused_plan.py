"""The fused Cython call plan (src/_plan.pyx): the repeat-call fast path of
``predict``/``predict_on_batch``/``Stream.step`` must give exactly what the
general path gives, and must notice every change that makes it stale (new
weights, another backend) or an input it was not built for."""
import numpy as np
import pytest

from rnnengine import config, kernels, layers
from rnnengine.models import Sequential

pytestmark = pytest.mark.skipif(not kernels.cython_available(), reason="needs the Cython build")


def _model(dtype="float32", final_sequences=False, steps=7):
    model = Sequential([layers.Input(shape=(steps, 5)), layers.LSTM(6, return_sequences=True, dtype=dtype),
                        layers.Dropout(0.3, dtype=dtype), layers.GRU(4, return_sequences=True, dtype=dtype),
                        layers.SimpleRNN(5, return_sequences=final_sequences, dtype=dtype),
                        layers.Dense(3, activation="softmax", dtype=dtype)])
    rng = np.random.default_rng(1)
    model.set_weights([rng.standard_normal(w.shape).astype(dtype) * 0.5 for w in model.get_weights()])
    return model


def _general(model, x):
    """The same model's output through the Numba kernels' general path."""
    previous = config.set_kernels("numba")
    try:
        return model.predict(x)
    finally:
        config.set_kernels(previous)


@pytest.fixture(autouse=True)
def _cython_backend():
    previous = config.set_kernels("cython")
    yield
    config.set_kernels(previous)


def _fast(model):
    return getattr(model._local, "fast", None)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("final_sequences", [False, True])
def test_repeat_calls_take_the_fused_plan_and_agree(rng, dtype, final_sequences):
    model = _model(dtype, final_sequences)
    x = rng.standard_normal((3, 7, 5)).astype(dtype)
    first = model.predict(x)
    assert _fast(model) is not None  # the first call left its plan for the next
    second = model.predict(x)
    out = np.empty_like(first)
    assert model.predict_on_batch(x, out=out) is out
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, out)
    tol = 2e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(first, _general(model, x), atol=tol)


def test_new_weights_reach_the_next_call(rng):
    model = _model()
    x = rng.standard_normal((2, 7, 5)).astype(np.float32)
    before = model.predict(x)
    model.predict(x)
    new = [w * 0.5 for w in model.get_weights()]
    model.set_weights(new)
    after = model.predict(x)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, _general(model, x), atol=2e-6)
    # One layer's set_weights, not the model's, is seen too.
    lstm = model.layers[0]
    lstm.set_weights([w + 0.25 for w in lstm.get_weights()])
    np.testing.assert_allclose(model.predict(x), _general(model, x), atol=2e-6)
    assert not np.allclose(model.predict(x), after)


def test_a_plan_for_one_model_survives_other_models_weight_changes(rng):
    model, other = _model(), _model()
    x = rng.standard_normal((2, 7, 5)).astype(np.float32)
    want = model.predict(x)
    other.set_weights([w * 2 for w in other.get_weights()])  # moves the global epoch
    np.testing.assert_array_equal(model.predict(x), want)
    assert _fast(model).current  # re-checked against its own weights, and kept


def test_switching_backend_leaves_the_fused_plan(rng, monkeypatch):
    model = _model()
    x = rng.standard_normal((2, 7, 5)).astype(np.float32)
    model.predict(x)
    model.predict(x)
    config.set_kernels("numba")
    assert not _fast(model).current
    calls = []
    from rnnengine.kernels import numba_lstm

    real = numba_lstm._lstm_forward
    monkeypatch.setattr(kernels, "_NUMBA", None)
    monkeypatch.setattr(numba_lstm, "_lstm_forward", lambda *a: (calls.append(1), real(*a))[1])
    model.predict(x)
    assert calls, "after set_kernels('numba') the call must run the Numba kernels"


@pytest.mark.parametrize("bad", ["float64", "fortran", "strided", "shape", "list"])
def test_inputs_the_plan_was_not_built_for_take_the_general_path(rng, bad):
    model = _model()
    x = rng.standard_normal((2, 7, 5)).astype(np.float32)
    want = model.predict(x)
    model.predict(x)
    if bad == "float64":
        other, expect = x.astype(np.float64), want
    elif bad == "fortran":
        other, expect = np.asfortranarray(x), want
    elif bad == "strided":
        big = np.zeros((4, 7, 5), np.float32)
        big[::2] = x
        other, expect = big[::2], want
    elif bad == "shape":
        other = rng.standard_normal((3, 7, 5)).astype(np.float32)
        expect = _general(model, other)
    else:
        other, expect = x.tolist(), want
    np.testing.assert_allclose(model.predict(other), expect, atol=2e-6)
    with pytest.raises(ValueError):
        model.predict(x.reshape(2, 5, 7))  # same size, wrong shape: the checked path's error


def test_out_and_batch_size_the_plan_does_not_cover(rng):
    model = _model()
    x = rng.standard_normal((4, 7, 5)).astype(np.float32)
    want = model.predict(x)
    model.predict(x)
    with pytest.raises(ValueError, match="out"):
        model.predict(x, out=np.empty((4, 2), np.float32))
    with pytest.raises(ValueError, match="out"):
        model.predict(x, out=np.empty((4, 3), np.float64))
    np.testing.assert_allclose(model.predict(x, batch_size=3), want, atol=1e-6)  # split in two calls
    read_only = np.empty((4, 3), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError):
        model.predict(x, out=read_only)


def test_large_batch_splits_over_threads_and_agrees(split_small_calls, rng):
    model = _model()
    x = rng.standard_normal((64, 7, 5)).astype(np.float32)
    previous = config.set_num_threads(2)
    try:
        split = model.predict(x, batch_size=64)
        split = model.predict(x, batch_size=64)
    finally:
        config.set_num_threads(previous)
    one = model.predict(x, batch_size=64)
    np.testing.assert_array_equal(split, one)


def test_stream_fast_steps_track_state_and_weights(rng):
    model = _model(final_sequences=True, steps=None)
    x = rng.standard_normal((2, 7, 5)).astype(np.float32)
    stream = model.stream(batch_size=2)
    got = np.stack([stream.step(x[:, t]) for t in range(7)], axis=1)
    assert stream._cy is not None
    np.testing.assert_allclose(got, _general(model, x), atol=2e-6)
    snapshot = stream.get_state()
    a = stream.step(x[:, 0])
    stream.set_state(snapshot)
    np.testing.assert_array_equal(stream.step(x[:, 0]), a)
    stream.reset()
    np.testing.assert_allclose(stream.step(x[:, 0]), _general(model, x[:, :1])[:, 0], atol=2e-6)
    model.set_weights([w * 0.5 for w in model.get_weights()])
    stream.reset()
    np.testing.assert_allclose(stream.step(x[:, 0]), _general(model, x[:, :1])[:, 0], atol=2e-6)
    out = np.empty((2, 3), np.float32)
    assert stream.step(x[:, 1], out=out) is out
    one = model.stream(batch_size=1)
    one.step(x[0, 0])
    assert one.step(x[0, 1]).shape == (3,)
    assert one.step(x[0, 1].astype(np.float64)).shape == (3,)  # cast on the general path


def test_cyplan_rejects_what_it_cannot_run():
    from rnnengine.kernels import _cy_plan

    with pytest.raises(ValueError, match="dtype"):
        _cy_plan.CyPlan([{}], (1, 2), (1, 2), np.int32)
    with pytest.raises(ValueError, match="at least one step"):
        _cy_plan.CyPlan([], (1, 2), (1, 2), np.float32)
    kernels_ = kernels._cy_dense._pointer_kernels()
    spec = dict(kind="dense", kernels=kernels_, y=np.zeros((2, 3), np.float32), kernel=np.zeros((4, 3), np.float32),
                bias=np.zeros(3, np.float32), C=4, F=3, R=1, activation=0, use_bias=1)
    plan = _cy_plan.CyPlan([spec], (2, 4), (2, 3), np.float32)
    assert plan.predict(np.ones((2, 4), np.float32)).shape == (2, 3)
    with pytest.raises(ValueError, match="buffer"):
        _cy_plan.CyPlan([dict(spec, y=np.zeros((3, 3), np.float32))], (2, 4), (2, 3), np.float32)
    with pytest.raises(ValueError, match="weight"):
        _cy_plan.CyPlan([dict(spec, kernel=np.zeros((4, 3), np.float64))], (2, 4), (2, 3), np.float32)
    with pytest.raises(ValueError, match="out_shape"):
        _cy_plan.CyPlan([spec], (2, 4), (2, 4), np.float32)
