"""Keras 3 ``.keras`` archives, and the Keras 3 weights layout they share with
``.weights.h5`` files.

A ``.keras`` file is a zip of ``config.json`` (the model config),
``metadata.json`` (``{"keras_version": ...}``) and ``model.weights.h5``. tf_keras
(Keras 2) writes the same archive with a Keras 2 style config.

In the weights file, variables are grouped by the *class* of each layer, not
by its name: ``layers/<key>/...`` where ``<key>`` is the layer's class in
snake case, numbered among the model's layers of the same class in
``model.layers`` order (``lstm``, ``lstm_1``, ...; ``model.layers`` excludes a
Sequential's InputLayer and includes a functional model's). Inside, a layer's
own variables are ``vars/0``, ``vars/1``, ... (sort numerically: HDF5 lists
``0, 1, 10, 2``); a recurrent layer keeps them in ``cell/vars``, Bidirectional
in ``forward_layer/`` and ``backward_layer/``, TimeDistributed in ``layer/``
(see ``weight_table``). Top-level groups other than ``layers`` (``optimizer``,
metrics) are training state and are skipped.
"""
import json
import re
import zipfile
import zlib

from ..errors import ModelFormatError, UnsupportedKerasFeature
from . import h5

CONFIG = "config.json"
METADATA = "metadata.json"
WEIGHTS = "model.weights.h5"

# Generous bounds: a config is a few kB; weights are bounded by the archive.
_MAX_CONFIG_BYTES = 64 * 2 ** 20
_MAX_RATIO = 1000  # a member decompressing to more than 1000x its stored size is a zip bomb


def is_zip(head):
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def to_snake_case(name):
    """Keras 3's ``naming.to_snake_case``: ``SimpleRNN`` -> ``simple_rnn``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def layer_keys(class_names):
    """The ``layers/<key>`` of each layer, given the classes in ``model.layers`` order."""
    used, keys = {}, []
    for cls in class_names:
        base = to_snake_case(cls)
        if base in used:
            used[base] += 1
            keys.append(f"{base}_{used[base]}")
        else:
            used[base] = 0
            keys.append(base)
    return keys


def _read_member(zf, info, path, limit):
    if info.file_size > limit:
        raise ModelFormatError(f"{path}: {info.filename} is {info.file_size} bytes, larger than a Keras file holds")
    if info.compress_size and info.file_size > _MAX_RATIO * info.compress_size + 2 ** 20:
        raise ModelFormatError(f"{path}: {info.filename} decompresses to {info.file_size} bytes from "
                               f"{info.compress_size}: not a Keras archive")
    with zf.open(info) as f:
        data = f.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise ModelFormatError(f"{path}: {info.filename} holds {len(data)} bytes, the archive says {info.file_size}")
    return data


def read_archive(path, archive_size):
    """(config dict, keras_version or None, weights bytes or None) of a ``.keras`` file."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = {info.filename: info for info in zf.infolist()}
            if CONFIG not in members:
                raise ModelFormatError(f"{path}: the archive has no {CONFIG}: not a Keras model "
                                       f"(it holds {sorted(members)[:5]})")
            config_bytes = _read_member(zf, members[CONFIG], path, _MAX_CONFIG_BYTES)
            metadata_bytes = _read_member(zf, members[METADATA], path, _MAX_CONFIG_BYTES) \
                if METADATA in members else None
            weights = None
            if WEIGHTS in members:
                weights = _read_member(zf, members[WEIGHTS], path, max(archive_size, 1) * _MAX_RATIO)
            elif "model.weights.npz" in members or "model.weights.json" in members:
                raise UnsupportedKerasFeature(
                    f"{path}: the model's weights are stored as "
                    f"{'model.weights.npz' if 'model.weights.npz' in members else 'sharded files'}; "
                    "rnnengine reads model.weights.h5 (Keras's default)"
                )
    except (ModelFormatError, UnsupportedKerasFeature):
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
            RuntimeError, KeyError, OverflowError) as exc:
        raise ModelFormatError(f"{path}: not a readable .keras archive: {type(exc).__name__}: {exc}") from None
    config = _json(config_bytes, path, CONFIG)
    version = None
    if metadata_bytes is not None:
        metadata = _json(metadata_bytes, path, METADATA)
        if isinstance(metadata, dict) and isinstance(metadata.get("keras_version"), str):
            version = metadata["keras_version"]
    return config, version, weights


def _json(data, path, member):
    try:
        return json.loads(data.decode("utf8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelFormatError(f"{path}: {member} is not valid JSON: {exc}") from None


def is_v3_weights(reader):
    """Whether an open HDF5 file has the Keras 3 weights layout."""
    with reader.guard("reading the weights layout"):
        return "layers" in reader.file or ("vars" in reader.file and "layer_names" not in reader.file.attrs)


def _dataset_paths(reader, group, what):
    """Every dataset under ``group``, as paths relative to it."""
    import h5py

    found = []
    with reader.guard(what):
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                found.append(h5.name_text(name))
        group.visititems(visit)
    return found


def read_weights(reader, layers):
    """{layer name: [(keras weight name, array)]} from a Keras 3 weights file.

    ``layers``: (name, keras class, expected) for every layer in ``model.layers``
    order, ``expected`` being the weight table's [(name, path, shape)].
    """
    root = reader.group(reader.file, "layers", "reading layers/")
    keys = layer_keys([cls for _, cls, _ in layers])
    out = {}
    known = set()
    for (name, cls, expected), key in zip(layers, keys):
        known.add(key)
        what = f'weights of layer "{name}" ({cls}) at layers/{key}'
        group = reader.group(root, key, what) if root is not None else None
        if group is None:
            if expected:
                raise ModelFormatError(f"{reader.path}: {what}: missing from the weights file")
            continue
        present = set(_dataset_paths(reader, group, what))
        wanted = {p for _, p, _ in expected}
        extra = sorted(present - wanted)
        if extra:
            raise ModelFormatError(
                f"{reader.path}: {what}: the file has variables the layer's config does not: "
                f"{', '.join(extra[:6])}" + (" ..." if len(extra) > 6 else "")
            )
        arrays = []
        for wname, wpath, shape in expected:
            if wpath not in present:
                raise ModelFormatError(f"{reader.path}: {what}: no {wname} (expected at layers/{key}/{wpath})")
            parent, leaf = wpath.rsplit("/", 1)
            with reader.guard(what):
                parent_group = group[parent]
            arrays.append((wname, reader.dataset(parent_group, leaf, f"{what}, {wname}", shape)))
        out[name] = arrays
    if root is not None:
        with reader.guard("listing layers/"):
            stray = [k for k in root.keys() if k not in known]
        for key in stray:
            text = h5.name_text(key)
            with reader.guard(f"reading layers/{text}"):
                stray_group = root[key]
            if _dataset_paths(reader, stray_group, f"layers/{text}"):
                raise ModelFormatError(
                    f"{reader.path}: the weights file has weights for layers/{text}, which the model does "
                    "not have: it was saved from a different model"
                )
    return out


def raw_param_counts(reader, layers):
    """{layer name: number of values stored for it}, for ``(name, class)`` in
    ``model.layers`` order, without interpreting them (``rnnengine inspect``)."""
    import h5py

    root = reader.group(reader.file, "layers", "reading layers/")
    counts = {}
    for (name, _), key in zip(layers, layer_keys([cls for _, cls in layers])):
        group = reader.group(root, key, f"layers/{key}") if root is not None else None
        total = 0
        if group is not None:
            with reader.guard(f"layers/{key}"):
                def visit(_, obj):
                    nonlocal total
                    if isinstance(obj, h5py.Dataset):
                        total += int(obj.size)
                group.visititems(visit)
        counts[name] = total
    return counts
