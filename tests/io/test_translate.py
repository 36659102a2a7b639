"""The per-class tables, on hand-written configs (no files, no Keras).

Keras 2 configs are written here the way tf.keras 2.x writes them (plain dtype
strings, ``batch_input_shape``, ``time_major``, ``implementation``, nested-list
``inbound_nodes`` with initial states as extra inbound tensors).
"""
import pytest

from rnnengine.errors import ModelFormatError
from rnnengine.io import keras_v3, translate
from rnnengine.io.assemble import build_model
from rnnengine.io.loader import keras_major


def lstm2(**over):
    config = {"name": "lstm", "trainable": True, "dtype": "float32", "batch_input_shape": [None, 5, 3],
              "return_sequences": False, "return_state": False, "go_backwards": False, "stateful": False,
              "unroll": False, "time_major": False, "units": 4, "activation": "tanh",
              "recurrent_activation": "hard_sigmoid", "use_bias": True,
              "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
              "recurrent_initializer": {"class_name": "Orthogonal", "config": {"gain": 1.0, "seed": None}},
              "bias_initializer": {"class_name": "Zeros", "config": {}}, "unit_forget_bias": True,
              "kernel_regularizer": None, "recurrent_regularizer": None, "bias_regularizer": None,
              "activity_regularizer": None, "kernel_constraint": None, "recurrent_constraint": None,
              "bias_constraint": None, "dropout": 0.2, "recurrent_dropout": 0.1, "implementation": 2}
    config.update(over)
    return {"class_name": "LSTM", "config": config}


def sequential(*layers):
    return {"class_name": "Sequential", "config": {"name": "m", "layers": list(layers)}}


def spec_of(config, major=2):
    return translate.model_spec(config, major, "test.h5")


def test_keras2_lstm_maps_ignores_and_converts():
    spec = spec_of(sequential(lstm2()))
    assert spec.issues == []
    (ls,) = spec.layers
    assert ls.rn_class == "LSTM"
    assert ls.kwargs == {"trainable": True, "dtype": "float32", "return_sequences": False, "return_state": False,
                         "go_backwards": False, "stateful": False, "units": 4, "activation": "tanh",
                         "recurrent_activation": "hard_sigmoid_keras2", "use_bias": True,
                         "unit_forget_bias": True, "dropout": 0.2, "recurrent_dropout": 0.1}
    assert spec.input == ((5, 3), None, None)  # from batch_input_shape


def test_hard_sigmoid_depends_on_the_keras_version():
    assert spec_of(sequential(lstm2()), 3).layers[0].kwargs["recurrent_activation"] == "hard_sigmoid"
    dense = {"class_name": "Dense", "config": {"name": "d", "units": 2, "activation": "hard_sigmoid"}}
    assert spec_of(sequential(lstm2(), dense), 2).layers[1].kwargs["activation"] == "hard_sigmoid_keras2"


@pytest.mark.parametrize("major,config,want", [
    (2, {}, False),  # Keras 2 configs without the key predate it: reset_after=False behaviour
    (3, {}, True),
    (2, {"reset_after": True}, True),
    (3, {"reset_after": False}, False),
])
def test_gru_reset_after_read_from_config(major, config, want):
    gru = {"class_name": "GRU", "config": {"name": "g", "units": 3, "batch_input_shape": [None, 4, 2], **config}}
    assert spec_of(sequential(gru), major).layers[0].kwargs["reset_after"] is want


def test_time_major_and_unknown_options_are_listed():
    spec = spec_of(sequential(lstm2(time_major=True, my_option=3)))
    assert spec.issues == [
        'layer "lstm" (LSTM): option time_major=True is not supported: time-major input is not supported; '
        "rnnengine takes (batch, time, features)",
        'layer "lstm" (LSTM): option my_option=3 is not recognised by rnnengine',
    ]


@pytest.mark.parametrize("dtype,ok", [
    ("float64", True),
    ({"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float64"}}, True),
    ({"class_name": "Policy", "config": {"name": "mixed_float16"}}, False),
    ("float16", False),
    ({"class_name": "QuantizedDTypePolicy", "config": {"name": "int8_from_float32"}}, False),
])
def test_dtypes(dtype, ok):
    spec = spec_of(sequential(lstm2(dtype=dtype)))
    assert (spec.issues == []) is ok, spec.issues
    if ok:
        assert spec.layers[0].kwargs["dtype"] == "float64"


def test_keras2_nested_inbound_nodes_with_initial_state():
    layers = [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 5, 3], "dtype": "float32",
                                                "sparse": False, "ragged": False, "name": "x"},
         "name": "x", "inbound_nodes": []},
        dict(lstm2(name="enc", return_state=True, batch_input_shape=None), name="enc",
             inbound_nodes=[[["x", 0, 0, {}]]]),
        dict(lstm2(name="dec", return_sequences=True, batch_input_shape=None), name="dec",
             inbound_nodes=[[["x", 0, 0, {}], ["enc", 0, 1, {}], ["enc", 0, 2, {}]]]),
        {"class_name": "Concatenate", "config": {"name": "cat", "axis": -1}, "name": "cat",
         "inbound_nodes": [[["dec", 0, 0, {}], ["x", 0, 0, {}]]]},
    ]
    config = {"class_name": "Functional", "config": {"name": "f", "layers": layers,
                                                     "input_layers": [["x", 0, 0]], "output_layers": [["cat", 0, 0]]}}
    spec = spec_of(config)
    assert spec.issues == []
    dec = spec.layer("dec").nodes[0]
    assert dec.inputs == [("x", 0, 0)] and dec.states == [("enc", 0, 1), ("enc", 0, 2)]
    cat = spec.layer("cat").nodes[0]
    assert cat.multi and cat.inputs == [("dec", 0, 0), ("x", 0, 0)]
    assert spec.single_input and spec.single_output


def test_generic_rnn_with_one_cell_runs_as_that_layer():
    rnn = {"class_name": "RNN", "config": {"name": "r", "return_sequences": True, "batch_input_shape": [None, 4, 2],
                                           "cell": {"class_name": "GRUCell", "config": {"name": "c", "units": 3,
                                                                                       "reset_after": False}}}}
    (ls,) = spec_of(sequential(rnn), 3).layers
    assert (ls.keras_class, ls.table, ls.rn_class) == ("RNN", "GRU", "GRU")
    assert ls.kwargs["units"] == 3 and ls.kwargs["return_sequences"] and ls.kwargs["reset_after"] is False
    stacked = {"class_name": "RNN", "config": {"name": "r", "cell": [{"class_name": "GRUCell", "config": {}}]}}
    assert "RNN with a list of cells" in spec_of(sequential(stacked), 3).issues[0]


def test_identity_at_inference_layers_run_as_dropout():
    noise = {"class_name": "GaussianNoise", "config": {"name": "n", "stddev": 0.3, "seed": None}}
    spec = spec_of(sequential(lstm2(), noise))
    assert spec.issues == [] and spec.layers[1].rn_class == "Dropout" and spec.layers[1].kwargs["rate"] == 0.0


def test_keras3_weight_keys_are_class_names_numbered():
    assert keras_v3.layer_keys(["InputLayer", "LSTM", "LSTM", "SimpleRNN", "GRU", "TimeDistributed", "LSTM"]) == \
        ["input_layer", "lstm", "lstm_1", "simple_rnn", "gru", "time_distributed", "lstm_2"]


def test_keras_major_from_version_or_config_style():
    assert keras_major("2.15.0", "") == 2 and keras_major("3.15.1", "") == 3 and keras_major("2.2.4-tf", "") == 2
    assert keras_major(None, '{"batch_shape": [null, 3]}') == 3 and keras_major(None, '{"a": 1}') == 2


def test_weights_that_do_not_fit_the_config_name_layer_and_shapes():
    import numpy as np

    spec = spec_of(sequential(lstm2()))
    weights = {"lstm": [("kernel", np.zeros((3, 16))), ("recurrent_kernel", np.zeros((4, 12))),
                        ("bias", np.zeros(16))]}
    with pytest.raises(ModelFormatError, match=r'test.h5: layer "lstm" \(LSTM\): weight recurrent_kernel .* '
                                               r"shape \(4, 12\); the layer's config implies \(4, 16\)"):
        build_model(spec, weights, "test.h5")
    weights["lstm"][1] = ("recurrent_kernel", np.zeros((4, 16)))
    weights["lstm"][0] = ("kernel", np.zeros((7, 16)))  # the input has 3 features
    with pytest.raises(ModelFormatError, match=r'receives 3 features, but its kernel in the file has shape \(7, 16\)'):
        build_model(spec, weights, "test.h5")
