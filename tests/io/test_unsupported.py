"""Unsupported layers and options: one UnsupportedKerasFeature listing every one,
by layer name and class, raised before anything is built or any weight read."""
import copy

import pytest

import rnnengine
from rnnengine.errors import ModelFormatError, UnsupportedKerasFeature

from .helpers import (fixture, layer_config, layer_entry, read_h5_config, read_keras_config, rewrite_h5_config,
                      rewrite_keras)


def _sequential_with_problems():
    config = read_keras_config(fixture("k3_lstm_stack", "keras"))
    layers = config["config"]["layers"]
    layers.insert(1, {"module": "keras.layers", "class_name": "Conv1D",
                      "config": {"name": "conv", "filters": 4, "kernel_size": 3}})
    lstm = layer_config(config, "lstm")
    lstm["activation"] = "my_custom_act"
    lstm["time_major"] = True
    lstm["unroll"] = True  # ignored: same math
    layer_config(config, "dense_1")["dtype"] = {"module": "keras", "class_name": "DTypePolicy",
                                                "config": {"name": "mixed_float16"}}
    return config


EXPECTED_SEQUENTIAL = [
    'layer "conv" (Conv1D): layer class Conv1D is not supported',
    'layer "lstm" (LSTM): option activation=\'my_custom_act\' is not supported (unknown or custom activation)',
    'layer "lstm" (LSTM): option time_major=True is not supported: time-major input is not supported; '
    "rnnengine takes (batch, time, features)",
    'layer "dense_1" (Dense): option dtype=\'mixed_float16\' is not supported (rnnengine computes in float32 '
    "or float64)",
]


def test_every_problem_listed_in_one_error(tmp_path):
    path = rewrite_keras(fixture("k3_lstm_stack", "keras"), tmp_path / "m.keras", _sequential_with_problems())
    with pytest.raises(UnsupportedKerasFeature) as info:
        rnnengine.load_keras(path)
    assert info.value.issues == EXPECTED_SEQUENTIAL
    message = str(info.value)
    assert message.startswith(f"{path}: the model uses 4 Keras features rnnengine does not support:\n")
    for issue in EXPECTED_SEQUENTIAL:
        assert f"  - {issue}" in message


def test_reported_before_weights_are_read(tmp_path):
    """With its weights file gone, the archive still reports what is unsupported."""
    path = rewrite_keras(fixture("k3_lstm_stack", "keras"), tmp_path / "m.keras", _sequential_with_problems(),
                         drop=("model.weights.h5",))
    with pytest.raises(UnsupportedKerasFeature) as info:
        rnnengine.load_keras(path)
    assert info.value.issues == EXPECTED_SEQUENTIAL


def test_functional_problems(tmp_path):
    config = read_keras_config(fixture("k3_seq2seq", "keras"))
    per_step = layer_config(config, "per_step")
    per_step["layer"] = copy.deepcopy(layer_entry(config, "decoder"))
    per_step["layer"]["config"]["name"] = "inner"
    layer_config(config, "encoder")["implementation"] = 1  # ignored
    layer_entry(config, "decoder")["inbound_nodes"][0]["kwargs"]["constants"] = [1.0]
    path = rewrite_keras(fixture("k3_seq2seq", "keras"), tmp_path / "f.keras", config)
    with pytest.raises(UnsupportedKerasFeature) as info:
        rnnengine.load_keras(path)
    assert info.value.issues == [
        'layer "decoder" (LSTM): call argument constants=[1.0] is not supported',
        'layer "per_step" (TimeDistributed): TimeDistributed over LSTM is not supported '
        "(only non-recurrent layers such as Dense)",
    ]


def test_explicit_masks_must_be_the_propagated_ones(tmp_path):
    """Keras 3 records masks as NotEqual/Any operations passed as mask=; a mask
    other than the one rnnengine propagates, or an operation used as data, is reported."""
    config = read_keras_config(fixture("k3_masking_gru", "keras"))
    mask = layer_entry(config, "gru_7")["inbound_nodes"][0]["kwargs"]["mask"]
    mask["config"]["keras_history"] = ["not_equal_1", 0, 0]
    dense_in = layer_entry(config, "dense_8")["inbound_nodes"][0]["args"][0]
    dense_in["config"]["keras_history"] = ["any", 0, 0]
    path = rewrite_keras(fixture("k3_masking_gru", "keras"), tmp_path / "m.keras", config)
    with pytest.raises(UnsupportedKerasFeature) as info:
        rnnengine.load_keras(path)
    assert info.value.issues == [
        'layer "gru_7" (GRU): the mask= passed to this call (from \'not_equal_1\') is not the mask rnnengine '
        "propagates to it; explicit masks are not supported",
        'layer "dense_8" (Dense): takes the output of operation \'any\' as data: keras.ops operations in a model '
        "are not supported (only as masks)",
    ]


def test_keras2_time_major(tmp_path):
    config = read_h5_config(fixture("k2_sequential", "h5"))
    layer_config(config, "lstm")["time_major"] = True
    layer_config(config, "gru")["unroll"] = True  # ignored
    path = rewrite_h5_config(fixture("k2_sequential", "h5"), tmp_path / "k2.h5", config)
    with pytest.raises(UnsupportedKerasFeature, match=r'layer "lstm" \(LSTM\): option time_major=True is not '
                                                      r"supported") as info:
        rnnengine.load_keras(path)
    assert len(info.value.issues) == 1


def test_subclassed_model(tmp_path):
    path = rewrite_keras(fixture("k3_gru", "keras"), tmp_path / "s.keras",
                         {"module": "my_pkg", "class_name": "MyModel", "config": {"units": 3}})
    with pytest.raises(UnsupportedKerasFeature, match="model class MyModel: subclassed and custom models"):
        rnnengine.load_keras(path)


def test_nested_model_as_layer(tmp_path):
    config = read_keras_config(fixture("k3_bidirectional", "keras"))
    config["config"]["layers"].append({"class_name": "Sequential", "config": {"name": "inner", "layers": []},
                                       "name": "inner", "inbound_nodes": []})
    path = rewrite_keras(fixture("k3_bidirectional", "keras"), tmp_path / "n.keras", config)
    with pytest.raises(UnsupportedKerasFeature, match=r'layer "inner" \(Sequential\): nested models'):
        rnnengine.load_keras(path)


def test_savedmodel_directory(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01")
    with pytest.raises(UnsupportedKerasFeature, match="SavedModel directories are not supported"):
        rnnengine.load_keras(tmp_path)


def test_unsupported_is_not_a_format_error():
    assert not issubclass(UnsupportedKerasFeature, ModelFormatError)
    assert issubclass(UnsupportedKerasFeature, ValueError) and issubclass(ModelFormatError, ValueError)
