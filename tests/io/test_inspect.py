"""``rnnengine inspect PATH`` (rnnengine.io.inspect.inspect_main): layers, shapes,
parameter counts, what is unsupported (without raising), and a latency figure."""
from rnnengine.io.inspect import inspect_main

from .helpers import fixture, read_keras_config, rewrite_keras, layer_config


def _run(path):
    lines = []
    code = inspect_main(path, out=lines.append)
    return code, "\n".join(lines)


def test_supported_model():
    code, text = _run(fixture("k3_seq2seq", "keras"))
    assert code == 0
    assert "Format: .keras archive, written by Keras 3." in text
    assert 'Model: "k3_seq2seq" (functional)' in text
    assert "encoder (LSTM)" in text and "(None, 5)" in text and "180" in text
    assert "per_step (TimeDistributed)  (None, 4, 3)" in text
    assert "Total params: 358" in text
    assert "Supported: yes" in text
    assert "ms median of 20 predict calls, input (1, 6, 3), (1, 4, 2)" in text


def test_keras2_h5_and_stateful_batch():
    code, text = _run(fixture("k2_sequential", "h5"))
    assert code == 0 and "legacy HDF5 model, written by Keras 2." in text
    code, text = _run(fixture("k3_stateful", "h5"))
    assert code == 0 and "input (2, 4, 3)" in text  # a stateful model's fixed batch size


def test_unsupported_parts_are_listed_not_raised(tmp_path):
    config = read_keras_config(fixture("k3_lstm_stack", "keras"))
    config["config"]["layers"].insert(1, {"class_name": "Conv1D", "config": {"name": "conv", "filters": 2}})
    layer_config(config, "lstm")["time_major"] = True
    path = rewrite_keras(fixture("k3_lstm_stack", "keras"), tmp_path / "u.keras", config)
    code, text = _run(path)
    assert code == 1
    assert "Supported: no. 2 unsupported features:" in text
    assert '  - layer "conv" (Conv1D): layer class Conv1D is not supported' in text
    assert '  - layer "lstm" (LSTM): option time_major=True is not supported' in text
    assert "lstm (LSTM)" in text and "264" in text  # parameter counts as stored in the file
    assert "Latency" not in text


def test_unreadable_file(tmp_path):
    path = tmp_path / "x.keras"
    path.write_bytes(b"not a model")
    code, text = _run(path)
    assert code == 2 and text.startswith("error: ") and "not a Keras model file" in text
    code, text = _run(tmp_path / "absent.keras")
    assert code == 2 and "No such file" in text
