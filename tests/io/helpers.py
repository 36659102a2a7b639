"""Fixture files and tools to make modified copies of them (no Keras needed).

The fixtures in ``fixtures/`` are written by ``tools/make_keras_fixtures.py``
with real Keras 3 and tf_keras; ``manifest.json`` lists each case, its files,
and the ``.npz`` holding its inputs and Keras's outputs.
"""
import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
CASES = {case["name"]: case for case in MANIFEST["cases"]}


def fixture(name, kind):
    return FIXTURES / CASES[name]["files"][kind]


def data(name):
    return np.load(FIXTURES / CASES[name]["data"])


def inputs(name):
    d, case = data(name), CASES[name]
    xs = [d[f"x{i}"] for i in range(case["inputs"])]
    return xs[0] if len(xs) == 1 else xs


def outputs(name):
    d, case = data(name), CASES[name]
    return [d[f"y{i}"] for i in range(case["outputs"])]


def read_keras_config(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("config.json"))


def rewrite_keras(src, dst, config=None, drop=(), members=None):
    """Copy the .keras archive ``src`` to ``dst``, replacing config.json with
    ``config`` (a dict, or raw bytes), leaving out ``drop``, and replacing or
    adding ``members`` ({name: bytes})."""
    members = dict(members or {})
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop or info.filename in members:
                continue
            body = zin.read(info.filename)
            if info.filename == "config.json" and config is not None:
                body = config if isinstance(config, bytes) else json.dumps(config).encode()
            zout.writestr(info.filename, body)
        for name, body in members.items():
            zout.writestr(name, body)
    return dst


def keras_weights_bytes(src):
    with zipfile.ZipFile(src) as zf:
        return zf.read("model.weights.h5")


def read_h5_config(path):
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["model_config"])


def rewrite_h5_config(src, dst, config):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        f.attrs["model_config"] = config if isinstance(config, str) else json.dumps(config)
    return dst


def replace_dataset(path, name, array):
    """Replace the dataset ``name`` in the HDF5 file ``path`` (in place)."""
    with h5py.File(path, "r+") as f:
        del f[name]
        f[name] = array
    return path


def layer_config(config, name):
    """The config dict of the layer called ``name`` in a model config."""
    for entry in config["config"]["layers"]:
        if entry["config"].get("name") == name:
            return entry["config"]
    raise KeyError(name)


def layer_entry(config, name):
    for entry in config["config"]["layers"]:
        if entry["config"].get("name") == name:
            return entry
    raise KeyError(name)
