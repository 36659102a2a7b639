"""Whole Sequential models, rebuilt from Keras's own arguments, against Keras."""
import numpy as np
import pytest

from rnnengine import layers
from rnnengine.models import Sequential
from tests.conftest import assert_close
from tests.keras_oracle import keras

# (layer class, kwargs) stacks; the first gets input_shape from the test.
STACKS = {
    "document_example": [("SimpleRNN", dict(units=50, activation="tanh")),
                         ("Dense", dict(units=10, activation="softmax"))],
    "stacked_lstm_gru": [("LSTM", dict(units=8, return_sequences=True)),
                         ("Dropout", dict(rate=0.3)),
                         ("GRU", dict(units=6, reset_after=False, go_backwards=True)),
                         ("Dense", dict(units=3, activation="sigmoid"))],
    "many_to_many_dense_per_step": [("GRU", dict(units=7, return_sequences=True)),
                                    ("Dense", dict(units=4, activation="relu")),
                                    ("SimpleRNN", dict(units=5, return_sequences=True, activation="elu")),
                                    ("Dense", dict(units=2, activation="softmax"))],
    "deep_lstm": [("LSTM", dict(units=16, return_sequences=True, recurrent_activation="hard_sigmoid")),
                  ("LSTM", dict(units=12, return_sequences=True, go_backwards=True)),
                  ("LSTM", dict(units=10, use_bias=False)),
                  ("Dense", dict(units=5, activation="gelu")),
                  ("Dense", dict(units=1))],
}


def _keras_model(stack, input_shape, dtype, rng):
    k = keras()
    model = k.Sequential([k.Input(shape=input_shape, dtype=dtype)] +
                         [getattr(k.layers, cls)(dtype=dtype, **kw) for cls, kw in stack])
    weights = [rng.uniform(-0.5, 0.5, w.shape).astype(dtype) for w in model.get_weights()]
    model.set_weights(weights)
    return model, weights


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(STACKS))
def test_sequential_matches_keras(backend, rng, name, dtype):
    stack, input_shape = STACKS[name], (9, 8)
    kmodel, weights = _keras_model(stack, input_shape, dtype, rng)
    x = rng.standard_normal((37,) + input_shape).astype(dtype)  # 37: a partial last batch of 32
    # model(x), not predict: Keras's predict feeds float64 data through float32
    # (its data adapter casts to floatx), which costs 1e-7; the call is exact.
    want = np.asarray(kmodel(x))

    first_cls, first_kw = stack[0]
    model = Sequential([getattr(layers, first_cls)(input_shape=input_shape, dtype=dtype, **first_kw)] +
                       [getattr(layers, cls)(dtype=dtype, **kw) for cls, kw in stack[1:]])
    assert [w.shape for w in model.get_weights()] == [w.shape for w in weights]
    model.set_weights(weights)
    got = model.predict(x)
    assert got.shape == want.shape and got.dtype == np.dtype(dtype)
    assert_close(got, want, dtype, name)
    assert_close(model.predict(x, batch_size=5), want, dtype, name + " batch_size=5")
    assert_close(model.predict_on_batch(x), want, dtype, name + " predict_on_batch")
    for g, w in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(g, w)


def test_trained_keras_weights(backend, rng):
    """Weights that Keras itself trained (a few Adam steps on a real signal), not just random."""
    k = keras()
    t = np.linspace(0, 6, 24)
    x = np.stack([np.sin(t * f)[:, None] * np.ones((1, 3)) for f in rng.uniform(0.5, 2.0, 64)]).astype("float32")
    y = (x[:, -1, :1] > 0).astype("float32")
    kmodel = k.Sequential([k.Input(shape=(24, 3)), k.layers.LSTM(12, return_sequences=True),
                           k.layers.GRU(8), k.layers.Dense(1, activation="sigmoid")])
    kmodel.compile(optimizer="adam", loss="binary_crossentropy")
    kmodel.fit(x, y, epochs=3, batch_size=16, verbose=0)
    model = Sequential([layers.Input(shape=(24, 3)), layers.LSTM(12, return_sequences=True),
                        layers.GRU(8), layers.Dense(1, activation="sigmoid")])
    model.set_weights(kmodel.get_weights())
    assert_close(model.predict(x), kmodel.predict(x, verbose=0), np.float32, "trained")


def test_input_shape_styles_and_summary(capsys):
    a = Sequential([layers.SimpleRNN(50, input_shape=(28, 28)), layers.Dense(10, activation="softmax")])
    b = Sequential()
    b.add(layers.Input(shape=(28, 28)))
    b.add(layers.SimpleRNN(50))
    b.add(layers.Dense(10, activation="softmax"))
    c = Sequential([layers.SimpleRNN(50, batch_input_shape=(None, 28, 28)), layers.Dense(10)])
    for m in (a, b, c):
        assert m.input_shape == (None, 28, 28)
        assert m.output_shape == (None, 10)
        # Keras's counts: SimpleRNN 28*50 + 50*50 + 50 = 3950; Dense 50*10 + 10 = 510.
        assert m.count_params() == 3950 + 510
    a.summary()
    text = capsys.readouterr().out
    assert "SimpleRNN" in text and "3,950" in text and "Total params: 4,460" in text


def test_model_built_from_first_batch():
    model = Sequential([layers.LSTM(4), layers.Dense(2)])
    y = model.predict(np.ones((3, 5, 6), np.float32))
    assert y.shape == (3, 2)
    # The sequence axis stays free, as in Keras.
    assert model.predict(np.ones((3, 11, 6), np.float32)).shape == (3, 2)
    assert model.input_shape == (None, None, 6)


def test_stateful_sequential_carries_state_across_batches(backend, rng):
    """State persists across predict calls; reset_states() starts over; chunks of a
    sequence fed to a stateful model equal the whole sequence fed to a plain one."""
    model = Sequential([layers.Input(shape=(None, 3), batch_size=2),
                        layers.GRU(5, stateful=True, return_sequences=True)])
    x = rng.standard_normal((2, 8, 3)).astype("float32")
    first = model.predict(x)
    second = model.predict(x)
    assert not np.allclose(first, second)
    model.reset_states()
    assert_close(model.predict(x), first, np.float32)

    plain = Sequential([layers.Input(shape=(8, 3)), layers.GRU(5, return_sequences=True)])
    plain.set_weights(model.get_weights())
    model.reset_states()
    chunks = np.concatenate([model.predict(x[:, :3]), model.predict(x[:, 3:])], axis=1)
    assert_close(chunks, plain.predict(x), np.float32)
    with pytest.raises(ValueError, match="stateful with batch size 2"):
        model.predict(np.ones((3, 4, 3), np.float32))
