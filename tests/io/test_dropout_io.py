"""Dropout rates and seeds survive a Keras file: identity at inference, but a
loaded model fine-tunes with the dropout its author trained with."""
import numpy as np

import rnnengine
from rnnengine import layers as L
from rnnengine.models import Sequential
from tests.keras_oracle import keras


def test_keras_dropout_rates_and_seeds_load(tmp_path):
    keras_ = keras()
    model = keras_.Sequential([keras_.Input((6, 3)),
                              keras_.layers.LSTM(4, dropout=0.2, recurrent_dropout=0.3, seed=5, return_sequences=True),
                              keras_.layers.GRU(3, dropout=0.1, seed=7),
                              keras_.layers.Dropout(0.25, seed=3), keras_.layers.Dense(2)])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = rnnengine.load_keras(path)
    lstm, gru, drop = loaded.layers[:3]
    assert (lstm.dropout, lstm.recurrent_dropout, lstm.seed) == (0.2, 0.3, 5)
    assert (gru.dropout, gru.recurrent_dropout, gru.seed) == (0.1, 0.0, 7)
    assert (drop.rate, drop.seed) == (0.25, 3)
    x = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x, verbose=0), atol=1e-5)
    # ... and back: rnnengine writes them, Keras reads them.
    out = tmp_path / "back.keras"
    loaded.save(out)
    again = keras_.models.load_model(out)
    assert again.layers[0].recurrent_dropout == 0.3 and again.layers[2].rate == 0.25


def test_bad_dropout_rate_in_a_file_is_a_named_error(tmp_path):
    model = Sequential([L.Input((4, 2)), L.SimpleRNN(3, dropout=0.5)])
    path = tmp_path / "m.keras"
    model.save(path)
    import json
    import zipfile
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["layers"][-1]["config"]["dropout"] = "lots"
    files["config.json"] = json.dumps(config).encode()
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(bad, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    try:
        rnnengine.load_keras(bad)
    except rnnengine.ModelFormatError as exc:
        assert "dropout" in str(exc)
    else:
        raise AssertionError("a non-numeric dropout rate must be refused")
