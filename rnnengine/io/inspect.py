"""``rnnengine inspect PATH``: what a Keras model file holds, and whether rnnengine runs it.

Prints the file's format and Keras version, a table of layers (name, class,
output shape, parameter count), whether every part is supported (listing
what is not, without raising), and, for a supported model, a quick latency
figure: the median of a few ``predict`` calls on random input of batch 1 (a
stateful model's fixed batch size, if it has one).
"""
import statistics
import sys
import time

import numpy as np

from .. import _validation
from ..errors import ModelFormatError, UnsupportedKerasFeature
from . import assemble, loader

_DEFAULT_T = 20  # timesteps used where the model leaves the sequence length free
_CALLS = 20


def _print_table(rows, out):
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        out(row[0].ljust(widths[0]) + row[1].ljust(widths[1]) + row[2].rjust(widths[2]))
        if k == 0:
            out("=" * sum(widths))


def _model_rows(model):
    rows = [("Layer (type)", "Output Shape", "Param #")]
    if hasattr(model, "_summary_rows"):
        items = list(model._summary_rows())
    else:
        items = []
        shape = model.input_shape[1:]
        for layer in model.layers:
            shape = layer._node_output_shapes([shape])[0]
            items.append((layer, [shape]))
    for layer, shapes in items:
        text = ", ".join(_validation.format_shape((None,) + tuple(s)) for s in shapes)
        rows.append((f"{layer.name} ({type(layer).__name__})", text, f"{layer.count_params():,}"))
    return rows


def _spec_rows(mf):
    """Rows for a model rnnengine cannot build: output shapes unknown, parameter
    counts as stored in the file."""
    rows = [("Layer (type)", "Output Shape", "Param #")]
    for ls in mf.spec.layers:
        if ls.is_op:
            continue
        count = 0 if ls.is_input else mf.raw_counts.get(ls.name)
        rows.append((f"{ls.name} ({ls.keras_class})", "?", "?" if count is None else f"{count:,}"))
    return rows


def _random_inputs(model, rng):
    arrays = []
    tensors = model.inputs if hasattr(model, "inputs") else None
    if tensors is None:  # Sequential
        shapes = [model.input_shape[1:]]
        dtypes = [np.dtype(model._first_dtype)]
        batch = model._declared_input()[1]
    else:
        shapes = [t.shape[1:] for t in tensors]
        dtypes = [np.dtype(model._input_dtype(t)) for t in tensors]
        batch = tensors[0].shape[0]
    batch = batch or 1  # a stateful model's fixed batch size, else 1
    for shape, dtype in zip(shapes, dtypes):
        shape = (batch,) + tuple(_DEFAULT_T if d is None else d for d in shape)
        if dtype.kind in "iub":  # token ids for an Embedding: 0 and 1 exist in any vocabulary
            arrays.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays[0] if tensors is None or len(arrays) == 1 else arrays


def _latency(model):
    rng = np.random.default_rng(0)
    x = _random_inputs(model, rng)
    model.predict(x)  # the first call builds workspaces (and compiles Numba kernels if not cached)
    times = []
    for _ in range(_CALLS):
        start = time.perf_counter()
        model.predict(x)
        times.append(time.perf_counter() - start)
    model.reset_states()
    shapes = [a.shape for a in (x if isinstance(x, list) else [x])]
    return statistics.median(times), shapes


def inspect_main(path, out=None):
    """Print what the Keras model file at ``path`` holds; return an exit code.

    0: supported and loaded; 1: the file is a Keras model with unsupported
    parts (listed); 2: the file cannot be read as a Keras model.
    """
    out = out or print
    try:
        mf = loader.read_model_file(path, strict=False)
    except (ModelFormatError, UnsupportedKerasFeature) as exc:
        out(f"error: {exc}")
        return 2
    except OSError as exc:
        out(f"error: {path}: {exc.strerror or exc}")
        return 2
    spec = mf.spec
    version = mf.keras_version or f"{spec.keras_major}.x (no version recorded)"
    out(f"File: {mf.path}")
    out(f"Format: {mf.format}, written by Keras {version}")
    out(f'Model: "{spec.name}" ({spec.kind})')
    if spec.issues:
        _print_table(_spec_rows(mf), out)
        if mf.raw_counts:
            out(f" Total params: {sum(mf.raw_counts.values()):,}")
        out("")
        out(f"Supported: no. {len(spec.issues)} unsupported feature{'s' if len(spec.issues) != 1 else ''}:")
        for issue in spec.issues:
            out(f"  - {issue}")
        return 1
    try:
        model = assemble.build_model(spec, mf.weights, mf.path)
    except ModelFormatError as exc:
        out(f"error: {exc}")
        return 2
    _print_table(_model_rows(model), out)
    total = model.count_params()
    out(f" Total params: {total:,}")
    out("")
    out("Supported: yes, every layer and option.")
    try:
        median, shapes = _latency(model)
    except (ValueError, TypeError, MemoryError) as exc:
        out(f"Latency: not measured ({exc})")
        return 0
    shown = ", ".join(_validation.format_shape(s) for s in shapes)
    out(f"Latency: {median * 1e3:.3f} ms median of {_CALLS} predict calls, input {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(inspect_main(sys.argv[1]))
