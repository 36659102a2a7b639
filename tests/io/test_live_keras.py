"""Round trips through real Keras: models saved fresh in every format, and live
models converted with from_keras, give Keras's outputs.

Keras 2 (tf_keras) files are covered by the committed fixtures that
tools/make_keras_fixtures.py makes with tf_keras; tf_keras itself is not a
test dependency (it requires the full tensorflow package beside tensorflow-cpu)."""
import numpy as np
import pytest

import rnnengine
from rnnengine.errors import UnsupportedKerasFeature
from tests.conftest import assert_close
from tests.keras_oracle import keras as _keras


@pytest.fixture(scope="module")
def keras():
    return _keras()


def _randomize(model, rng):
    model.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype) for w in model.get_weights()])


def _as_list(y):
    return [np.asarray(v) for v in y] if isinstance(y, (list, tuple)) else [np.asarray(y)]


def _functional(keras):
    L = keras.layers
    enc_in, dec_in = keras.Input((7, 3)), keras.Input((5, 2))
    seq, h, c = L.LSTM(4, return_sequences=True, return_state=True)(enc_in)
    summary = L.Bidirectional(L.GRU(3, reset_after=False), merge_mode="ave")(seq)
    dec = L.LSTM(4, return_sequences=True, go_backwards=True)(dec_in, initial_state=[h, c])
    dec = L.TimeDistributed(L.Dense(3, activation="relu"))(dec)
    head = L.Dense(2, activation="softmax")(L.Concatenate()([summary, L.SimpleRNN(3)(dec)]))
    return keras.Model([enc_in, dec_in], [head, dec])


def _compare(model, kmodel, xs, dtype="float32"):
    want = _as_list(kmodel(xs))
    got = _as_list(model.predict(xs))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_close(g, w, dtype)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_functional_saved_and_loaded(keras, rng, tmp_path, suffix):
    kmodel = _functional(keras)
    _randomize(kmodel, rng)
    xs = [rng.standard_normal((6, 7, 3)).astype("float32"), rng.standard_normal((6, 5, 2)).astype("float32")]
    kmodel.save(tmp_path / f"m{suffix}")
    model = rnnengine.load_keras(tmp_path / f"m{suffix}")
    _compare(model, kmodel, xs)
    kmodel.save_weights(tmp_path / "m.weights.h5")
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    model.load_weights(tmp_path / "m.weights.h5")
    _compare(model, kmodel, xs)


def test_from_keras_live_models(keras, rng):
    kmodel = _functional(keras)
    _randomize(kmodel, rng)
    xs = [rng.standard_normal((3, 7, 3)).astype("float32"), rng.standard_normal((3, 5, 2)).astype("float32")]
    _compare(rnnengine.from_keras(kmodel), kmodel, xs)
    L = keras.layers
    seq = keras.Sequential([keras.Input((6, 4), dtype="float64"), L.GRU(5, return_sequences=True, dtype="float64"),
                            L.SimpleRNN(3, dtype="float64"), L.Dense(2, dtype="float64")])
    _randomize(seq, rng)
    x = rng.standard_normal((4, 6, 4))
    _compare(rnnengine.from_keras(seq), seq, x, "float64")
    # Keras 3 records masks as NotEqual/Any operations in the config.
    tokens = keras.Input((6,), dtype="int32")
    y = L.Bidirectional(L.LSTM(3, return_sequences=True))(L.Embedding(9, 4, mask_zero=True)(tokens))
    masked = keras.Model(tokens, L.GRU(2)(y))
    _randomize(masked, rng)
    ids = np.array([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 8, 1], [0, 3, 3, 3, 0, 0]], dtype="int32")
    _compare(rnnengine.from_keras(masked), masked, ids)


def test_stateful_live_call_by_call(keras, rng, tmp_path):
    L = keras.layers
    kmodel = keras.Sequential([keras.Input((3, 2), batch_size=4), L.GRU(3, stateful=True, return_sequences=True),
                               L.LSTM(2, stateful=True)])
    _randomize(kmodel, rng)
    kmodel.save(tmp_path / "s.keras")
    model = rnnengine.load_keras(tmp_path / "s.keras")
    for step in range(6):
        if step == 3:
            model.reset_states()
            for layer in kmodel.layers:
                layer.reset_states()
        x = rng.standard_normal((4, 3, 2)).astype("float32")
        assert_close(model.predict(x), np.asarray(kmodel(x)), "float32", f"call {step}")


def test_from_keras_lists_every_unsupported_part(keras):
    L = keras.layers
    x = keras.Input((8, 3))
    y = L.Conv1D(4, 3)(x)
    y = L.LSTM(4, return_sequences=True)(y)
    y = L.MultiHeadAttention(2, 4)(y, y)
    kmodel = keras.Model(x, L.GlobalAveragePooling1D()(y))
    with pytest.raises(UnsupportedKerasFeature) as info:
        rnnengine.from_keras(kmodel)
    text = "\n".join(info.value.issues)
    for cls in ("Conv1D", "MultiHeadAttention", "GlobalAveragePooling1D"):
        assert f"layer class {cls} is not supported" in text

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(UnsupportedKerasFeature, match="subclassed"):
        rnnengine.from_keras(Sub())
