"""Truncated, corrupt and non-Keras files give ModelFormatError (or
UnsupportedKerasFeature), naming the file and the problem: never another
exception, a crash, a hang, or a half-built model.

The mutation fuzz runs ``RNNENGINE_FILE_FUZZ_CASES`` mutated files (default
200, CI's count; the first 200 cases of a longer campaign are CI's), each
bounded by ``CASE_S`` seconds in a worker process; ``RNNENGINE_TEST_SEED``
picks the mutations.
"""
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import threading
import zipfile
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

import rnnengine
from rnnengine.errors import ModelFormatError, UnsupportedKerasFeature

from .helpers import (fixture, inputs, keras_weights_bytes, layer_config, layer_entry, outputs,
                      read_keras_config, replace_dataset, rewrite_h5_config, rewrite_keras)

from .._report import say  # noqa: F401 - a fixture

REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("RNNENGINE_TEST_SEED", "1234"))
FILE_FUZZ_CASES = int(os.environ.get("RNNENGINE_FILE_FUZZ_CASES", "200"))
CASE_S = 60  # per case, worker start-up included: a load that takes longer is a hang


# -- truncation and bit flips ------------------------------------------------------------------


@pytest.mark.parametrize("name,kind", [("k3_lstm_stack", "keras"), ("k3_seq2seq", "h5"), ("k2_functional", "h5"),
                                       ("k2_sequential", "keras")])
@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.1, 0.5, 0.9, 0.999])
def test_truncated_model_files(tmp_path, name, kind, fraction):
    data = fixture(name, kind).read_bytes()
    path = tmp_path / fixture(name, kind).name
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(ModelFormatError, match=str(path).replace("\\", "\\\\")):
        rnnengine.load_keras(path)


@pytest.mark.parametrize("kind", ["weights", "keras"])
@pytest.mark.parametrize("cut", [0, 100, 5000, -1])
def test_truncated_weights_leave_the_model_unchanged(tmp_path, kind, cut):
    model = rnnengine.load_keras(fixture("k3_gru", "h5"))
    before = model.get_weights()
    data = fixture("k3_gru", kind).read_bytes()
    path = tmp_path / "w.bin"
    path.write_bytes(data[:cut])
    with pytest.raises(ModelFormatError):
        rnnengine.io.load_weights(model, path)
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)


def test_a_flipped_byte_in_the_archive_fails_its_crc(tmp_path):
    data = bytearray(fixture("k3_gru", "keras").read_bytes())
    at = data.find(b'"units"')
    data[at + 2] ^= 0x20
    path = tmp_path / "flip.keras"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="not a readable .keras archive"):
        rnnengine.load_keras(path)


# -- archive members ------------------------------------------------------------------------------


def test_missing_config_json(tmp_path):
    path = rewrite_keras(fixture("k3_gru", "keras"), tmp_path / "m.keras", drop=("config.json",))
    with pytest.raises(ModelFormatError, match=r"has no config.json: not a Keras model"):
        rnnengine.load_keras(path)


def test_missing_weights(tmp_path):
    path = rewrite_keras(fixture("k3_gru", "keras"), tmp_path / "m.keras", drop=("model.weights.h5",))
    with pytest.raises(ModelFormatError, match=r"the archive has no model.weights.h5"):
        rnnengine.load_keras(path)


def test_missing_metadata_still_loads(tmp_path, backend):
    """metadata.json only carries the Keras version; the config's style tells it too."""
    path = rewrite_keras(fixture("k3_bidirectional", "keras"), tmp_path / "m.keras", drop=("metadata.json",))
    np.testing.assert_allclose(rnnengine.load_keras(path).predict(inputs("k3_bidirectional")),
                               outputs("k3_bidirectional")[0], rtol=2e-5, atol=2e-5)


def test_bad_json(tmp_path):
    path = rewrite_keras(fixture("k3_gru", "keras"), tmp_path / "m.keras", config=b'{"class_name": "Seq')
    with pytest.raises(ModelFormatError, match="config.json is not valid JSON"):
        rnnengine.load_keras(path)


def test_corrupt_weights_inside_a_valid_archive(tmp_path):
    inner = bytearray(keras_weights_bytes(fixture("k3_gru", "keras")))
    path = rewrite_keras(fixture("k3_gru", "keras"), tmp_path / "m.keras",
                         members={"model.weights.h5": bytes(inner[: len(inner) // 2])})
    with pytest.raises(ModelFormatError, match=r"model.weights.h5: not a readable HDF5 file"):
        rnnengine.load_keras(path)


def test_zip_bomb_member_is_refused(tmp_path):
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(fixture("k3_gru", "keras")) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            if info.filename != "model.weights.h5":
                zout.writestr(info.filename, zin.read(info.filename))
        zout.writestr("model.weights.h5", b"\0" * (200 * 2 ** 20), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(ModelFormatError):
        rnnengine.load_keras(path)


# -- configs changed to nonsense ------------------------------------------------------------------


def _edit(config, what):
    body = config["config"]
    if what == "units_negative":
        layer_config(config, "gru_1")["units"] = -1
    elif what == "units_text":
        layer_config(config, "gru_1")["units"] = "five"
    elif what == "units_huge":
        layer_config(config, "gru_1")["units"] = 10 ** 6
    elif what == "units_other":
        layer_config(config, "gru_1")["units"] = 3
    elif what == "return_sequences_text":
        layer_config(config, "gru_1")["return_sequences"] = "yes"
    elif what == "reset_after_flipped":
        layer_config(config, "gru_1")["reset_after"] = True
    elif what == "layers_not_list":
        body["layers"] = 5
    elif what == "no_class_name":
        del body["layers"][1]["class_name"]
    elif what == "layer_config_null":
        body["layers"][1]["config"] = None
    elif what == "input_shape_text":
        body["layers"][0]["config"]["batch_shape"] = "(None, 6, 3)"
    elif what == "input_features_huge":
        body["layers"][0]["config"]["batch_shape"] = [None, 6, 50_000_000]
    elif what == "input_features_wrong":
        body["layers"][0]["config"]["batch_shape"] = [None, 6, 4]
    elif what == "dense_activation_number":
        layer_config(config, "dense_2")["activation"] = 7
    elif what == "duplicate_names":
        layer_config(config, "gru_1")["name"] = "gru"
    elif what == "top_not_object":
        return [1, 2, 3]
    return config


NONSENSE = ["units_negative", "units_text", "units_huge", "units_other", "return_sequences_text",
            "reset_after_flipped", "layers_not_list", "no_class_name", "layer_config_null", "input_shape_text",
            "input_features_huge", "input_features_wrong", "duplicate_names", "top_not_object"]


@pytest.mark.parametrize("what", NONSENSE)
def test_nonsense_config_fields(tmp_path, what):
    config = read_keras_config(fixture("k3_gru", "keras"))
    path = rewrite_keras(fixture("k3_gru", "keras"), tmp_path / "m.keras", _edit(config, what))
    with pytest.raises(ModelFormatError, match=str(path)):
        rnnengine.load_keras(path)


def test_unknown_activation_is_unsupported_not_corrupt(tmp_path):
    config = _edit(read_keras_config(fixture("k3_gru", "keras")), "dense_activation_number")
    path = rewrite_keras(fixture("k3_gru", "keras"), tmp_path / "m.keras", config)
    with pytest.raises(UnsupportedKerasFeature, match=r'layer "dense_2" \(Dense\): option activation=7'):
        rnnengine.load_keras(path)


def test_weights_that_do_not_fit_name_layer_and_both_shapes(tmp_path):
    config = _edit(read_keras_config(fixture("k3_gru", "keras")), "units_other")
    path = rewrite_keras(fixture("k3_gru", "keras"), tmp_path / "m.keras", config)
    with pytest.raises(ModelFormatError, match=r'layer "gru_1" \(GRU\) at layers/gru_1, kernel: shape \(5, 12\) '
                                               r"in the file, but the layer needs \(input_dim, 9\)"):
        rnnengine.load_keras(path)


@pytest.mark.parametrize("what", ["unknown_layer", "cycle", "bad_history", "unknown_output", "missing_node",
                                  "input_not_input"])
def test_broken_functional_graphs(tmp_path, what):
    config = read_keras_config(fixture("k3_seq2seq", "keras"))
    decoder = layer_entry(config, "decoder")["inbound_nodes"][0]
    if what == "unknown_layer":
        decoder["args"][0]["config"]["keras_history"] = ["nowhere", 0, 0]
    elif what == "cycle":
        decoder["args"][0]["config"]["keras_history"] = ["per_step", 0, 0]
    elif what == "bad_history":
        decoder["args"][0]["config"]["keras_history"] = ["encoder", "zero", 0]
    elif what == "unknown_output":
        config["config"]["output_layers"] = [["ghost", 0, 0]]
    elif what == "missing_node":
        decoder["kwargs"]["initial_state"][0]["config"]["keras_history"] = ["encoder", 3, 1]
    elif what == "input_not_input":
        config["config"]["input_layers"] = [["encoder", 0, 0], ["decoder_in", 0, 0]]
    path = rewrite_keras(fixture("k3_seq2seq", "keras"), tmp_path / "g.keras", config)
    with pytest.raises(ModelFormatError, match=str(path)):
        rnnengine.load_keras(path)


def test_legacy_model_config_not_json(tmp_path):
    path = rewrite_h5_config(fixture("k2_sequential", "h5"), tmp_path / "m.h5", "{not json")
    with pytest.raises(ModelFormatError, match="model_config is not valid JSON"):
        rnnengine.load_keras(path)


# -- HDF5 datasets with wrong shapes, missing groups ----------------------------------------------


def test_wrong_dataset_shape_in_weights_h5(tmp_path):
    path = tmp_path / "w.weights.h5"
    path.write_bytes(fixture("k3_gru", "weights").read_bytes())
    replace_dataset(path, "layers/gru/cell/vars/1", np.ones((5, 12), "float32"))
    model = rnnengine.load_keras(fixture("k3_gru", "keras"))
    before = model.get_weights()
    with pytest.raises(ModelFormatError, match=r'layer "gru" \(GRU\) at layers/gru, recurrent_kernel: shape '
                                               r"\(5, 12\) in the file, but the layer needs \(5, 15\)"):
        model.load_weights(path)
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)


def test_wrong_dataset_shape_in_legacy_h5(tmp_path):
    path = tmp_path / "m.h5"
    path.write_bytes(fixture("k2_sequential", "h5").read_bytes())
    replace_dataset(path, "model_weights/dense/dense/kernel:0", np.ones((3, 3), "float32"))
    with pytest.raises(ModelFormatError, match=r'layer "dense", dense/kernel:0: shape \(3, 3\) in the file, but '
                                               r"the layer needs \(input_dim, 2\)"):
        rnnengine.load_keras(path)


def test_string_dataset_in_place_of_a_weight(tmp_path):
    path = tmp_path / "m.h5"
    path.write_bytes(fixture("k2_sequential", "h5").read_bytes())
    with h5py.File(path, "r+") as f:
        del f["model_weights/dense/dense/bias:0"]
        f["model_weights/dense/dense/bias:0"] = np.array([b"a", b"b"])
    with pytest.raises(ModelFormatError, match="not numbers"):
        rnnengine.load_keras(path)


def test_missing_weight_group(tmp_path):
    path = tmp_path / "m.h5"
    path.write_bytes(fixture("k3_seq2seq", "h5").read_bytes())
    with h5py.File(path, "r+") as f:
        del f["model_weights/decoder"]
    with pytest.raises(ModelFormatError, match=r'weights of layer "decoder" \(LSTM\): missing from the file'):
        rnnengine.load_keras(path)


def test_weights_of_another_model(tmp_path):
    model = rnnengine.load_keras(fixture("k3_gru", "keras"))
    with pytest.raises(ModelFormatError):
        model.load_weights(fixture("k3_simple_rnn", "weights"))
    with pytest.raises(ModelFormatError, match=r'weights of layer "lstm" in the file, for layer "gru" \(GRU\), '
                                               r"lstm/lstm_cell/kernel:0: shape \(3, 20\) in the file, but the "
                                               r"layer needs \(3, 15\)"):
        model.load_weights(fixture("k2_sequential", "legacy_weights"))
    with pytest.raises(ModelFormatError, match=r"the file has weights for 6 layers"):
        model.load_weights(fixture("k2_functional", "legacy_weights"))


# -- not Keras files ----------------------------------------------------------------------------


def test_not_keras_files(tmp_path):
    cases = {"empty.keras": b"", "text.h5": b"hello", "zip.keras": None, "data.h5": None}
    with zipfile.ZipFile(tmp_path / "zip.keras", "w") as zf:
        zf.writestr("something.txt", "x")
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["x"] = np.arange(3)
    for name, body in cases.items():
        if body is not None:
            (tmp_path / name).write_bytes(body)
        with pytest.raises(ModelFormatError, match=name):
            rnnengine.load_keras(tmp_path / name)
    with pytest.raises(ModelFormatError, match="holds weights only"):
        rnnengine.load_keras(fixture("k3_gru", "weights"))
    with pytest.raises(ModelFormatError, match="is a directory"):
        rnnengine.load_keras(tmp_path)
    with pytest.raises(FileNotFoundError):
        rnnengine.load_keras(tmp_path / "absent.keras")


# -- mutation fuzz ---------------------------------------------------------------------------------

_NONSENSE = [None, -1, 0, 1, 2 ** 40, 1e308, float("nan"), "", "x", [], {}, [None], True, False, 3.5,
             "float16", {"class_name": "__keras_tensor__", "config": {}}, [["ghost", 0, 0]]]


def _json_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_paths(v, prefix + (i,))


def _mutate_json(config, rnd):
    config = json.loads(json.dumps(config))
    paths = [p for p in _json_paths(config) if p]
    path = rnd.choice(paths)
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    if rnd.random() < 0.25 and isinstance(parent, dict):
        del parent[path[-1]]
    elif rnd.random() < 0.05:
        parent[path[-1]] = "__DEEP__"
    else:
        parent[path[-1]] = rnd.choice(_NONSENSE)
    return json.dumps(config).replace('"__DEEP__"', "[" * 5000 + "]" * 5000)


def _mutate_bytes(data, rnd):
    data = bytearray(data)
    how = rnd.choice(["truncate", "flip", "scramble"])
    if how == "truncate":
        return bytes(data[:rnd.randrange(len(data))])
    if how == "flip":
        for _ in range(rnd.randint(1, 16)):
            at = rnd.randrange(len(data))
            data[at] ^= 1 << rnd.randrange(8)
        return bytes(data)
    at = rnd.randrange(len(data))
    n = rnd.randint(1, 64)
    data[at:at + n] = bytes(rnd.randrange(256) for _ in range(n))
    return bytes(data[:len(data)])


def _mutate_h5_structure(path, rnd):
    with h5py.File(path, "r+") as f:
        datasets, groups = [], []
        f.visititems(lambda n, o: (datasets if isinstance(o, h5py.Dataset) else groups).append(n))
        how = rnd.choice(["reshape", "delete", "dtype", "attr"])
        if how == "attr" or not datasets:
            owner = f[rnd.choice(groups)] if groups and rnd.random() < 0.5 else f
            keys = list(owner.attrs)
            if keys:
                key = rnd.choice(keys)
                if key == "model_config" and rnd.random() < 0.7:
                    owner.attrs[key] = _mutate_json(json.loads(owner.attrs[key]), rnd)
                elif rnd.random() < 0.5:
                    del owner.attrs[key]
                else:
                    owner.attrs[key] = np.array([b"ghost", b"x"]) if rnd.random() < 0.5 else 7
            return
        name = rnd.choice(datasets)
        shape = f[name].shape
        del f[name]
        if how == "reshape":
            f[name] = np.ones(tuple(max(1, d + rnd.choice([-1, 1, 3])) for d in shape) or (2,), "float32")
        elif how == "dtype":
            f[name] = np.array([b"abc"] * 3)


def _make_cases(tmp_path, rnd, first, n):
    """Cases ``first`` .. ``first + n - 1``, written under ``tmp_path``; ``rnd``
    carries on from the previous batch, so a campaign's cases do not depend on
    how it is batched."""
    sources = [
        ("model", fixture("k3_lstm_stack", "keras"), None), ("model", fixture("k3_seq2seq", "keras"), None),
        ("model", fixture("k3_masking_gru", "h5"), None), ("model", fixture("k2_functional", "h5"), None),
        ("model", fixture("k2_sequential", "keras"), None),
        ("weights", fixture("k3_bidirectional", "weights"), fixture("k3_bidirectional", "h5")),
        ("weights", fixture("k2_sequential", "legacy_weights"), fixture("k2_sequential", "h5")),
    ]
    cases = []
    for i in range(first, first + n):
        kind, src, base = sources[i % len(sources)]
        dst = tmp_path / f"case{i:03d}{''.join(src.suffixes)}"
        data = src.read_bytes()
        mode = rnd.choice(["bytes", "structure", "structure"])
        if mode == "bytes":
            dst.write_bytes(_mutate_bytes(data, rnd))
        elif src.suffix == ".keras":
            with zipfile.ZipFile(src) as zf:
                config = json.loads(zf.read("config.json"))
                inner = zf.read("model.weights.h5")
            choice = rnd.choice(["json", "json", "drop", "inner_bytes", "inner_structure"])
            if choice == "json":
                rewrite_keras(src, dst, config=_mutate_json(config, rnd).encode())
            elif choice == "drop":
                rewrite_keras(src, dst, drop=(rnd.choice(["config.json", "model.weights.h5", "metadata.json"]),))
            elif choice == "inner_bytes":
                rewrite_keras(src, dst, members={"model.weights.h5": _mutate_bytes(inner, rnd)})
            else:
                tmp = tmp_path / f"inner{i}.h5"
                tmp.write_bytes(inner)
                _mutate_h5_structure(tmp, rnd)
                rewrite_keras(src, dst, members={"model.weights.h5": tmp.read_bytes()})
        else:
            dst.write_bytes(data)
            _mutate_h5_structure(dst, rnd)
        cases.append({"kind": kind, "path": str(dst), "base": str(base) if base else None})
    return cases


def _run_fuzz(cases_file, n, case_s=CASE_S):
    """Run the worker over every case; after a case that crashes it or gives no
    answer within ``case_s`` seconds, record that case and restart after it."""
    outcomes, start = {}, 0
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    stderr_path = Path(str(cases_file) + ".stderr")
    while start < n:
        with open(stderr_path, "w") as stderr:  # a file, not a pipe: an unread pipe can fill and block
            proc = subprocess.Popen([sys.executable, "-m", "tests.io.fuzz_worker", str(cases_file), str(start)],
                                    cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
            lines = queue.Queue()

            def pump(out=proc.stdout, lines=lines):
                for line in out:
                    lines.put(line)
                lines.put(None)

            threading.Thread(target=pump, daemon=True).start()
            last, died = None, None
            while True:
                try:
                    line = lines.get(timeout=case_s)  # the bound restarts with every line
                except queue.Empty:
                    proc.kill()
                    died = f"HANG: no answer within {case_s}s"
                    break
                if line is None:
                    code = proc.wait()
                    died = code != 0 and f"CRASH: exit status {code}"
                    break
                parts = line.split(" ", 2)
                if parts[0] == "START":
                    last = int(parts[1])
                elif parts[0] == "END":
                    outcomes[int(parts[1])] = parts[2].rstrip("\n")
                    last = None
            proc.wait()
            proc.stdout.close()
        if last is not None:  # crashed or hung on this case
            outcomes[last] = died
            start = last + 1
        elif died:
            raise AssertionError(f"fuzz worker failed outside any case: {died}\n{stderr_path.read_text()[-2000:]}")
        else:
            start = n
    return outcomes


def test_mutation_fuzz_never_crashes(tmp_path, say):
    """RNNENGINE_FILE_FUZZ_CASES (default 200) mutated files (bytes truncated,
    flipped or scrambled; zip members dropped; config fields set to nonsense;
    HDF5 datasets reshaped, retyped or deleted; attributes changed): each
    either loads or raises ModelFormatError / UnsupportedKerasFeature, in a
    worker process so that a crash or a hang (CASE_S per case) is caught and
    named. Files are made and run 500 at a time, then deleted."""
    n, batch = FILE_FUZZ_CASES, 500
    rnd = random.Random(SEED)
    cases, outcomes = [], {}
    for first in range(0, n, batch):
        folder = tmp_path / f"batch{first}"
        folder.mkdir()
        made = _make_cases(folder, rnd, first, min(batch, n - first))
        cases += made
        cases_file = folder / "cases.json"
        cases_file.write_text(json.dumps(made))
        for i, o in _run_fuzz(cases_file, len(made)).items():
            outcomes[first + i] = o
            if o not in ("OK", "ModelFormatError", "UnsupportedKerasFeature"):  # keep it to reproduce
                shutil.copy(made[i]["path"], tmp_path)
                cases[first + i]["path"] = str(tmp_path / Path(made[i]["path"]).name)
        shutil.rmtree(folder)
    kinds = Counter(o.split(":")[0] for o in outcomes.values())
    bad = {i: o for i, o in outcomes.items() if o not in ("OK", "ModelFormatError", "UnsupportedKerasFeature")}
    say(f"[file fuzz] seed {SEED}: {len(outcomes)} of {n} cases run: {dict(sorted(kinds.items()))}")
    assert len(outcomes) == n, f"only {len(outcomes)} of {n} cases ran"
    assert not bad, f"seed {SEED}:\n" + "\n".join(f"case {i} ({cases[i]['path']}): {o}"
                                                  for i, o in sorted(bad.items()))
    assert sum(o == "ModelFormatError" for o in outcomes.values()) > n // 2
