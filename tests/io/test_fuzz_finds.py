"""Files from a long mutation-fuzz campaign that break the loader's contract.

The contract (test_corrupt.py): a bad file gives ModelFormatError or
UnsupportedKerasFeature naming the file and the problem, never another exception.
A campaign of 20,000 mutated files (test_corrupt's mutations, 100 batches of 200
with seeds 100000..100099) found the cases below; each is rebuilt here from a
fixture with the one change that matters.
"""
import copy
import shutil

import h5py
import numpy as np
import pytest

import rnnengine
from rnnengine.errors import ModelFormatError, UnsupportedKerasFeature

from .helpers import fixture, read_h5_config, rewrite_h5_config

CONTRACT = (ModelFormatError, UnsupportedKerasFeature)


def test_a_weights_file_with_a_non_utf8_dataset_name(tmp_path):
    """Campaign seed 100048, case 40: a flipped byte in a link name. h5py gives
    a name that is not UTF-8 as bytes; read_weights once joined them into its
    message (TypeError). Names are now decoded with replacement characters."""
    path = tmp_path / "w.weights.h5"
    shutil.copy(fixture("k3_bidirectional", "weights"), path)
    with h5py.File(path, "r+") as f:
        f["layers/bidirectional"].create_dataset(b"\xff\xfe", data=np.ones(3, "f4"))
    model = rnnengine.load_keras(fixture("k3_bidirectional", "h5"))
    with pytest.raises(ModelFormatError, match="variables the layer's config does not"):
        rnnengine.io.load_weights(model, path)


@pytest.mark.parametrize("constant", [{}, [], None, "x", [1, 2], True],
                         ids=["dict", "list", "None", "str", "pair", "bool"])
def test_a_nonsense_not_equal_constant(tmp_path, constant):
    """Campaign seed 100091, case 72: the constant of the NotEqual op that
    k3_masking_gru's mask goes through, set to nonsense. _mask_node once called
    float() on it unchecked (TypeError/ValueError); the node parser already
    reports a non-number operation argument as unsupported, so that is what
    the load raises. (Masking's mask_value set to the same values gives
    ModelFormatError.)"""
    config = copy.deepcopy(read_h5_config(fixture("k3_masking_gru", "h5")))
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "NotEqual":
            layer["inbound_nodes"][0]["args"][1] = constant
    path = rewrite_h5_config(fixture("k3_masking_gru", "h5"), tmp_path / "m.h5", config)
    with pytest.raises(UnsupportedKerasFeature, match="operation arguments other than one tensor and numbers"):
        rnnengine.load_keras(path)


def test_a_legacy_weights_file_with_a_non_utf8_layer_group(tmp_path):
    """The legacy twin of the case above: with no layer_names attribute the
    layer groups are listed from the file, and h5py gives a name that is not
    UTF-8 as bytes. That stayed in the contract only by luck (h5py's own
    UnicodeDecodeError, caught by the guard); now it is said plainly."""
    path = tmp_path / "m.h5"
    shutil.copy(fixture("k3_bidirectional", "h5"), path)
    with h5py.File(path, "r+") as f:
        weights = f["model_weights"]
        del weights.attrs["layer_names"]
        weights.create_group(b"\xff\xfe").attrs["weight_names"] = [b"kernel:0"]
    model = rnnengine.load_keras(fixture("k3_bidirectional", "h5"))
    with pytest.raises(ModelFormatError, match="is not UTF-8 text"):
        rnnengine.io.load_weights(model, path)
