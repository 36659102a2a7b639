"""Regularizers and constraints through files, both ways.

- ``model.save("x.keras")`` writes them in Keras 3's serialized form: real Keras
  loads the archive with the same regularizers and constraints (configs equal,
  and its ``evaluate`` loss, penalties included, equals rnnengine's);
- ``rnnengine.load_keras`` maps Keras's into ``rnnengine.regularizers`` /
  ``rnnengine.constraints`` objects, so the loaded model trains as Keras does;
  a class rnnengine does not implement (``OrthogonalRegularizer``) loads, runs
  and saves back unchanged, and only training refuses it.
"""
import numpy as np
import pytest

import rnnengine
from rnnengine import constraints as RC
from rnnengine import layers as L
from rnnengine import regularizers as RR
from rnnengine.models import Model, Sequential
from tests.keras_oracle import keras
from tests.training.helpers import check_weights

T, C = 5, 3
_KEYS = ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer",
         "embeddings_regularizer", "kernel_constraint", "recurrent_constraint", "bias_constraint",
         "embeddings_constraint")


def _options(config):
    out = {}
    for key in _KEYS:
        value = config.get(key)
        if value is not None:
            out[key] = (value["class_name"], value["config"])
    return out


def _keras_layers(model):
    out = []
    for layer in model.layers:
        out.append(layer)
        for inner in ("forward_layer", "backward_layer", "layer"):
            if hasattr(layer, inner) and not isinstance(getattr(layer, inner), (str, type(None))):
                out.append(getattr(layer, inner))
    return out


def _rnnengine_model():
    tokens = L.Input((T,), dtype="int32")
    e = L.Embedding(9, C, embeddings_regularizer="l2", embeddings_constraint=RC.UnitNorm(axis=1))(tokens)
    b = L.Bidirectional(L.GRU(4, return_sequences=True, kernel_regularizer=RR.L1L2(0.01, 0.02),
                              recurrent_constraint=RC.MaxNorm(1.5, axis=1)))(e)
    h = L.LSTM(3, recurrent_regularizer=RR.L2(0.03), bias_constraint="non_neg", activity_regularizer="l1")(b)
    out = L.Dense(2, kernel_regularizer=RR.L1(0.02), bias_constraint=RC.MinMaxNorm(0.1, 0.5, rate=0.5),
                  activity_regularizer=RR.L2(0.05))(h)
    return Model(tokens, out)


def test_saved_archive_loads_in_keras_with_the_same_options(tmp_path, rng):
    rm = _rnnengine_model()
    rm.compile(optimizer=rnnengine.optimizers.SGD(0.1), loss="mse")
    x = rng.integers(0, 9, (6, T))
    y = rng.standard_normal((6, 2)).astype(np.float32)
    rm.train_on_batch(x, y)
    rm.save(tmp_path / "m.keras")
    km = keras().saving.load_model(tmp_path / "m.keras")
    by_name = {l.name: l for l in _keras_layers(km)}
    found = 0
    for layer in rm.layers + [rm.layers[2].forward_layer, rm.layers[2].backward_layer]:
        want = _options(layer.get_config())
        got = _options(by_name[layer.name].get_config())
        assert got == want, layer.name
        found += len(want)
    assert found >= 12
    # the penalties are in Keras's loss as in rnnengine's
    assert rm.evaluate(x, y, verbose=0) == pytest.approx(km.evaluate(x, y, verbose=0), rel=1e-5)
    # and the archive loads back into rnnengine with them
    back = rnnengine.load_keras(tmp_path / "m.keras")
    assert back.layers[3].recurrent_regularizer == RR.L2(0.03)
    assert back.layers[2].forward_layer.recurrent_constraint == RC.MaxNorm(1.5, axis=1)


def test_function_regularizer_cannot_be_saved(tmp_path):
    model = Sequential([L.Input((T, C)), L.LSTM(2, kernel_regularizer=lambda w: 0.0)])
    with pytest.raises(rnnengine.UnsupportedKerasFeature, match="kernel_regularizer"):
        model.save(tmp_path / "m.keras")


def _keras_model(k, extra_dense=None):
    return k.Sequential([
        k.Input((T, C)),
        k.layers.LSTM(4, return_sequences=True, kernel_regularizer=k.regularizers.L1(0.02),
                      recurrent_regularizer="l2", bias_constraint=k.constraints.NonNeg(),
                      activity_regularizer=k.regularizers.L2(0.03)),
        k.layers.GRU(3, reset_after=False, bias_regularizer=k.regularizers.L1L2(0.01, 0.05),
                     kernel_constraint=k.constraints.MaxNorm(0.6)),
        extra_dense or k.layers.Dense(2, kernel_regularizer="l1", bias_constraint=k.constraints.UnitNorm()),
    ])


def test_keras_file_with_options_trains_in_rnnengine_as_in_keras(tmp_path, rng):
    k = keras()
    km = _keras_model(k)
    km.save(tmp_path / "k.keras")
    rm = rnnengine.load_keras(tmp_path / "k.keras")
    assert rm.layers[0].kernel_regularizer == RR.L1(0.02)
    assert rm.layers[1].kernel_constraint == RC.MaxNorm(0.6)
    x = rng.standard_normal((6, T, C)).astype(np.float32)
    y = rng.standard_normal((6, 2)).astype(np.float32)
    km.compile(optimizer=k.optimizers.SGD(1.0), loss="mse")
    rm.compile(optimizer=rnnengine.optimizers.SGD(1.0), loss="mse")
    assert rm.train_on_batch(x, y) == pytest.approx(km.train_on_batch(x, y), rel=1e-5)
    check_weights("loaded model, one step", rm.get_weights(), km.get_weights())


def test_unimplemented_keras_regularizer_loads_runs_and_saves_back(tmp_path, rng):
    k = keras()
    ortho = k.regularizers.OrthogonalRegularizer(factor=0.02, mode="columns")
    km = _keras_model(k, k.layers.Dense(2, kernel_regularizer=ortho))
    km.save(tmp_path / "k.keras")
    rm = rnnengine.load_keras(tmp_path / "k.keras")
    x = rng.standard_normal((4, T, C)).astype(np.float32)
    np.testing.assert_allclose(rm.predict(x, verbose=0), km.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(NotImplementedError, match="kernel_regularizer"):
        rm.compile(optimizer="sgd", loss="mse")
    rm.save(tmp_path / "back.keras")
    again = k.saving.load_model(tmp_path / "back.keras")
    assert again.layers[-1].get_config()["kernel_regularizer"]["config"] == ortho.get_config()
