"""``load_keras`` and ``load_weights``: which file is it, and read it whole.

A file is recognised by its first bytes, not its name: a zip is a ``.keras``
archive (Keras 3, or tf_keras's), HDF5 is a legacy ``.h5`` model or a weights
file (Keras 3 ``.weights.h5`` layout, or the legacy layout). Anything else is
a ``ModelFormatError``. The whole file is read (config translated, unsupported
features collected, weights read and shape-checked) before the model is
built, and the file is closed before building starts.
"""
import contextlib
import json
import os
import re

import numpy as np

from ..errors import ModelFormatError, UnsupportedKerasFeature
from . import assemble, h5, keras_v3, translate, weight_table

_HEAD_BYTES = 4096


class ModelFile:
    """What one model file holds, read: its spec, weights and a description."""

    def __init__(self, path, spec, weights, keras_version, fmt):
        self.path = path
        self.spec = spec
        self.weights = weights  # {layer name: [(weight name, array)]}, or None if unsupported
        self.keras_version = keras_version
        self.format = fmt
        self.raw_counts = {}  # unsupported models: {layer name: values stored}, for inspect


def _layer_classes(spec):
    return [(ls.name, ls.keras_class) for ls in spec.layers
            if not (spec.kind == "sequential" and ls.is_input) and not ls.is_op]


def _head(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            raise UnsupportedKerasFeature(
                f"{path}: TensorFlow SavedModel directories are not supported; save the model with "
                "model.save('model.keras') (Keras 3) or model.save('model.h5')"
            )
        raise ModelFormatError(f"{path}: is a directory, not a Keras model file")
    with open(path, "rb") as f:  # FileNotFoundError / PermissionError pass through as they are
        return f.read(_HEAD_BYTES)


def keras_major(version, config_text):
    """2 or 3 from a keras_version string; from the config's style if there is none."""
    if isinstance(version, str):
        m = re.match(r"\s*(\d+)\.", version)
        if m:
            return int(m.group(1))
    markers = ("__keras_tensor__", '"batch_shape"', "DTypePolicy")
    return 3 if any(m in config_text for m in markers) else 2


def _spec(config, version, path):
    try:
        text = json.dumps(config)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ModelFormatError(f"{path}: the model config cannot be read: {exc}") from None
    major = keras_major(version, text)
    if major < 2:
        raise UnsupportedKerasFeature(f"{path}: files written by Keras {version} are not supported "
                                      "(Keras 2 and Keras 3 are)")
    try:
        return translate.model_spec(config, major, path)
    except RecursionError:
        raise ModelFormatError(f"{path}: the model config is nested too deeply") from None


def unsupported_error(where, issues):
    lines = "\n".join(f"  - {issue}" for issue in issues)
    exc = UnsupportedKerasFeature(
        f"{where}: the model uses {len(issues)} Keras feature{'s' if len(issues) != 1 else ''} "
        f"rnnengine does not support:\n{lines}"
    )
    exc.issues = list(issues)
    return exc


def _weight_entries(spec):
    """(name, class, expected weights) for ``model.layers`` in Keras's order."""
    # keras.ops operations are not layers: Keras 3's model.layers leaves them out.
    layers = [ls for ls in spec.layers if not (spec.kind == "sequential" and ls.is_input) and not ls.is_op]
    return [(ls.name, ls.keras_class,
             weight_table.expected_weights(ls) if ls.rn_class is not None and not ls.is_input else [])
            for ls in layers]


def _read_legacy_weights(reader, root, spec):
    out = {}
    for name, cls, expected in _weight_entries(spec):
        if not expected:
            continue
        arrays = h5.legacy_layer_weights(reader, root, name, expected)
        if arrays is None:
            raise ModelFormatError(f'{reader.path}: weights of layer "{name}" ({cls}): missing from the file')
        out[name] = arrays
    return out


def read_model_file(path, strict=True):
    """A ``ModelFile``; with ``strict`` an unsupported model raises, else its
    weights are not read and ``spec.issues`` lists what is unsupported."""
    head = _head(path)
    path = os.fspath(path)
    if keras_v3.is_zip(head):
        config, version, weights_bytes = keras_v3.read_archive(path, h5.file_size(path))
        spec = _spec(config, version, path)
        fmt = ".keras archive"
        if spec.issues:
            if strict:
                raise unsupported_error(path, spec.issues)
            mf = ModelFile(path, spec, None, version, fmt)
            if weights_bytes is not None:
                f = h5.open_file(bytes(weights_bytes), f"{path}/{keras_v3.WEIGHTS}")
                try:
                    reader = h5.Reader(f, f"{path}/{keras_v3.WEIGHTS}", len(weights_bytes))
                    mf.raw_counts = keras_v3.raw_param_counts(reader, _layer_classes(spec))
                finally:
                    f.close()
            return mf
        entries = _weight_entries(spec)
        if weights_bytes is None:
            if any(expected for _, _, expected in entries):
                raise ModelFormatError(f"{path}: the archive has no {keras_v3.WEIGHTS}")
            return ModelFile(path, spec, {}, version, fmt)
        f = h5.open_file(bytes(weights_bytes), f"{path}/{keras_v3.WEIGHTS}")
        try:
            reader = h5.Reader(f, f"{path}/{keras_v3.WEIGHTS}", len(weights_bytes))
            weights = keras_v3.read_weights(reader, entries)
        finally:
            f.close()
        return ModelFile(path, spec, weights, version, fmt)
    if h5.is_hdf5(head):
        f = h5.open_file(path, path)
        try:
            reader = h5.Reader(f, path, h5.file_size(path))
            found = h5.legacy_model_config(reader)
            if found is None:
                if keras_v3.is_v3_weights(reader) or h5.legacy_weights_root(reader) is not None:
                    raise ModelFormatError(
                        f"{path}: holds weights only (no model config): build the model and call "
                        "rnnengine.io.load_weights(model, path), or model.load_weights(path)"
                    )
                raise ModelFormatError(f"{path}: an HDF5 file, but not a Keras model (no model_config attribute)")
            config, version = found
            spec = _spec(config, version, path)
            fmt = "legacy HDF5 model"
            if spec.issues:
                if strict:
                    raise unsupported_error(path, spec.issues)
                mf = ModelFile(path, spec, None, version, fmt)
                root = h5.legacy_weights_root(reader)
                if root is not None:
                    mf.raw_counts = h5.raw_param_counts(reader, root, [n for n, _ in _layer_classes(spec)])
                return mf
            root = h5.legacy_weights_root(reader)
            if root is None:
                if any(expected for _, _, expected in _weight_entries(spec)):
                    raise ModelFormatError(f"{path}: the file has no model_weights group")
                return ModelFile(path, spec, {}, version, fmt)
            weights = _read_legacy_weights(reader, root, spec)
        finally:
            f.close()
        return ModelFile(path, spec, weights, version, fmt)
    raise ModelFormatError(f"{path}: not a Keras model file (neither a .keras zip archive nor HDF5)")


def load_keras(path):
    """Load a Keras model file into an rnnengine model, without TensorFlow.

    Parameters
    ----------
    path : str or os.PathLike
        A Keras 3 ``.keras`` archive (tf_keras's too), or a legacy HDF5 model
        (``model.save("x.h5")`` from Keras 3, tf.keras 2.x or Keras 2).

    Returns
    -------
    rnnengine.models.Sequential or rnnengine.models.Model
        Built, with the file's weights, ready to ``predict``.

    Raises
    ------
    UnsupportedKerasFeature
        The model uses layers or options rnnengine does not run; the message
        lists every one, by layer name and class (``.issues`` has the list).
    ModelFormatError
        The file is truncated, corrupt, not a Keras model, or its weights do
        not fit its config; the message names the file and the problem.
    """
    mf = read_model_file(path)
    return assemble.build_model(mf.spec, mf.weights, mf.path)


# -- load_weights ----------------------------------------------------------------------------


def _layer_spec(layer):
    """A LayerSpec describing an rnnengine layer, for the weight table."""
    cls = type(layer).__name__
    ls = translate.LayerSpec(layer.name, cls, cls, cls)
    for key in ("units", "use_bias", "reset_after", "input_dim", "output_dim"):
        if hasattr(layer, key):
            ls.kwargs[key] = getattr(layer, key)
    if cls == "Bidirectional":
        ls.children = {"layer": _layer_spec(layer.forward_layer), "backward_layer": _layer_spec(layer.backward_layer)}
    elif cls == "TimeDistributed":
        ls.children = {"layer": _layer_spec(layer.layer)}
    return ls


def _model_entries(model):
    """(name, class, [(weight name, keras 3 path, exact shape)]) for ``model.layers``."""
    entries = []
    for layer in model.layers:
        cls = type(layer).__name__
        actual = [tuple(w.shape) for w in layer.get_weights()]
        table = weight_table.expected_weights(_layer_spec(layer)) if cls != "InputLayer" else []
        if len(table) != len(actual):
            raise UnsupportedKerasFeature(
                f'load_weights: layer "{layer.name}" ({cls}) has {len(actual)} weights, but rnnengine has no '
                "Keras weight mapping for them"
            )
        entries.append((layer.name, cls, [(n, p, shape) for (n, p, _), shape in zip(table, actual)]))
    return entries


def load_weights(model, path):
    """Load Keras weights from ``path`` into the rnnengine ``model``, in place.

    Reads Keras 3 ``.weights.h5`` files (and the weights inside a ``.keras``
    archive) by Keras 3's layout: layers matched by class and position, as
    Keras does. Reads legacy HDF5 weights (tf.keras 2.x ``save_weights("x.h5")``,
    or a legacy full-model ``.h5``) by the order of the layers that have
    weights, as Keras's legacy loader does. Every weight's shape is checked
    before any is changed: on error the model keeps its old weights.

    Raises ``ModelFormatError`` naming the file, the layer and both shapes.
    """
    if hasattr(model, "_ensure_built") and not getattr(model, "built", True):
        model._ensure_built()
    entries = _model_entries(model)
    head = _head(path)
    path = os.fspath(path)
    if keras_v3.is_zip(head):
        _, _, data = keras_v3.read_archive(path, h5.file_size(path))
        if data is None:
            raise ModelFormatError(f"{path}: the archive has no {keras_v3.WEIGHTS}")
        where = f"{path}/{keras_v3.WEIGHTS}"
        f, size = h5.open_file(bytes(data), where), len(data)
    elif h5.is_hdf5(head):
        where = path
        f, size = h5.open_file(path, path), h5.file_size(path)
    else:
        raise ModelFormatError(f"{path}: not a Keras weights file (neither HDF5 nor a .keras archive)")
    try:
        reader = h5.Reader(f, where, size)
        if keras_v3.is_v3_weights(reader):
            weights = keras_v3.read_weights(reader, entries)
        else:
            root = h5.legacy_weights_root(reader)
            if root is None:
                raise ModelFormatError(f"{where}: an HDF5 file, but not Keras weights (no layers/ group, "
                                       "no layer_names)")
            weights = _legacy_by_order(reader, root, entries)
    finally:
        f.close()
    layers = {layer.name: layer for layer in model.layers}
    for name, _, expected in entries:  # every shape checked before anything changes
        for (wname, _, shape), (file_name, array) in zip(expected, weights.get(name, [])):
            if tuple(array.shape) != tuple(shape):
                raise ModelFormatError(f'{where}: layer "{name}": weight {wname} ({file_name}) has shape '
                                       f"{tuple(array.shape)} in the file, {tuple(shape)} in the model")
    # Converted and checked first, then swapped under the model's weights lock,
    # as model.set_weights does: a concurrent predict sees all old or all new.
    chunks = [(layers[name], layers[name]._checked_weights([np.asarray(a) for _, a in weights[name]]))
              for name, _, expected in entries if expected]
    with getattr(model, "_weights_lock", None) or contextlib.nullcontext():
        for layer, chunk in chunks:
            layer.set_weights(chunk)


def _legacy_by_order(reader, root, entries):
    """Keras's legacy rule: the file's layers that have weights, in order, onto
    the model's layers that have weights, in order."""
    file_layers = []
    for name in h5.legacy_layer_names(reader, root):
        group = reader.group(root, name, f'weights of layer "{name}"')
        if group is None:
            raise ModelFormatError(f'{reader.path}: layer_names lists "{name}", which has no group')
        if reader.strings(group, "weight_names", f'weights of layer "{name}"'):
            file_layers.append(name)
    model_layers = [e for e in entries if e[2]]
    if len(file_layers) != len(model_layers):
        raise ModelFormatError(
            f"{reader.path}: the file has weights for {len(file_layers)} layers ({', '.join(file_layers)}), "
            f"the model has {len(model_layers)} layers with weights ({', '.join(e[0] for e in model_layers)})"
        )
    out = {}
    for file_name, (name, cls, expected) in zip(file_layers, model_layers):
        label = f'weights of layer "{file_name}" in the file, for layer "{name}" ({cls})'
        out[name] = h5.legacy_layer_weights(reader, root, file_name, expected, label)
    return out
