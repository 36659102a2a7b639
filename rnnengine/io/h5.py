"""HDF5 reading: legacy Keras ``.h5`` files, and the safe open/read that every
HDF5 path here goes through.

Legacy full-model files (``model.save("x.h5")``, Keras 2 and Keras 3's legacy
writer) hold the model config as JSON in the root attribute ``model_config``
and the weights under ``model_weights/``: one group per layer, named by the
layer, whose ``weight_names`` attribute lists its weights in ``get_weights()``
order, each a dataset at that path inside the group
(``model_weights/lstm/lstm/lstm_cell/kernel:0``). Legacy weights-only files
(tf.keras 2.x ``save_weights("x.h5")``) have the same layout at the root, with
``layer_names`` there. Attributes larger than HDF5's 64 KiB limit are split by
Keras into ``weight_names0``, ``weight_names1``, ...

Design: h5py is imported only here, lazily, and every h5py call sits behind
``_guard``: a corrupt file may raise almost anything from h5py (OSError,
KeyError, ValueError, RuntimeError, TypeError), and each becomes one
``ModelFormatError`` naming the file and what was being read. Datasets are
read whole into NumPy arrays, after their shape has been checked and their
size bounded by the file's size, so that a flipped bit in a header cannot
make us allocate terabytes.

Nothing outside the file is read: before anything else, ``Reader`` walks every
link of the file once (``check_self_contained``) and refuses external and soft
links, datasets with external storage or a virtual layout (each names another
file, ``/proc/self/environ`` as well as any, which a weight would then hand
back through ``predict``), and filters that are not HDF5's own (an unknown
filter makes libhdf5 load a plugin library from ``HDF5_PLUGIN_PATH``). Keras
writes none of these; Keras refuses external datasets too.
"""
import contextlib
import io
import json
import os

import numpy as np

from ..errors import ModelFormatError, UnsupportedKerasFeature

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(head):
    """Whether the first bytes of a file hold HDF5's signature (at 0, or after a
    user block of 512, 1024 or 2048 bytes)."""
    return any(head[k:k + 8] == HDF5_SIGNATURE for k in (0, 512, 1024, 2048))


@contextlib.contextmanager
def _guard(path, what):
    try:
        yield
    except (ModelFormatError, UnsupportedKerasFeature):
        raise
    except MemoryError:
        raise ModelFormatError(f"{path}: {what}: the file declares more data than fits in memory") from None
    except Exception as exc:  # h5py surfaces HDF5 errors as many types
        raise ModelFormatError(f"{path}: {what}: {type(exc).__name__}: {exc}") from exc


def open_file(source, path):
    """An h5py File for a path or a bytes buffer; ModelFormatError if unreadable."""
    import h5py

    with _guard(path, "not a readable HDF5 file"):
        if isinstance(source, (bytes, bytearray)):
            return h5py.File(io.BytesIO(source), "r")
        return h5py.File(source, "r")


# HDF5's own filters (deflate, shuffle, fletcher32, szip, nbit, scaleoffset)
# and h5py's built-in LZF: compiled in, no plugin is loaded for them.
_BUILTIN_FILTERS = {1, 2, 3, 4, 5, 6, 32000}
# More links than any Keras file has (a few per weight), few enough to walk in a second.
MAX_LINKS = 1_000_000


def check_self_contained(h5file, path):
    """``ModelFormatError`` naming the first link or dataset that reaches outside
    the file (see the module's docstring); one walk over every link, iterative
    in libhdf5 (H5Lvisit follows hard links only, never a soft or external one)."""
    from h5py import h5d, h5l, h5o

    found = []

    def visit(name, info):
        found.append(1)
        text = name_text(name)
        if len(found) > MAX_LINKS:
            return f"more than {MAX_LINKS} links: not a Keras file"
        if info.type == h5l.TYPE_EXTERNAL:
            return f"{text} is an external link (to another file): not allowed in a model file"
        if info.type != h5l.TYPE_HARD:
            return f"{text} is a soft or user-defined link: not allowed in a model file"
        obj_info = h5o.get_info(h5file.id, name)
        if obj_info.type != h5o.TYPE_DATASET:
            return None
        dcpl = h5d.open(h5file.id, name).get_create_plist()
        if dcpl.get_external_count():
            return f"dataset {text} has external storage (its data in another file): not allowed in a model file"
        if dcpl.get_layout() == h5d.VIRTUAL:
            return f"dataset {text} is a virtual dataset (mapping other files): not allowed in a model file"
        for k in range(dcpl.get_nfilters()):
            code = dcpl.get_filter(k)[0]
            if code not in _BUILTIN_FILTERS:
                return (f"dataset {text} uses HDF5 filter {code}, which is not built in (it would load a "
                        "plugin library): not allowed in a model file")
        return None

    with _guard(path, "checking the file's links and datasets"):
        problem = h5file.id.links.visit(visit, info=True)
    if problem is not None:
        raise ModelFormatError(f"{path}: {problem}")


class Reader:
    """Bounded, guarded reads from one open HDF5 file, once it has been checked
    to read nothing outside itself."""

    def __init__(self, h5file, path, size_limit):
        check_self_contained(h5file, path)
        self.file = h5file
        self.path = path
        # No dataset of a Keras file is larger than the file itself (Keras writes
        # uncompressed); 64 MiB of slack covers HDF5 fill values in tiny files.
        self.size_limit = size_limit + 64 * 2 ** 20

    def guard(self, what):
        return _guard(self.path, what)

    def group(self, parent, name, what):
        with self.guard(what):
            if name not in parent:
                return None
            obj = parent[name]
            import h5py

            if not isinstance(obj, h5py.Group):
                raise ModelFormatError(f"{self.path}: {what}: {obj.name} is not a group")
            return obj

    def dataset(self, parent, name, what, expected=None):
        """The array at ``parent[name]``; checks ``expected`` (None = any size) first."""
        import h5py

        from .weight_table import format_shape, shape_matches

        with self.guard(what):
            if name not in parent:
                raise ModelFormatError(f"{self.path}: {what}: no dataset {name!r} in {parent.name}")
            ds = parent[name]
            if not isinstance(ds, h5py.Dataset):
                raise ModelFormatError(f"{self.path}: {what}: {ds.name} is not a dataset")
            if ds.dtype.kind not in "fiu":
                raise ModelFormatError(f"{self.path}: {what}: {ds.name} holds {ds.dtype}, not numbers")
            shape = tuple(int(d) for d in ds.shape)
            if expected is not None and not shape_matches(expected, shape):
                raise ModelFormatError(
                    f"{self.path}: {what}: shape {shape} in the file, but the layer needs "
                    f"{format_shape(expected)}"
                )
            nbytes = int(np.prod(shape, dtype=np.float64)) * ds.dtype.itemsize
            if nbytes > self.size_limit:
                raise ModelFormatError(f"{self.path}: {what}: {ds.name} declares {nbytes} bytes, more than "
                                       "the file holds")
            return np.asarray(ds[()])

    def attr(self, obj, name, what):
        with self.guard(what):
            return obj.attrs.get(name)

    def strings(self, obj, name, what):
        """A list-of-strings attribute, joined from Keras's chunks (name0, name1, ...)."""
        with self.guard(what):
            if name in obj.attrs:
                values = list(_as_list(obj.attrs[name]))
            else:
                values, k = [], 0
                while f"{name}{k}" in obj.attrs:
                    values += list(_as_list(obj.attrs[f"{name}{k}"]))
                    k += 1
                if k == 0:
                    return None
            out = []
            for v in values:
                if isinstance(v, bytes):
                    v = v.decode("utf8")
                if not isinstance(v, str):
                    raise ModelFormatError(f"{self.path}: {what}: attribute {name} holds {type(v).__name__}")
                out.append(v)
            return out


def _as_list(value):
    if isinstance(value, np.ndarray):
        return [] if value.size == 0 else list(value.reshape(-1))
    return [value]


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf8")
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "OSU":
        return _text(value[()])
    return value if isinstance(value, str) else None


def name_text(name):
    """An HDF5 link name as text. h5py gives a name that is not valid UTF-8 (a
    corrupt file) as bytes; decoded with replacement characters, it can be
    compared with expected names and shown in a message."""
    return name.decode("utf8", errors="replace") if isinstance(name, bytes) else name


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def legacy_model_config(reader):
    """(config dict, keras_version string) of a legacy full-model file, or None."""
    raw = reader.attr(reader.file, "model_config", "reading model_config")
    if raw is None:
        return None
    text = _text(raw)
    if text is None:
        raise ModelFormatError(f"{reader.path}: model_config is not a JSON string")
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ModelFormatError(f"{reader.path}: model_config is not valid JSON: {exc}") from None
    version = _text(reader.attr(reader.file, "keras_version", "reading keras_version"))
    if version is None:
        weights = reader.group(reader.file, "model_weights", "reading model_weights")
        if weights is not None:
            version = _text(reader.attr(weights, "keras_version", "reading keras_version"))
    return config, version


def legacy_weights_root(reader):
    """The group holding per-layer weight groups: model_weights/ or the root."""
    group = reader.group(reader.file, "model_weights", "reading model_weights")
    if group is not None:
        return group
    if reader.strings(reader.file, "layer_names", "reading layer_names") is not None:
        return reader.file
    return None


def legacy_layer_weights(reader, root, layer_name, expected=None, label=None):
    """[(weight_name, array)] of one layer in a legacy layout, in weight_names order.

    ``expected``: [(name, path, shape)] from the weight table, checked by count
    and shape as each dataset is read. Returns None if the file has no group
    for the layer.
    """
    what = label or f'weights of layer "{layer_name}"'
    group = reader.group(root, layer_name, what)
    if group is None:
        return None
    names = reader.strings(group, "weight_names", what)
    if names is None:
        raise ModelFormatError(f"{reader.path}: {what}: group has no weight_names attribute")
    if expected is not None and len(names) != len(expected):
        raise ModelFormatError(
            f"{reader.path}: {what}: the file has {len(names)} weights ({', '.join(names) or 'none'}), "
            f"the layer's config implies {len(expected)} ({', '.join(n for n, _, _ in expected) or 'none'})"
        )
    out = []
    for k, name in enumerate(names):
        shape = expected[k][2] if expected is not None else None
        out.append((name, reader.dataset(group, name, f"{what}, {name}", shape)))
    return out


def legacy_layer_names(reader, root):
    names = reader.strings(root, "layer_names", "reading layer_names")
    if names is None:
        with reader.guard("listing layer groups"):
            names = list(root.keys())
        for n in names:
            if isinstance(n, bytes):  # h5py's way of giving a name that is not UTF-8
                raise ModelFormatError(f"{reader.path}: the layer group name {name_text(n)!r} is not UTF-8 text")
    return [n for n in names if n != "top_level_model_weights"]


def raw_param_counts(reader, root, names):
    """{layer name: number of values its weight_names list} in a legacy layout."""
    counts = {}
    for name in names:
        group = reader.group(root, name, f'weights of layer "{name}"')
        total = 0
        if group is not None:
            for wname in reader.strings(group, "weight_names", f'weights of layer "{name}"') or []:
                with reader.guard(f'weights of layer "{name}"'):
                    total += int(group[wname].size) if wname in group else 0
        counts[name] = total
    return counts
