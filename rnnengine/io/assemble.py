"""ModelSpec + weights -> a built rnnengine model, or ModelFormatError.

Called only after translation found nothing unsupported. Every weight is
checked against the weight table (count and shape) before any layer is
constructed, so a config whose numbers do not fit its weights fails before
anything is allocated from those numbers. Layers are constructed with their
Keras arguments, wired as a ``Sequential`` or a functional ``Model``
(``layer(x, initial_state=[...])``, ``Concatenate()([a, b])``), then given the
file's weights with ``set_weights``, which checks each shape once more against
the built layer (that is where ``input_dim`` is known). Any constructor or
wiring error becomes a ``ModelFormatError`` naming the file and the layer; the
half-built model is dropped, never returned.
"""
import numpy as np

from .. import layers as rlayers
from ..errors import ModelFormatError
from . import translate, weight_table

class _FileBoundZeros:
    """The initializer loaded layers are built with. Initial values are never used
    (every weight comes from the file), so: zeros, with no orthogonal QR and no
    random draws for a large model; and never larger than the largest weight in
    the file, so that a config whose shapes are nonsense fails here instead of
    allocating what it asks for."""

    def __init__(self, limit, where):
        self.limit = limit
        self.where = where

    def __call__(self, shape, dtype="float32"):
        size = 1
        for d in shape:
            size *= int(d)
        if size > self.limit:
            raise ValueError(f"the config asks for a weight of shape {tuple(shape)}, larger than any weight "
                             "in the file")
        return np.zeros(shape, dtype=dtype)


_ZERO_INIT = {
    "SimpleRNN": ("kernel_initializer", "recurrent_initializer", "bias_initializer"),
    "LSTM": ("kernel_initializer", "recurrent_initializer", "bias_initializer"),
    "GRU": ("kernel_initializer", "recurrent_initializer", "bias_initializer"),
    "Dense": ("kernel_initializer", "bias_initializer"),
    "Embedding": ("embeddings_initializer",),
}

_CONSTRUCTION_ERRORS = (ValueError, TypeError, OverflowError, MemoryError, KeyError, IndexError)


def check_weights(spec, weights, where):
    """Count and shape of every layer's weights against the weight table."""
    for ls in spec.layers:
        if ls.is_input or ls.is_op:
            continue
        expected = weight_table.expected_weights(ls)
        got = weights.get(ls.name, [])
        label = f'layer "{ls.name}" ({ls.keras_class})'
        if len(got) != len(expected):
            raise ModelFormatError(
                f"{where}: {label} has {len(got)} weights in the file "
                f"({', '.join(n for n, _ in got) or 'none'}); its config implies {len(expected)} "
                f"({', '.join(n for n, _, _ in expected) or 'none'})"
            )
        for (name, _, shape), (file_name, array) in zip(expected, got):
            if not weight_table.shape_matches(shape, array.shape):
                raise ModelFormatError(
                    f"{where}: {label}: weight {name} ({file_name} in the file) has shape "
                    f"{tuple(array.shape)}; the layer's config implies {weight_table.format_shape(shape)}"
                )


def construct(ls, where, init):
    """The rnnengine layer for one LayerSpec (wrapped layers first)."""
    cls = getattr(rlayers, ls.rn_class, None)
    label = f'layer "{ls.name}" ({ls.keras_class})'
    if cls is None:
        raise ModelFormatError(f"{where}: {label}: rnnengine.layers has no {ls.rn_class}")
    kwargs = dict(ls.kwargs)
    for key in _ZERO_INIT.get(ls.table, ()):
        kwargs[key] = init
    for key, child in ls.children.items():
        kwargs[key] = construct(child, where, init)
    try:
        layer = cls(name=ls.name, **kwargs)
    except _CONSTRUCTION_ERRORS as exc:
        raise ModelFormatError(f"{where}: {label}: invalid config: {exc}") from exc
    for key, value in ls.attrs.items():
        setattr(layer, key, value)
    return layer


def _guess_input(spec, weights, where):
    """A Sequential saved without an input shape: take input_dim from the first kernel."""
    first = next(ls for ls in spec.layers if not ls.is_input)
    arrays = [a for _, a in weights.get(first.name, [])]
    table = first.children["layer"].table if first.table == "TimeDistributed" else first.table
    if table == "Embedding":
        return (None,), None, None
    if arrays and (table in translate.RECURRENT or table == "Bidirectional" or first.table == "TimeDistributed"):
        return (None, int(arrays[0].shape[0])), None, None
    if arrays and table == "Dense":
        return (int(arrays[0].shape[0]),), None, None
    raise ModelFormatError(f"{where}: the Sequential model has no input shape (it was saved before it was "
                           "built) and none can be read from its weights")


def _sequential(spec, weights, where, built, init):
    from ..models import Sequential

    shape, batch_size, dtype = spec.input or _guess_input(spec, weights, where)
    model = Sequential(name=spec.name)
    try:
        first = spec.layers[0]
        model.add(rlayers.Input(shape=shape, batch_size=batch_size, dtype=dtype,
                                name=first.name if first.is_input else None))
        for ls in spec.layers:
            if not ls.is_input:
                layer = construct(ls, where, init)
                built[ls.name] = layer
                model.add(layer)
        model.build()
    except _CONSTRUCTION_ERRORS as exc:
        raise ModelFormatError(f"{where}: the model cannot be built: {exc}") from exc
    return model


def _call(ls, layer, node, tensors, where):
    x = [tensors[r] for r in node.inputs] if node.multi else tensors[node.inputs[0]]
    kwargs = {"initial_state": [tensors[r] for r in node.states]} if node.states else {}
    try:
        out = layer(x, **kwargs)
    except _CONSTRUCTION_ERRORS as exc:
        raise ModelFormatError(f'{where}: layer "{ls.name}" ({ls.keras_class}) cannot be called on its '
                               f"inputs: {exc}") from exc
    return out if isinstance(out, (list, tuple)) else [out]


def _functional(spec, weights, where, built, init):
    from ..models import Model

    tensors = {}
    for ls in spec.layers:
        if ls.is_input:
            shape, batch_size, dtype = ls.input
            try:
                tensors[translate.TensorRef(ls.name, 0, 0)] = rlayers.Input(
                    shape=shape, batch_size=batch_size, dtype=dtype, name=ls.name)
            except _CONSTRUCTION_ERRORS as exc:
                raise ModelFormatError(f'{where}: input "{ls.name}": invalid config: {exc}') from exc
        elif not ls.is_op:  # operations are mask computations the model does by itself
            built[ls.name] = construct(ls, where, init)
    # Create each node once its inputs exist (Keras's from_config does the same);
    # a pass without progress means a reference that is never produced.
    pending = [(ls, k, node) for ls in spec.layers if not (ls.is_input or ls.is_op)
               for k, node in enumerate(ls.nodes)]
    while pending:
        rest = []
        for ls, k, node in pending:
            if all(r in tensors for r in node.inputs + node.states):
                for i, t in enumerate(_call(ls, built[ls.name], node, tensors, where)):
                    tensors[translate.TensorRef(ls.name, k, i)] = t
            else:
                rest.append((ls, k, node))
        if len(rest) == len(pending):
            ls, k, node = rest[0]
            missing = next(r for r in node.inputs + node.states if r not in tensors)
            raise ModelFormatError(
                f'{where}: layer "{ls.name}" ({ls.keras_class}) takes tensor {list(missing)} '
                "[layer, node, index], which no layer produces (a cycle, or a node that does not exist)"
            )
        pending = rest
    ends = []
    for refs in (spec.inputs, spec.outputs):
        missing = [list(r) for r in refs if r not in tensors]
        if missing:
            raise ModelFormatError(f"{where}: model endpoint {missing[0]} [layer, node, index] does not exist")
        ends.append([tensors[r] for r in refs])
    inputs = ends[0][0] if spec.single_input else ends[0]
    outputs = ends[1][0] if spec.single_output else ends[1]
    try:
        return Model(inputs, outputs, name=spec.name)
    except _CONSTRUCTION_ERRORS as exc:
        raise ModelFormatError(f"{where}: the model's graph is invalid: {exc}") from exc


def build_model(spec, weights, where):
    """The built rnnengine model for ``spec``, with ``weights`` ({layer name: [(name, array)]})."""
    check_weights(spec, weights, where)
    _check_feature_dims(spec, weights, where)
    largest = max((a.size for arrays in weights.values() for _, a in arrays), default=0)
    init = _FileBoundZeros(largest, where)
    built = {}
    if spec.kind == "sequential":
        model = _sequential(spec, weights, where, built, init)
    else:
        model = _functional(spec, weights, where, built, init)
    for ls in spec.layers:
        arrays = [a for _, a in weights.get(ls.name, [])]
        if ls.is_input or not arrays:
            continue
        try:
            built[ls.name].set_weights(arrays)
        except _CONSTRUCTION_ERRORS as exc:
            raise ModelFormatError(f"{where}: {exc}") from exc
    return model


# -- input feature sizes, checked before anything is built ------------------------------


def _kernel_rows(ls, weights):
    return [(name, a.shape) for name, a in weights.get(ls.name, []) if name.endswith(("kernel", "kernel:0"))
            and not name.endswith("recurrent_kernel") and not name.endswith("recurrent_kernel:0")]


def _out_dims(ls, in_dims):
    """Last-axis size of each output of one node, None where not worked out here."""
    kw, table, d = ls.kwargs, ls.table, in_dims[0] if in_dims else None
    if table in translate.RECURRENT:
        return [kw["units"]] * (1 + (2 if table == "LSTM" else 1) * bool(kw.get("return_state")))
    if table == "Bidirectional":
        inner = ls.children["layer"]
        u, states = inner.kwargs["units"], (2 if inner.table == "LSTM" else 1)
        mode = kw.get("merge_mode", "concat")
        main = [2 * u] if mode == "concat" else [u, u] if mode is None else [u]
        return main + [u] * (2 * states if inner.kwargs.get("return_state") else 0)
    if table == "Dense":
        return [kw["units"]]
    if table == "Embedding":
        return [kw["output_dim"]]
    if table == "TimeDistributed":
        return _out_dims(ls.children["layer"], in_dims)
    if table == "Concatenate":
        return [sum(in_dims)] if kw.get("axis", -1) == -1 and None not in in_dims else [None]
    if table in ("Dropout", "Activation", "Masking", "RepeatVector") or ls.rn_class == "Dropout" or \
            table in translate.MULTI_INPUT:
        return [d]
    return [None]


def _check_node(ls, in_dims, weights, where):
    """A layer's kernels must have as many rows as its input has features."""
    d = in_dims[0] if in_dims else None
    if d is None:
        return
    for name, shape in _kernel_rows(ls, weights):
        if shape[0] != d:
            raise ModelFormatError(
                f'{where}: layer "{ls.name}" ({ls.keras_class}) receives {d} features, but its {name} in the '
                f"file has shape {tuple(shape)}, made for {shape[0]}"
            )


def _check_feature_dims(spec, weights, where):
    if spec.kind == "sequential":
        shape = spec.input[0] if spec.input else None
        d = shape[-1] if shape else None
        for ls in spec.layers:
            if ls.is_input:
                continue
            _check_node(ls, [d], weights, where)
            d = _out_dims(ls, [d])[0]
        return
    dims, done = {}, set()
    for ls in spec.layers:
        if ls.is_input:
            shape = ls.input[0]
            dims[translate.TensorRef(ls.name, 0, 0)] = shape[-1] if shape else None
            done.add((ls.name, 0))
    pending = [(ls, k, n) for ls in spec.layers if not (ls.is_input or ls.is_op) for k, n in enumerate(ls.nodes)]
    while pending:
        rest = []
        for ls, k, node in pending:
            if not all((r.layer, r.node) in done for r in node.inputs):
                rest.append((ls, k, node))
                continue
            in_dims = [dims.get(r) for r in node.inputs]
            _check_node(ls, in_dims, weights, where)
            for i, d in enumerate(_out_dims(ls, in_dims)):
                dims[translate.TensorRef(ls.name, k, i)] = d
            done.add((ls.name, k))
        if len(rest) == len(pending):
            return  # unresolved references: reported when the graph is wired
        pending = rest
