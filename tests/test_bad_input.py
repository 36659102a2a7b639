"""Bad input gets a clear exception, never a crash or a silent wrong answer."""
import warnings

import numpy as np
import pytest

from rnnengine import layers
from rnnengine.models import Model, Sequential


def _model(dtype="float32"):
    return Sequential([layers.Input(shape=(5, 3)), layers.LSTM(4, dtype=dtype), layers.Dense(2, dtype=dtype)])


def test_wrong_rank_names_layer_and_shape():
    with pytest.raises(ValueError, match=r'layer "lstm.*expected ndim=3, found ndim=2'):
        _model().predict(np.ones((2, 3), np.float32))


def test_wrong_feature_size_names_layer_expected_and_received():
    with pytest.raises(ValueError, match=r"expected axis -1 of input shape to have value 3, but received input with shape \(2, 5, 7\)"):
        _model().predict(np.ones((2, 5, 7), np.float32))


def test_wrong_fixed_timesteps():
    with pytest.raises(ValueError, match="axis -2"):
        _model().predict(np.ones((2, 6, 3), np.float32))


@pytest.mark.parametrize("bad", [np.ones((2, 5, 3), complex), np.array([[["a"] * 3] * 5] * 2),
                                 np.empty((2, 5, 3), object)])
def test_unsupported_dtypes_raise_type_error(bad):
    with pytest.raises(TypeError, match="dtype"):
        _model().predict(bad)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.float16, np.float64, np.uint8])
def test_castable_dtypes_equal_float32_result(rng, dtype):
    model = _model()
    x = rng.integers(0, 2, (2, 5, 3)).astype(dtype)
    np.testing.assert_array_equal(model.predict(x), model.predict(x.astype(np.float32)))


def test_float64_model_keeps_float64():
    model = _model("float64")
    y = model.predict(np.ones((2, 5, 3), np.float32))
    assert y.dtype == np.float64


def test_fortran_and_strided_inputs_just_work(rng):
    model = _model()
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    want = model.predict(x)
    np.testing.assert_array_equal(model.predict(np.asfortranarray(x)), want)
    big = np.zeros((8, 5, 6), np.float32)
    big[::2, :, ::2] = x
    strided = big[::2, :, ::2]
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(model.predict(strided), want)
    np.testing.assert_array_equal(model.predict(x.tolist()), want)


def test_empty_batch_and_empty_sequence():
    with pytest.raises(ValueError, match="empty batch"):
        _model().predict(np.ones((0, 5, 3), np.float32))
    model = Sequential([layers.Input(shape=(None, 3)), layers.GRU(2)])
    with pytest.raises(ValueError, match="zero-length"):
        model.predict(np.ones((2, 0, 3), np.float32))


def test_nan_input_propagates_without_crash(backend):
    model = _model()
    x = np.ones((3, 5, 3), np.float32)
    x[1, 2, 1] = np.nan
    y = model.predict(x)
    assert np.isfinite(y[[0, 2]]).all() and np.isnan(y[1]).all()


# -- float64 beyond float32's range: +-inf, as Keras's cast makes it, and no warning -------------------------
# README's input contract: float64 is cast to a float32 model, and NaN/inf
# propagate. NumPy warns "overflow encountered in cast" on such a cast, which
# -W error (or a service's warnings filter) turns into an exception: every cast
# site must keep it in. Each case runs with warnings as errors and must equal
# the same call on the float32 array Keras would see (1e300 -> inf).

HUGE = 1e300


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


def _as_keras_sees(a):
    with np.errstate(over="ignore"):
        return np.asarray(a, np.float64).astype(np.float32)


def test_float64_input_beyond_float32_becomes_inf_without_a_warning(backend):
    model = _model()
    x = np.ones((3, 5, 3))
    x[1, 2, 1], x[2, 0, 0] = HUGE, -HUGE
    y = _quiet(lambda: model.predict(x))
    np.testing.assert_array_equal(y, model.predict(_as_keras_sees(x)))
    assert np.isfinite(y[0]).all()  # the other rows are untouched
    stream = model.stream(batch_size=3)
    _quiet(lambda: stream.step(x[:, 1]))  # the stream's cast site: no warning


def test_float64_weights_and_states_beyond_float32_become_inf_without_a_warning():
    model = _model()
    weights = model.get_weights()
    weights[0] = weights[0].astype(np.float64)
    weights[0][0, 0] = HUGE
    _quiet(lambda: model.set_weights(weights))
    assert model.get_weights()[0][0, 0] == np.inf
    stream = model.stream(batch_size=2)
    _quiet(lambda: stream.set_state([[np.full((2, 4), HUGE), np.full((2, 4), -HUGE)]]))
    h, c = stream.get_state()[0]
    assert (h == np.inf).all() and (c == -np.inf).all()
    gru = layers.GRU(4)
    x = np.ones((2, 5, 3), np.float32)
    state = np.full((2, 4), HUGE)
    y = _quiet(lambda: gru(x, initial_state=[state]))
    np.testing.assert_array_equal(y, gru(x, initial_state=[_as_keras_sees(state)]))


def test_float64_layer_feeding_a_float32_layer_casts_to_inf_without_a_warning(backend):
    """A mixed-dtype graph: a float64 Dense whose outputs exceed float32's range
    feeds a float32 LSTM, which casts them into its x_cast buffer."""
    x = layers.Input(shape=(5, 3), dtype="float64")
    big = layers.Dense(3, dtype="float64", kernel_initializer="ones")(x)
    model = Model(x, layers.LSTM(4)(big))
    inputs = np.full((2, 5, 3), 1e299)
    inputs[0] = 0.5
    y = _quiet(lambda: model.predict(inputs))
    lstm = model.layers[-1]
    want = lstm(_as_keras_sees(np.full((2, 5, 3), 3e299)))  # 3 features x 1e299 x ones
    np.testing.assert_array_equal(y[1], want[1])
    assert np.isfinite(y[0]).all()


def test_merge_arithmetic_on_inf_and_overflow_does_not_warn(backend):
    x = layers.Input(shape=(5, 3))
    a = layers.SimpleRNN(3, activation="linear", kernel_initializer="ones", recurrent_initializer="zeros")(x)
    b = layers.Bidirectional(layers.SimpleRNN(3, activation="linear", kernel_initializer="ones",
                                              recurrent_initializer="zeros"), merge_mode="sum")(x)
    model = Model(x, [layers.Add()([a, b]), layers.Subtract()([a, a]), layers.Multiply()([a, a])])
    inputs = np.full((2, 5, 3), 1e38, np.float32)  # a and b hold 3e38: their sum and square overflow
    inputs[1, :, 0] = np.inf  # row 1: inf, then NaN (inf * a zero recurrent kernel), everywhere
    added, subtracted, multiplied = _quiet(lambda: model.predict(inputs))
    assert (added[0] == np.inf).all() and (multiplied[0] == np.inf).all() and (subtracted[0] == 0).all()
    assert np.isnan(added[1]).all() and np.isnan(subtracted[1]).all() and np.isnan(multiplied[1]).all()


def test_embedding_refuses_nan_float_indices_by_name():
    model = Sequential([layers.Input(shape=(4,)), layers.Embedding(10, 3)])
    x = np.ones((2, 4))
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match=r'Embedding "embedding.*indices must be in \[0, 10\)'):
        _quiet(lambda: model.predict(x))


def test_set_weights_wrong_count_and_shape_name_the_layer():
    model = _model()
    with pytest.raises(ValueError, match="expecting 5 weights"):
        model.set_weights(model.get_weights()[:-1])
    weights = model.get_weights()
    weights[1] = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match=r'Layer "lstm.*"recurrent_kernel": expected shape \(4, 16\), received \(4, 8\)'):
        model.set_weights(weights)
    layer = layers.GRU(3)
    with pytest.raises(ValueError, match="not built"):
        layer.set_weights([])


def test_failed_set_weights_keeps_the_old_weights():
    model = _model()
    before = model.get_weights()
    bad = [w + 1 for w in before]
    bad[-1] = np.ones(7, np.float32)
    with pytest.raises(ValueError):
        model.set_weights(bad)
    assert all(np.array_equal(a, b) for a, b in zip(model.layers[1].get_weights(), before[3:]))


@pytest.mark.parametrize("make,match", [
    (lambda: layers.LSTM(0), "units"),
    (lambda: layers.GRU(-3), "units"),
    (lambda: layers.SimpleRNN(2.5), "units"),
    (lambda: layers.LSTM(4, activation="nope"), "activation function identifier"),
    (lambda: layers.LSTM(4, activation="softmax"), "not supported inside a recurrent cell"),
    (lambda: layers.LSTM(4, dropout=1.5), "dropout"),
    (lambda: layers.Dense(4, kernel_initializer="what"), "initializer"),
    (lambda: layers.Dropout(-0.1), "rate"),
    (lambda: layers.Dense(3, dtype="float16"), "float16"),
])
def test_bad_hyper_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_unknown_keyword_argument_is_named():
    with pytest.raises(TypeError, match="unknown_option"):
        layers.LSTM(4, unknown_option=1)


def test_model_without_input_shape_and_bad_layers():
    with pytest.raises(ValueError, match="no input shape"):
        Sequential([layers.LSTM(3)]).build()
    with pytest.raises(TypeError, match="Only instances"):
        Sequential([object()])
    with pytest.raises(ValueError, match="return_state"):
        Sequential([layers.LSTM(3, return_state=True)])


def test_out_buffer_is_checked():
    model = _model()
    x = np.ones((2, 5, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        model.predict(x, out=np.empty((3, 2), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        model.predict(x, out=np.empty((2, 2), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        model.predict(x, out=np.empty((2, 2), np.float32, order="F"))


def test_unknown_backend_env_and_setter():
    import rnnengine

    with pytest.raises(ValueError, match="Unknown kernel backend"):
        rnnengine.config.set_kernels("gpu")
