"""Make the Keras model fixtures in tests/io/fixtures/ (run from the repository root).

    python tools/make_keras_fixtures.py

Each case is a small model built in real Keras, given random non-zero
weights, and saved in every format Keras writes:

- Keras 3 (``keras``): ``<name>.keras``, ``<name>.h5`` (``model.save``, the
  legacy writer) and ``<name>.weights.h5``;
- Keras 2 (``tf_keras``, tf.keras 2.x as a package, matching TensorFlow):
  ``<name>.h5`` (``model.save``), ``<name>_weights.h5`` (legacy
  ``save_weights``) and ``<name>.keras`` (tf_keras's archive, Keras 2 config).

Next to them, ``<name>.npz`` holds fixed inputs (``x0``, ``x1``, ...) and
Keras's outputs for them (``y0``, ...), computed with ``model(x)``, not
``predict`` (whose data adapter casts float64 input to float32). A stateful
case holds one (inputs, outputs) set per call, in order, with the calls at
which Keras's ``reset_states()`` ran. ``manifest.json`` lists every case.

Needs keras (3) and tf_keras (``pip install tf-keras==<TensorFlow's
version>``); without tf_keras the Keras 2 cases are skipped with a message.
"""
import json
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "io", "fixtures")
SEED = 20240611


def _randomize(model, rng):
    """Random non-zero weights, so that every weight matters to the outputs."""
    weights = []
    for w in model.get_weights():
        v = rng.uniform(0.1, 0.6, w.shape) * rng.choice([-1.0, 1.0], w.shape)
        weights.append(v.astype(w.dtype))
    model.set_weights(weights)


def _reset_states(model):
    """Keras 3 models have no reset_states(); their recurrent layers do."""
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()


def _as_list(y):
    return [np.asarray(v) for v in y] if isinstance(y, (list, tuple)) else [np.asarray(y)]


# -- Keras 3 cases ---------------------------------------------------------------------------


def keras3_cases(keras, rng):
    L = keras.layers

    def seq(n, t, f, dtype="float32"):
        return rng.standard_normal((n, t, f)).astype(dtype)

    cases = {}

    cases["k3_simple_rnn"] = (keras.Sequential([
        keras.Input((6, 3)),
        L.SimpleRNN(5, return_sequences=True, go_backwards=True),
        L.SimpleRNN(4, activation="relu"),
        L.Dense(3, activation="softmax"),
    ], name="k3_simple_rnn"), [seq(5, 6, 3)])

    cases["k3_lstm_stack"] = (keras.Sequential([
        keras.Input((7, 4)),
        L.LSTM(6, return_sequences=True),
        L.Dropout(0.3),
        L.LSTM(4, use_bias=False, go_backwards=True, recurrent_activation="hard_sigmoid"),
        L.Dense(2),
    ], name="k3_lstm_stack"), [seq(5, 7, 4)])

    cases["k3_gru"] = (keras.Sequential([
        keras.Input((6, 3)),
        L.GRU(5, return_sequences=True),
        L.GRU(4, reset_after=False, return_sequences=True, go_backwards=True),
        L.GRU(3, use_bias=False),
        L.Dense(1, activation="sigmoid"),
    ], name="k3_gru"), [seq(5, 6, 3)])

    cases["k3_float64"] = (keras.Sequential([
        keras.Input((6, 3), dtype="float64"),
        L.LSTM(5, return_sequences=True, dtype="float64"),
        L.GRU(4, dtype="float64"),
        L.Dense(2, activation="tanh", dtype="float64"),
    ], name="k3_float64"), [seq(4, 6, 3, "float64")])

    # Stateful: the fixed batch size is recorded in the InputLayer's batch_shape;
    # outputs are recorded call by call, with a reset_states() in between.
    cases["k3_stateful"] = (keras.Sequential([
        keras.Input((4, 3), batch_size=2),
        L.LSTM(4, stateful=True, return_sequences=True),
        L.GRU(3, stateful=True),
        L.Dense(2),
    ], name="k3_stateful"), None)

    enc_in = keras.Input((6, 3), name="encoder_in")
    dec_in = keras.Input((4, 2), name="decoder_in")
    _, h, c = L.LSTM(5, return_state=True, name="encoder")(enc_in)
    dec = L.LSTM(5, return_sequences=True, name="decoder")(dec_in, initial_state=[h, c])
    out = L.TimeDistributed(L.Dense(3, activation="softmax"), name="per_step")(dec)
    cases["k3_seq2seq"] = (keras.Model([enc_in, dec_in], out, name="k3_seq2seq"),
                           [seq(5, 6, 3), seq(5, 4, 2)])

    x = keras.Input((6, 3))
    y = L.Bidirectional(L.LSTM(4, return_sequences=True))(x)
    y = L.Bidirectional(L.GRU(3), merge_mode="sum")(y)
    y = L.Dense(2)(y)
    cases["k3_bidirectional"] = (keras.Model(x, y, name="k3_bidirectional"), [seq(5, 6, 3)])

    x = keras.Input((7,), dtype="int32")
    y = L.Embedding(12, 4, mask_zero=True)(x)
    y = L.LSTM(5, return_sequences=True)(y)
    y = L.LSTM(3)(y)
    y = L.Dense(2, activation="softmax")(y)
    tokens = rng.integers(1, 12, size=(5, 7)).astype("int32")
    for row, n_pad in enumerate([0, 2, 3, 6, 1]):
        tokens[row, 7 - n_pad:] = 0  # post-padding
    tokens[4, 0] = 0  # and one pre-padded step
    cases["k3_embedding_mask"] = (keras.Model(x, y, name="k3_embedding_mask"), [tokens])

    x = keras.Input((6, 3))
    y = L.Masking(mask_value=0.0)(x)
    y = L.GRU(4, return_sequences=True)(y)
    y = L.GRU(3)(y)
    y = L.Dense(2)(y)
    xm = seq(5, 6, 3)
    xm[1, 4:] = 0.0
    xm[2, :2] = 0.0
    xm[3, 2] = 0.0
    cases["k3_masking_gru"] = (keras.Model(x, y, name="k3_masking_gru"), [xm])

    x = keras.Input((5, 3))
    y = L.LSTM(4)(x)
    y = L.RepeatVector(3)(y)
    y = L.LSTM(4, return_sequences=True)(y)
    y = L.TimeDistributed(L.Dense(2))(y)
    y = L.Activation("tanh")(y)
    cases["k3_repeat_vector"] = (keras.Model(x, y, name="k3_repeat_vector"), [seq(5, 5, 3)])

    a = keras.Input((5, 3), name="a")
    b = keras.Input((4, 2), name="b")
    ha = L.LSTM(4, name="lstm_a")(a)
    hb = L.GRU(4, name="gru_b")(b)
    sa = L.Flatten()(L.SimpleRNN(2, return_sequences=True)(a))
    merged = L.Concatenate()([ha, hb, sa])
    out1 = L.Dense(3, activation="softmax", name="head")(merged)
    out2 = L.Average()([L.Add()([ha, hb]), L.Multiply()([ha, hb])])
    cases["k3_multi_io"] = (keras.Model([a, b], [out1, out2], name="k3_multi_io"), [seq(5, 5, 3), seq(5, 4, 2)])
    return cases


def save_keras3(name, model, inputs, manifest, rng):
    _randomize(model, rng)
    paths = {"keras": f"{name}.keras", "h5": f"{name}.h5", "weights": f"{name}.weights.h5"}
    entry = {"name": name, "keras": 3, "files": paths, "data": f"{name}.npz",
             "dtype": model.layers[-1].dtype_policy.name if hasattr(model.layers[-1], "dtype_policy") else "float32"}
    data = {}
    if inputs is None:  # the stateful case: calls with a reset in between
        rngx = np.random.default_rng(7)
        calls = ["call", "call", "call", "reset", "call", "call"]
        k = 0
        for step in calls:
            if step == "reset":
                _reset_states(model)
                continue
            x = rngx.standard_normal((2, 4, 3)).astype("float32")
            data[f"c{k}_x0"] = x
            data[f"c{k}_y0"] = _as_list(model(x))[0]
            k += 1
        _reset_states(model)
        entry["calls"] = calls
    else:
        outs = _as_list(model(inputs if len(inputs) > 1 else inputs[0]))
        for i, x in enumerate(inputs):
            data[f"x{i}"] = x
        for i, y in enumerate(outs):
            data[f"y{i}"] = y
        entry["inputs"], entry["outputs"] = len(inputs), len(outs)
    model.save(os.path.join(OUT, paths["keras"]))
    model.save(os.path.join(OUT, paths["h5"]))
    model.save_weights(os.path.join(OUT, paths["weights"]))
    np.savez_compressed(os.path.join(OUT, entry["data"]), **data)
    manifest.append(entry)


# -- Keras 2 (tf_keras) cases ----------------------------------------------------------------


def keras2_cases(k2, rng):
    L = k2.layers
    cases = {}
    # Keras 2 hard_sigmoid (0.2 x + 0.5), GRU both ways, Keras 2's input_shape= style.
    cases["k2_sequential"] = (k2.Sequential([
        L.LSTM(5, return_sequences=True, recurrent_activation="hard_sigmoid", input_shape=(6, 3)),
        L.GRU(4, reset_after=False, recurrent_activation="hard_sigmoid", return_sequences=True),
        L.GRU(3, reset_after=True, go_backwards=True),
        L.Dense(2, activation="hard_sigmoid"),
    ], name="k2_sequential"), [rng.standard_normal((5, 6, 3)).astype("float32")])

    enc_in = k2.Input((6, 3), name="encoder_in")
    dec_in = k2.Input((4, 2), name="decoder_in")
    _, h, c = L.LSTM(5, return_state=True, name="encoder")(enc_in)
    dec = L.LSTM(5, return_sequences=True, name="decoder")(dec_in, initial_state=[h, c])
    bi = L.Bidirectional(L.GRU(3, return_sequences=True), name="bi")(dec)
    out = L.TimeDistributed(L.Dense(2, activation="softmax"), name="per_step")(bi)
    tokens_in = k2.Input((5,), name="tokens")
    emb = L.Embedding(10, 3, mask_zero=True)(tokens_in)
    summary = L.SimpleRNN(4)(emb)
    cases["k2_functional"] = (k2.Model([enc_in, dec_in, tokens_in], [out, summary], name="k2_functional"), [
        rng.standard_normal((5, 6, 3)).astype("float32"), rng.standard_normal((5, 4, 2)).astype("float32"),
        np.array([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8], [9, 0, 0, 0, 0], [3, 3, 0, 0, 0], [0, 2, 4, 6, 0]],
                 dtype="float32")])
    return cases


def save_keras2(name, model, inputs, manifest, rng, version):
    _randomize(model, rng)
    paths = {"h5": f"{name}.h5", "legacy_weights": f"{name}_weights.h5", "keras": f"{name}.keras"}
    outs = _as_list(model(inputs if len(inputs) > 1 else inputs[0]))
    data = {f"x{i}": x for i, x in enumerate(inputs)}
    data.update({f"y{i}": y for i, y in enumerate(outs)})
    model.save(os.path.join(OUT, paths["h5"]))
    model.save_weights(os.path.join(OUT, paths["legacy_weights"]))
    model.save(os.path.join(OUT, paths["keras"]))
    np.savez_compressed(os.path.join(OUT, f"{name}.npz"), **data)
    manifest.append({"name": name, "keras": 2, "keras_version": version, "files": paths, "data": f"{name}.npz",
                     "dtype": "float32", "inputs": len(inputs), "outputs": len(outs)})


def main():
    import keras

    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    rng = np.random.default_rng(SEED)
    keras.utils.set_random_seed(SEED)
    manifest = []
    for name, (model, inputs) in keras3_cases(keras, rng).items():
        save_keras3(name, model, inputs, manifest, rng)
    try:
        import tf_keras
    except ImportError:
        print("tf_keras is not installed: Keras 2 fixtures skipped "
              "(pip install tf-keras==<your TensorFlow version>)", file=sys.stderr)
    else:
        for name, (model, inputs) in keras2_cases(tf_keras, rng).items():
            save_keras2(name, model, inputs, manifest, rng, tf_keras.__version__)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump({"keras_version": keras.__version__, "seed": SEED, "cases": manifest}, f, indent=1)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(manifest)} cases, {len(os.listdir(OUT))} files, {total / 1024:.0f} KiB into {OUT}")


if __name__ == "__main__":
    main()
