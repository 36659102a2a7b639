"""HDF5 that reaches outside the file is refused by every reader.

A weight dataset with external storage (its bytes in another file, here a
"secret" standing for ``/proc/self/environ``), an external link or a virtual
dataset mapping another file, a soft link, or a filter libhdf5 would load as a
plugin: each is crafted into a real Keras-made fixture, in place of a weight,
and ``load_keras`` (``.h5`` and ``.keras``), ``load_weights`` and
``rnnengine inspect`` must raise ``ModelFormatError`` naming the dataset,
without any of the secret's bytes reaching a weight."""
import io
import shutil
import zipfile

import h5py
import numpy as np
import pytest
from h5py import h5d, h5p, h5s, h5t, h5z

import rnnengine
from rnnengine.errors import ModelFormatError
from rnnengine.io import inspect as rinspect
from rnnengine.io import load_weights

from .helpers import fixture, inputs, outputs, read_h5_config, rewrite_h5_config

CASE = "k3_lstm_stack"
SECRET = b"API_TOKEN=s3cr3t-" * 64


def _first_weight(f):
    """The path of the first float dataset in the file (a weight)."""
    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and
                 obj.dtype.kind == "f" and not found else None)
    return found[0]


def _attack(f, name, how, secret_path, other_path):
    """Replace the dataset ``name`` of the open file ``f`` by the attack ``how``,
    keeping its shape and dtype."""
    old = f[name]
    shape, dtype = old.shape, old.dtype
    data = old[()]
    del f[name]
    if how == "external":
        f.create_dataset(name, shape=shape, dtype=dtype, external=[(str(secret_path), 0, data.nbytes)])
    elif how == "external_link":
        with h5py.File(other_path, "w") as g:
            g["w"] = data
        f[name] = h5py.ExternalLink(str(other_path), "/w")
    elif how == "virtual":
        with h5py.File(other_path, "w") as g:
            g["w"] = data
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[...] = h5py.VirtualSource(str(other_path), "w", shape=shape)
        f.create_virtual_dataset(name, layout)
    elif how == "soft_link":
        f[name + "_real"] = data
        f[name] = h5py.SoftLink("/" + name + "_real")
    elif how == "plugin_filter":  # an optional filter h5py cannot apply: written raw, read via a plugin
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_chunk(shape)
        dcpl.set_filter(307, h5z.FLAG_OPTIONAL, (9,))
        dsid = h5d.create(f.id, name.encode(), h5t.py_create(dtype), h5s.create_simple(shape), dcpl=dcpl)
        h5py.Dataset(dsid)[...] = data
    else:
        raise ValueError(how)


ATTACKS = ["external", "external_link", "virtual", "soft_link", "plugin_filter"]
MESSAGES = {"external": "external storage", "external_link": "external link", "virtual": "virtual dataset",
            "soft_link": "soft or user-defined link", "plugin_filter": "filter 307"}


def _secret(tmp_path):
    p = tmp_path / "secret.bin"
    p.write_bytes(SECRET)
    return p


def _crafted_h5(tmp_path, kind, how):
    dst = tmp_path / f"attack_{kind}.h5"
    shutil.copy(fixture(CASE, kind), dst)
    with h5py.File(dst, "r+") as f:
        name = _first_weight(f)
        _attack(f, name, how, _secret(tmp_path), tmp_path / "other.h5")
    return dst, name


def _crafted_keras(tmp_path, how):
    src = fixture(CASE, "keras")
    with zipfile.ZipFile(src) as zf:
        weights = zf.read("model.weights.h5")
    inner = tmp_path / "inner.h5"
    inner.write_bytes(weights)
    with h5py.File(inner, "r+") as f:
        name = _first_weight(f)
        _attack(f, name, how, _secret(tmp_path), tmp_path / "other.h5")
    dst = tmp_path / "attack.keras"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            body = inner.read_bytes() if info.filename == "model.weights.h5" else zin.read(info.filename)
            zout.writestr(info.filename, body)
    return dst, name


def _no_secret_in(model):
    for w in model.get_weights():
        assert SECRET[:16] not in np.ascontiguousarray(w).tobytes()


@pytest.mark.parametrize("how", ATTACKS)
def test_load_keras_h5_refuses(tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)  # relative external paths resolve here too
    path, name = _crafted_h5(tmp_path, "h5", how)
    with pytest.raises(ModelFormatError, match=MESSAGES[how]) as info:
        rnnengine.load_keras(path)
    assert name.split("/")[-1] in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("how", ATTACKS)
def test_load_keras_archive_refuses(tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    path, name = _crafted_keras(tmp_path, how)
    with pytest.raises(ModelFormatError, match=MESSAGES[how]) as info:
        rnnengine.load_keras(path)
    assert name.split("/")[-1] in str(info.value)


@pytest.mark.parametrize("how", ATTACKS)
def test_load_weights_refuses_and_keeps_the_old_weights(tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    model = rnnengine.load_keras(fixture(CASE, "keras"))
    before = model.get_weights()
    for kind in ("weights", "h5"):
        path, _ = _crafted_h5(tmp_path, kind, how)
        with pytest.raises(ModelFormatError, match=MESSAGES[how]):
            load_weights(model, path)
        for a, b in zip(before, model.get_weights()):
            np.testing.assert_array_equal(a, b)
    _no_secret_in(model)


@pytest.mark.parametrize("how", ["external", "external_link"])
def test_inspect_refuses(tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    path, _ = _crafted_h5(tmp_path, "h5", how)
    lines = []
    assert rinspect.inspect_main(path, out=lines.append) == 2
    assert MESSAGES[how] in lines[-1]
    # and an unsupported model (read with strict=False, its raw counts taken) too
    config = read_h5_config(path)
    config["config"]["layers"][-1]["class_name"] = "NoSuchLayer"
    path = rewrite_h5_config(path, tmp_path / "unsupported.h5", config)
    lines = []
    assert rinspect.inspect_main(path, out=lines.append) == 2
    assert MESSAGES[how] in lines[-1]


def test_an_ordinary_file_with_builtin_compression_still_loads(tmp_path):
    """gzip and shuffle are HDF5's own: allowed, and the numbers are Keras's."""
    dst = tmp_path / "gzip.h5"
    shutil.copy(fixture(CASE, "h5"), dst)
    with h5py.File(dst, "r+") as f:
        for name in [n for n in _all_datasets(f)]:
            data = f[name][()]
            del f[name]
            f.create_dataset(name, data=data, compression="gzip", shuffle=True)
    model = rnnengine.load_keras(dst)
    np.testing.assert_allclose(model.predict(inputs(CASE), verbose=0), outputs(CASE)[0], rtol=1e-5, atol=1e-6)


def _all_datasets(f):
    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


def test_a_weights_buffer_in_memory_is_checked_too(tmp_path, monkeypatch):
    """The .keras member is read from memory; external paths then resolve
    against the cwd, where the secret sits."""
    monkeypatch.chdir(tmp_path)
    _secret(tmp_path)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("layers/dense/vars/0", shape=(4, 4), dtype="f4", external=[("secret.bin", 0, 64)])
    from rnnengine.io import h5 as rh5

    f = rh5.open_file(buf.getvalue(), "mem.h5")
    try:
        with pytest.raises(ModelFormatError, match="layers/dense/vars/0 has external storage"):
            rh5.Reader(f, "mem.h5", 1000)
    finally:
        f.close()
