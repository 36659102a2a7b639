"""Bad input gets a clear exception, never a crash or a silent wrong answer."""
import numpy as np
import pytest

from rnnengine import layers
from rnnengine.models import Sequential


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
