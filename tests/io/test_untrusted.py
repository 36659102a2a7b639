"""load_keras_untrusted: load_keras with the file read in a child process under
a timeout, for files that could hang or crash libhdf5 (HDFGroup/hdf5#1707).

Each call starts an interpreter (a second or two): these tests make few calls.
"""
import os
import shutil
import sys

import numpy as np
import pytest

import rnnengine
from rnnengine.errors import ModelFormatError, UnsupportedKerasFeature

from .helpers import fixture, inputs, layer_config, read_keras_config, rewrite_keras


def test_loads_the_same_model_as_load_keras():
    for name, kind in (("k3_seq2seq", "keras"), ("k2_functional", "h5")):
        path = fixture(name, kind)
        model, want = rnnengine.load_keras_untrusted(path), rnnengine.load_keras(path)
        assert type(model) is type(want) and [l.name for l in model.layers] == [l.name for l in want.layers]
        for got, expected in zip(model.get_weights(), want.get_weights()):
            np.testing.assert_array_equal(got, expected)
        x = inputs(name)
        got, expected = model.predict(x), want.predict(x)
        for g, e in zip(got if isinstance(got, list) else [got], expected if isinstance(expected, list) else [expected]):
            np.testing.assert_array_equal(g, e)


def test_raises_what_load_keras_raises(tmp_path):
    truncated = tmp_path / "cut.h5"
    truncated.write_bytes(fixture("k3_gru", "h5").read_bytes()[:5000])
    with pytest.raises(ModelFormatError) as want:
        rnnengine.load_keras(truncated)
    with pytest.raises(ModelFormatError) as got:
        rnnengine.load_keras_untrusted(truncated)
    assert str(got.value) == str(want.value)
    config = read_keras_config(fixture("k3_gru", "keras"))
    layer_config(config, "gru_1")["activation"] = "my_custom_act"
    path = rewrite_keras(fixture("k3_gru", "keras"), tmp_path / "m.keras", config)
    with pytest.raises(UnsupportedKerasFeature) as info:
        rnnengine.load_keras_untrusted(path)
    assert info.value.issues and "my_custom_act" in info.value.issues[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")
def test_a_read_that_hangs_is_cut_off_at_the_timeout(tmp_path):
    """A named pipe nobody writes to: opening it blocks forever, as libhdf5
    does on some corrupt files. The child is killed; this process is free."""
    path = tmp_path / "hangs.h5"
    os.mkfifo(path)
    with pytest.raises(ModelFormatError, match=r"took more than 3 s"):
        rnnengine.load_keras_untrusted(path, timeout=3)


@pytest.mark.skipif(shutil.which("false") is None, reason="needs the false command")
def test_a_reader_that_dies_is_a_format_error(monkeypatch):
    monkeypatch.setattr(sys, "executable", "false")  # exits 1 at once, as a crashed reader would
    with pytest.raises(ModelFormatError, match=r"the process reading it died \(exit status 1"):
        rnnengine.load_keras_untrusted(fixture("k3_gru", "h5"))
