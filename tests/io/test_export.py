"""Back to Keras: ``model.save("x.keras")`` and ``model.save_weights("x.weights.h5")``
load in real Keras 3 and predict the same; the archive also loads back into rnnengine;
a compiled model's optimizer state lets Keras continue training exactly."""
import json
import zipfile

import h5py
import numpy as np
import pytest

import rnnengine
from rnnengine import layers as L
from rnnengine.models import Model, Sequential
from tests.keras_oracle import keras
from tests.training.helpers import check_weights

T = 6


def _sequential():
    return Sequential([L.Input((T, 4)), L.GRU(6, return_sequences=True, reset_after=False),
                       L.LSTM(5, go_backwards=True, dropout=0.1), L.Dropout(0.2), L.Dense(3, activation="softmax")])


def _sequential_keras2_style():
    return Sequential([L.SimpleRNN(7, activation="relu", input_shape=(T, 4)), L.RepeatVector(3),
                       L.SimpleRNN(4, return_sequences=True), L.Flatten(), L.Dense(2), L.Activation("swish")])


def _functional():
    tokens = L.Input((T,), dtype="int32", name="tokens")
    e = L.Embedding(12, 5, mask_zero=True)(tokens)
    b = L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum")(e)
    g, h = L.GRU(3, return_sequences=True, return_state=True)(b)
    side = L.Input((3,), name="side")
    dec = L.SimpleRNN(3, return_sequences=True)(L.Masking()(L.TimeDistributed(L.Dense(4))(g)),
                                                initial_state=[L.Add()([h, side])])
    merged = L.Concatenate()([L.Maximum()([h, side]), L.Average()([h, side])])
    return Model([tokens, side], [dec, L.Dense(2, activation="sigmoid")(merged)])


def _inputs(rng, model):
    if isinstance(model, Sequential):
        return rng.standard_normal((5, T, 4)).astype(np.float32)
    tokens = rng.integers(1, 12, (5, T))
    tokens[1, 3:] = 0
    tokens[2, :2] = 0
    return [tokens, rng.standard_normal((5, 3)).astype(np.float32)]


def _randomize(rng, model):
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.4 for w in model.get_weights()])


def _predict_keras(km, x):
    out = km.predict(x, verbose=0)
    return out if isinstance(out, list) else [out]


def _as_list(out):
    return out if isinstance(out, list) else [out]


@pytest.mark.parametrize("make", [_sequential, _sequential_keras2_style, _functional],
                         ids=["sequential", "sequential-keras2-style", "functional"])
def test_saved_model_loads_in_keras_and_predicts_the_same(rng, tmp_path, make):
    model = make()
    _randomize(rng, model)
    x = _inputs(rng, model)
    path = str(tmp_path / "model.keras")
    model.save(path)
    km = keras().saving.load_model(path)
    for got, want in zip(_predict_keras(km, x), _as_list(model.predict(x))):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert [l.name for l in km.layers if type(l).__name__ != "InputLayer"] == \
        [l.name for l in model.layers if type(l).__name__ != "InputLayer"]
    back = rnnengine.load_keras(path)
    for got, want in zip(_as_list(back.predict(x)), _as_list(model.predict(x))):
        np.testing.assert_array_equal(got, want)
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
        assert json.loads(zf.read("metadata.json"))["keras_version"].startswith("3.")


@pytest.mark.parametrize("make", [_sequential, _functional], ids=["sequential", "functional"])
def test_saved_weights_load_into_the_same_keras_model(rng, tmp_path, make):
    model = make()
    _randomize(rng, model)
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    model.save(str(tmp_path / "model.keras"))
    km = keras().saving.load_model(str(tmp_path / "model.keras"))
    km.set_weights([np.zeros_like(w) for w in km.get_weights()])
    km.load_weights(path)
    check_weights("weights.h5", km.get_weights(), model.get_weights(), atol=0, rtol=0)
    fresh = make()
    fresh.load_weights(path)
    check_weights("weights.h5 into rnnengine", fresh.get_weights(), model.get_weights(), atol=0, rtol=0)
    with h5py.File(path) as f:
        assert f["vars"].attrs["name"] == model.name


def test_trained_model_continues_training_in_keras(rng, tmp_path):
    """compile_config + optimizer state: Keras's next Adam step equals rnnengine's."""
    x = rng.standard_normal((20, T, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 20)]
    model = Sequential([L.Input((T, 4)), L.SimpleRNN(8), L.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = str(tmp_path / "trained.keras")
    model.save(path)
    km = keras().saving.load_model(path)
    assert int(km.optimizer.iterations.numpy()) == model.optimizer.iterations == 6
    np.testing.assert_allclose(km.predict(x, verbose=0), model.predict(x), atol=1e-5)
    k_logs = km.train_on_batch(x, y)
    r_logs = model.train_on_batch(x, y)
    np.testing.assert_allclose(r_logs, k_logs, rtol=1e-5)
    check_weights("one more Adam step", model.get_weights(), km.get_weights())


def test_save_checks_the_extension(tmp_path):
    model = _sequential()
    with pytest.raises(ValueError, match=".keras"):
        model.save(str(tmp_path / "model.h5"))
    with pytest.raises(ValueError, match=".weights.h5"):
        model.save_weights(str(tmp_path / "model.h5"))
