"""Keras model configs -> layer specs: one table per Keras class.

``model_spec(config, keras_major, path)`` reads the JSON config of a Keras
model (Keras 3, Keras 2 / tf.keras 2.x, and tf_keras) and returns a
``ModelSpec``: for every layer the rnnengine class and constructor arguments,
and for a functional model its call graph. It builds nothing. While it walks
the config it collects every layer or option rnnengine cannot run, so that
the caller can raise one ``UnsupportedKerasFeature`` listing all of them
(``spec.issues``); a config that is not a Keras model config at all raises
``ModelFormatError`` at once.

Each Keras class has one ``_Table``:

- ``mapped``: config keys passed to the rnnengine constructor (Keras's own
  argument names), each through a converter that checks its type;
- ``ignored``: keys that do not change inference, named one by one
  (initializers: every weight comes from the file; ``unroll``/
  ``implementation``/``use_cudnn``: the same math). Dropout rates and seeds
  are mapped: identity at inference, and a loaded model fine-tunes with them. Regularizers and constraints are mapped (training uses them): a
  Keras class rnnengine does not implement is kept as its config, so the model
  still loads, runs and saves it back; only training refuses it;
- ``unsupported``: keys whose value rnnengine cannot honour, with the test
  that says when (``time_major=True``, ``quantization_config``, ...).

A key in none of the three is reported as unsupported too: rnnengine never
drops an option it does not know.

Keras 2 differences handled here: ``batch_input_shape`` for the input shape,
dtype as a plain string, ``hard_sigmoid`` meaning ``clip(0.2 x + 0.5)``
(rnnengine's ``hard_sigmoid_keras2``; Keras 3's is ``relu6(x + 3) / 6``), a GRU
config without ``reset_after`` (written only by Keras before the option
existed, whose behaviour was ``reset_after=False``), nested-list
``inbound_nodes`` with initial states passed as extra inbound tensors.
"""
import math

from ..errors import ModelFormatError
from ..layers import activations as _activations
from .keras_v3 import to_snake_case

# -- specs ---------------------------------------------------------------------------------


class TensorRef(tuple):
    """(layer name, node index, tensor index): Keras's ``keras_history``."""

    __slots__ = ()

    def __new__(cls, layer, node, index):
        return super().__new__(cls, (layer, node, index))

    def __getnewargs__(self):  # pickled by load_keras_untrusted's child
        return tuple(self)

    layer = property(lambda self: self[0])
    node = property(lambda self: self[1])
    index = property(lambda self: self[2])


class NodeSpec:
    """One call of a layer: its input(s) and initial states, as TensorRefs."""

    def __init__(self, inputs, multi, states, mask=None, mask_none=False, constants=()):
        self.inputs = inputs  # list of TensorRef
        self.multi = multi  # called on a list (merge layers)
        self.states = states  # list of TensorRef (recurrent initial_state)
        self.mask = mask  # Keras 3: the explicit mask= TensorRef (checked, then dropped)
        self.mask_none = mask_none  # Keras 3 recorded mask=None
        self.constants = list(constants)  # an operation's non-tensor positional arguments


class LayerSpec:
    """One Keras layer, translated.

    keras_class: the class named in the file (names the layer's Keras 3 weight group)
    table: the table used (``"LSTM"`` for ``RNN(LSTMCell)``)
    rn_class: the rnnengine class to construct (``rnnengine.layers.<rn_class>``)
    kwargs: its constructor arguments, ``name`` and wrapped layers excluded
    attrs: attributes set after construction (``zero_output_for_mask``)
    children: wrapped layers, ``{"layer": LayerSpec, "backward_layer": LayerSpec}``
    """

    def __init__(self, name, keras_class, table=None, rn_class=None):
        self.name = name
        self.keras_class = keras_class
        self.table = table or keras_class
        self.rn_class = rn_class
        self.kwargs = {}
        self.attrs = {}
        self.children = {}
        self.nodes = []
        self.input = None  # InputLayer: (shape, batch_size, dtype)
        self.shape_hint = None  # (shape, batch_size) from batch_input_shape & co.
        self.op_config = None  # a keras.ops operation (mask computations): its config

    @property
    def is_input(self):
        return self.keras_class == "InputLayer"

    @property
    def is_op(self):
        return self.op_config is not None

    def __repr__(self):
        return f"<LayerSpec {self.name} ({self.keras_class} -> {self.rn_class})>"


class ModelSpec:
    """A translated model: ``kind`` is "sequential" or "functional"."""

    def __init__(self, kind, name, layers, keras_major):
        self.kind = kind
        self.name = name
        self.layers = layers  # in config order, InputLayers included
        self.keras_major = keras_major
        self.inputs = []  # functional: TensorRefs
        self.outputs = []
        self.single_input = True
        self.single_output = True
        self.input = None  # sequential: (shape, batch_size, dtype) or None
        self.issues = []

    def layer(self, name):
        for spec in self.layers:
            if spec.name == name:
                return spec
        raise KeyError(name)


# -- the translation context -------------------------------------------------------------


class _Ctx:
    def __init__(self, path, keras_major):
        self.path = path
        self.keras_major = keras_major
        self.issues = []

    def bad(self, message):
        raise ModelFormatError(f"{self.path}: {message}")

    def unsupported(self, where, message):
        self.issues.append(f"{where}: {message}")


def _where(name, cls, parent=None):
    here = f'layer "{name}" ({cls})'
    return f"{parent} > {here}" if parent else here


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- converters: check a config value's type, return the constructor argument ---------


def _positive_int(ctx, where, key, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2 ** 31:
        ctx.bad(f"{where}: config {key}={_short(value)} is not a positive integer")
    return value


def _boolean(ctx, where, key, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    ctx.bad(f"{where}: config {key}={_short(value)} is not a boolean")


def _number(ctx, where, key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        ctx.bad(f"{where}: config {key}={_short(value)} is not a finite number")
    return value


def _rate(ctx, where, key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        ctx.bad(f"{where}: config {key}={_short(value)} is not a rate in [0, 1]")
    return float(value)


def _seed(ctx, where, key, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        ctx.bad(f"{where}: config {key}={_short(value)} is not an integer seed or null")
    return value


def _integer(ctx, where, key, value):
    if isinstance(value, bool) or not isinstance(value, int):
        ctx.bad(f"{where}: config {key}={_short(value)} is not an integer")
    return value


class _Unsupported(Exception):
    pass


SKIP = object()  # a converter's answer when it has reported the value as unsupported


def _activation_name(ctx, value):
    """Canonical rnnengine activation for a Keras config value, Keras 2's
    hard_sigmoid included; raises _Unsupported for anything else."""
    if value is not None and not isinstance(value, (str, dict)):
        raise _Unsupported()
    try:
        name = _activations.get(value)
    except (ValueError, TypeError, AttributeError):
        raise _Unsupported() from None
    if name == "hard_sigmoid" and ctx.keras_major < 3:
        name = "hard_sigmoid_keras2"  # Keras 2: clip(0.2 * x + 0.5, 0, 1)
    return name


def _activation(ctx, where, key, value):
    try:
        return _activation_name(ctx, value)
    except _Unsupported:
        ctx.unsupported(where, f"option {key}={_short(value)} is not supported (unknown or custom activation)")
        return SKIP


def _cell_activation(ctx, where, key, value):
    try:
        name = _activation_name(ctx, value)
    except _Unsupported:
        ctx.unsupported(where, f"option {key}={_short(value)} is not supported (unknown or custom activation)")
        return SKIP
    if not _activations.is_elementwise(name):
        ctx.unsupported(where, f"option {key}={_short(value)} is not supported inside a recurrent cell "
                               "(only elementwise activations are)")
        return SKIP
    return name


def _regularizer(ctx, where, key, value):
    """A Keras regularizer config -> an ``rnnengine.regularizers`` object (training
    uses it; inference ignores it). A class rnnengine does not implement is kept as
    its config (``KerasConfigRegularizer``): the model loads and saves it back, and
    training refuses it."""
    from .. import regularizers

    return _option(ctx, where, key, value, regularizers, regularizers.KerasConfigRegularizer)


def _constraint(ctx, where, key, value):
    """A Keras constraint config -> an ``rnnengine.constraints`` object (see ``_regularizer``)."""
    from .. import constraints

    return _option(ctx, where, key, value, constraints, constraints.KerasConfigConstraint)


def _option(ctx, where, key, value, module, opaque):
    if value is None:
        return SKIP
    if isinstance(value, str):
        try:
            return module.get(value)
        except ValueError:
            ctx.bad(f"{where}: config {key}={_short(value)} is not a Keras {key.split('_')[-1]}")
    if not isinstance(value, dict) or not isinstance(value.get("class_name"), str):
        ctx.bad(f"{where}: config {key}={_short(value)} is not a Keras {key.split('_')[-1]} config")
    try:
        return module.deserialize(value, lenient=True)
    except (ValueError, TypeError):
        return opaque(value)  # a known class with arguments rnnengine cannot read: kept as written


def _merge_mode(ctx, where, key, value):
    if value not in ("concat", "sum", "ave", "mul", None):
        ctx.bad(f"{where}: config {key}={_short(value)} is not a Keras merge mode")
    return value


_FLOAT_NAMES = ("float32", "float64")


def _dtype_of(value):
    """The dtype name in a config value: a string, or a DTypePolicy dict."""
    if isinstance(value, dict):  # Keras 3 DTypePolicy, tf.keras 2 Policy
        inner = value.get("config")
        if isinstance(inner, dict):
            return inner.get("name"), value.get("class_name")
        return None, value.get("class_name")
    return value, None


def _dtype(ctx, where, key, value):
    if value is None:
        return SKIP  # the layer's default, float32
    name, policy_class = _dtype_of(value)
    if policy_class is not None and "Quantized" in str(policy_class):
        ctx.unsupported(where, f"option dtype={_short(name)} is not supported (quantized dtype policy)")
        return SKIP
    if not isinstance(name, str):
        ctx.bad(f"{where}: config dtype={_short(value)} is not a dtype")
    if name in _FLOAT_NAMES:
        return name
    ctx.unsupported(where, f"option dtype={name!r} is not supported (rnnengine computes in float32 or float64)")
    return SKIP


# -- the tables ----------------------------------------------------------------------------


class _Table:
    def __init__(self, rn_class, mapped=None, ignored=(), unsupported=None, fixed=None):
        self.rn_class = rn_class
        self.mapped = mapped or {}
        self.ignored = frozenset(ignored)
        self.unsupported = unsupported or {}  # key -> (test(value) -> bool, reason)
        self.fixed = fixed or {}  # constructor arguments set regardless of the config


_COMMON_MAPPED = {"trainable": _boolean, "dtype": _dtype}
# Input-shape hints: read for a Sequential's first layer (its input shape), else
# ignored; a layer inside a model gets its input shape from the graph.
_SHAPE_HINTS = ("batch_input_shape", "batch_shape", "input_shape", "batch_size", "input_dim")

_INITIALIZERS = ("kernel_initializer", "recurrent_initializer", "bias_initializer")
_REGULARIZERS = ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer")
_CONSTRAINTS = ("kernel_constraint", "recurrent_constraint", "bias_constraint")


def _true(value):
    return bool(value)


def _not_none(value):
    return value is not None


_RNN_MAPPED = {"units": _positive_int, "activation": _cell_activation, "use_bias": _boolean,
               "return_sequences": _boolean, "return_state": _boolean, "go_backwards": _boolean,
               "stateful": _boolean, "dropout": _rate, "recurrent_dropout": _rate, "seed": _seed}
_OPTIONS = dict({k: _regularizer for k in _REGULARIZERS}, **{k: _constraint for k in _CONSTRAINTS})
_RNN_MAPPED.update(_OPTIONS)
_RNN_IGNORED = (_INITIALIZERS + _SHAPE_HINTS +
                ("unroll", "implementation", "use_cudnn"))
_RNN_UNSUPPORTED = {"time_major": (_true, "time-major input is not supported; rnnengine takes (batch, time, features)")}

TABLES = {
    "SimpleRNN": _Table("SimpleRNN", dict(_RNN_MAPPED), _RNN_IGNORED, dict(_RNN_UNSUPPORTED)),
    "LSTM": _Table("LSTM", dict(_RNN_MAPPED, recurrent_activation=_cell_activation, unit_forget_bias=_boolean),
                   _RNN_IGNORED, dict(_RNN_UNSUPPORTED)),
    "GRU": _Table("GRU", dict(_RNN_MAPPED, recurrent_activation=_cell_activation, reset_after=_boolean),
                  _RNN_IGNORED, dict(_RNN_UNSUPPORTED)),
    "Dense": _Table("Dense", {"units": _positive_int, "activation": _activation, "use_bias": _boolean,
                              "kernel_regularizer": _regularizer, "bias_regularizer": _regularizer,
                              "activity_regularizer": _regularizer, "kernel_constraint": _constraint,
                              "bias_constraint": _constraint},
                    ("kernel_initializer", "bias_initializer", "lora_alpha") + _SHAPE_HINTS,
                    {"quantization_config": (_not_none, "quantized Dense layers are not supported"),
                     "lora_rank": (_true, "LoRA Dense layers are not supported")}),
    "Dropout": _Table("Dropout", {"rate": _number, "seed": _seed}, ("noise_shape",) + _SHAPE_HINTS),
    "Activation": _Table("Activation", {"activation": _activation}, _SHAPE_HINTS),
    "Flatten": _Table("Flatten", {}, _SHAPE_HINTS,
                      {"data_format": (lambda v: v not in (None, "channels_last"),
                                       "only data_format='channels_last' is supported")}),
    "RepeatVector": _Table("RepeatVector", {"n": _positive_int}, _SHAPE_HINTS),
    "Embedding": _Table("Embedding", {"input_dim": _positive_int, "output_dim": _positive_int,
                                      "mask_zero": _boolean, "embeddings_regularizer": _regularizer,
                                      "activity_regularizer": _regularizer, "embeddings_constraint": _constraint},
                        ("embeddings_initializer", "input_length", "lora_alpha", "batch_input_shape",
                         "batch_shape", "input_shape", "batch_size"),
                        {"sparse": (_true, "sparse embeddings are not supported"),
                         "quantization_config": (_not_none, "quantized embeddings are not supported"),
                         "lora_rank": (_true, "LoRA embeddings are not supported")}),
    "Masking": _Table("Masking", {"mask_value": _number}, _SHAPE_HINTS),
    "Bidirectional": _Table("Bidirectional", {"merge_mode": _merge_mode}, _SHAPE_HINTS,
                            {"num_constants": (_true, "constants are not supported")}),
    "TimeDistributed": _Table("TimeDistributed", {}, _SHAPE_HINTS),
    "Concatenate": _Table("Concatenate", {"axis": _integer}, _SHAPE_HINTS),
}
for _name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"):
    TABLES[_name] = _Table(_name, {}, _SHAPE_HINTS)
# Layers that are the identity at inference run as rnnengine's Dropout(rate=0).
for _name, _keys in (("SpatialDropout1D", ("rate", "seed", "noise_shape")),
                     ("GaussianNoise", ("stddev", "seed")),
                     ("GaussianDropout", ("rate", "seed")),
                     ("AlphaDropout", ("rate", "seed", "noise_shape")),
                     ("ActivityRegularization", ("l1", "l2"))):
    TABLES[_name] = _Table("Dropout", {}, _keys + _SHAPE_HINTS, fixed={"rate": 0.0})

# Constructor arguments without a default: a config without them is not a Keras config.
_REQUIRED = {"SimpleRNN": ("units",), "LSTM": ("units",), "GRU": ("units",), "Dense": ("units",),
             "Dropout": ("rate",), "RepeatVector": ("n",), "Embedding": ("input_dim", "output_dim")}

RECURRENT = ("SimpleRNN", "LSTM", "GRU")
MULTI_INPUT = _MULTI_INPUT = ("Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
_TAKES_STATES = RECURRENT + ("Bidirectional",)
_CELLS = {"SimpleRNNCell": "SimpleRNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}
_MODEL_CLASSES = ("Sequential", "Functional", "Model")


# -- one layer ----------------------------------------------------------------------------


def _entry(ctx, entry, where):
    """(class_name, config) of a ``{"class_name": ..., "config": {...}}`` entry."""
    if not isinstance(entry, dict):
        ctx.bad(f"{where}: a layer entry is {type(entry).__name__}, not a JSON object")
    cls = entry.get("class_name")
    config = entry.get("config")
    if not isinstance(cls, str) or not cls:
        ctx.bad(f"{where}: a layer entry has no class_name")
    if not isinstance(config, dict):
        ctx.bad(f"{where}: layer entry of class {cls} has no config object")
    return cls, config


def _layer_name(ctx, config, cls, where, fallback=None):
    name = config.get("name", fallback)
    if not isinstance(name, str) or not name:
        ctx.bad(f"{where}: a {cls} layer has no name")
    return name


def _shape(ctx, where, key, value):
    if not isinstance(value, (list, tuple)) or not all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 31) for d in value):
        ctx.bad(f"{where}: config {key}={_short(value)} is not a shape")
    return tuple(value)


def _shape_hint(ctx, where, config):
    """(shape without batch, batch size) from a layer's Keras 2 shape hints, or None."""
    for key in ("batch_input_shape", "batch_shape"):
        if config.get(key) is not None:
            shape = _shape(ctx, where, key, config[key])
            if not shape:
                ctx.bad(f"{where}: config {key}={_short(config[key])} has no batch axis")
            return shape[1:], shape[0]
    if config.get("input_shape") is not None:
        return _shape(ctx, where, "input_shape", config["input_shape"]), config.get("batch_size")
    return None


def translate_layer(ctx, entry, parent=None, fallback_name=None):
    """A LayerSpec for one ``{"class_name", "config"}`` entry; issues go to ``ctx``."""
    cls, config = _entry(ctx, entry, parent or "model config")
    name = _layer_name(ctx, config, cls, parent or "model config", fallback_name)
    where = _where(name, cls, parent)
    if _is_op(entry):
        return _translate_op(ctx, name, cls, config, where)
    if cls == "InputLayer":
        return _translate_input(ctx, name, config, where)
    if cls == "RNN":
        return _translate_generic_rnn(ctx, name, config, where)
    if cls in _MODEL_CLASSES:
        spec = LayerSpec(name, cls)
        ctx.unsupported(where, "nested models (a model used as a layer) are not supported")
        return spec
    table = TABLES.get(cls)
    if table is None:
        spec = LayerSpec(name, cls)
        ctx.unsupported(where, f"layer class {cls} is not supported")
        return spec
    return _apply_table(ctx, LayerSpec(name, cls, cls, table.rn_class), table, config, where)


def _apply_table(ctx, spec, table, config, where):
    spec.shape_hint = _shape_hint(ctx, where, config) if spec.table != "Embedding" else \
        _embedding_hint(ctx, where, config)
    for key, value in config.items():
        if key == "name":
            continue
        if key in ("layer", "backward_layer") and spec.table in ("Bidirectional", "TimeDistributed"):
            continue
        if key == "zero_output_for_mask" and spec.table in RECURRENT:
            if _boolean(ctx, where, key, value):
                spec.attrs["zero_output_for_mask"] = True
            continue
        if key in table.unsupported:
            test, reason = table.unsupported[key]
            if test(value):
                ctx.unsupported(where, f"option {key}={_short(value)} is not supported: {reason}")
            continue
        convert = table.mapped.get(key) or _COMMON_MAPPED.get(key)
        if convert is not None:
            converted = convert(ctx, where, key, value)
            if converted is not SKIP:
                spec.kwargs[key] = converted
            continue
        if key in table.ignored:
            continue
        ctx.unsupported(where, f"option {key}={_short(value)} is not recognised by rnnengine")
    for key in _REQUIRED.get(spec.table, ()):
        if key not in spec.kwargs and key not in config:
            ctx.bad(f"{where}: config has no {key!r}")
    spec.kwargs.update(table.fixed)
    if spec.table == "GRU" and "reset_after" not in spec.kwargs:
        # Keras 3 and tf.keras 2.x always write reset_after; Keras 2 configs without
        # it predate the option, whose behaviour then was reset_after=False.
        spec.kwargs["reset_after"] = ctx.keras_major >= 3
    if spec.table == "Bidirectional":
        _translate_bidirectional(ctx, spec, config, where)
    elif spec.table == "TimeDistributed":
        _translate_time_distributed(ctx, spec, config, where)
    return spec



def _embedding_hint(ctx, where, config):
    hint = _shape_hint(ctx, where, {k: v for k, v in config.items() if k != "input_dim"})
    if hint is None and config.get("input_length") is not None:
        length = config["input_length"]
        return (_shape(ctx, where, "input_length", [length])[0],), None
    return hint


# keras.ops operations in a Keras 3 functional graph. Keras 3 records the masks
# it passes between layers as explicit operations and mask= arguments:
# Masking's is any(not_equal(x, mask_value), axis=-1), Embedding(mask_zero)'s is
# not_equal(x, 0). These two operations are recognised; ``_resolve_masks``
# checks that each explicit mask is the one rnnengine propagates along the
# graph by itself, and the operations are then left out of the model.
_MASK_OPS = ("NotEqual", "Any")


def _is_op(entry):
    module = entry.get("module") if isinstance(entry, dict) else None
    if isinstance(module, str):
        return module.startswith(("keras.src.ops", "keras.ops"))
    return isinstance(entry, dict) and entry.get("class_name") in _MASK_OPS


def _translate_op(ctx, name, cls, config, where):
    spec = LayerSpec(name, cls, "op", None)
    spec.op_config = dict(config)
    if cls not in _MASK_OPS:
        ctx.unsupported(where, f"operation keras.ops.{to_snake_case(cls)} in the graph is not supported")
    return spec


def _translate_input(ctx, name, config, where):
    spec = LayerSpec(name, "InputLayer", "InputLayer", "InputLayer")
    shape = batch_size = None
    for key, value in config.items():
        if key in ("name",):
            continue
        if key in ("batch_shape", "batch_input_shape"):
            if value is not None:
                full = _shape(ctx, where, key, value)
                if not full:
                    ctx.bad(f"{where}: config {key}={_short(value)} has no batch axis")
                shape, batch_size = full[1:], full[0]
        elif key in ("shape", "input_shape"):
            if value is not None:
                shape = _shape(ctx, where, key, value)
        elif key == "batch_size":
            if value is not None:
                batch_size = _positive_int(ctx, where, key, value)
        elif key == "dtype":
            pass
        elif key in ("sparse", "ragged", "optional"):
            if value:
                ctx.unsupported(where, f"option {key}=True is not supported")
        elif key in ("trainable", "input_tensor"):
            if key == "input_tensor" and value is not None:
                ctx.unsupported(where, "option input_tensor is not supported")
        else:
            ctx.unsupported(where, f"option {key}={_short(value)} is not recognised by rnnengine")
    if shape is None:
        ctx.bad(f"{where}: InputLayer has no shape")
    dtype, _ = _dtype_of(config.get("dtype"))
    if dtype is not None and not isinstance(dtype, str):
        ctx.bad(f"{where}: config dtype={_short(config.get('dtype'))} is not a dtype")
    if dtype in ("string", "str", "object"):
        ctx.unsupported(where, f"option dtype={dtype!r} is not supported (string inputs)")
    spec.input = (shape, batch_size, dtype if dtype in _FLOAT_NAMES else None)
    return spec


def _translate_generic_rnn(ctx, name, config, where):
    """keras.layers.RNN(cell) with one SimpleRNNCell/LSTMCell/GRUCell runs as that layer."""
    cell = config.get("cell")
    cell_cls = cell.get("class_name") if isinstance(cell, dict) else None
    if cell_cls not in _CELLS:
        spec = LayerSpec(name, "RNN")
        what = "a list of cells" if isinstance(cell, list) else f"cell {cell_cls or _short(cell)}"
        ctx.unsupported(where, f"RNN with {what} is not supported (only one SimpleRNNCell, LSTMCell or GRUCell)")
        return spec
    _, cell_config = _entry(ctx, cell, where)
    merged = {k: v for k, v in cell_config.items() if k not in ("name", "trainable", "dtype")}
    merged.update({k: v for k, v in config.items() if k != "cell"})
    table_name = _CELLS[cell_cls]
    spec = LayerSpec(name, "RNN", table_name, TABLES[table_name].rn_class)
    return _apply_table(ctx, spec, TABLES[table_name], merged, where)


def _child(ctx, config, key, where):
    entry = config.get(key)
    if entry is None:
        return None
    return translate_layer(ctx, entry, parent=where)


def _translate_bidirectional(ctx, spec, config, where):
    layer = _child(ctx, config, "layer", where)
    if layer is None:
        ctx.bad(f"{where}: config has no 'layer'")
    spec.children["layer"] = layer
    backward = _child(ctx, config, "backward_layer", where)
    if backward is not None:
        spec.children["backward_layer"] = backward
    for sub in (layer, backward):
        if sub is not None and sub.rn_class is not None and sub.table not in RECURRENT:
            ctx.unsupported(where, f"Bidirectional over {sub.keras_class} is not supported "
                                   "(only SimpleRNN, LSTM and GRU)")


def _translate_time_distributed(ctx, spec, config, where):
    layer = _child(ctx, config, "layer", where)
    if layer is None:
        ctx.bad(f"{where}: config has no 'layer'")
    spec.children["layer"] = layer
    if layer.rn_class is not None and (layer.table in RECURRENT or layer.table in
                                       ("Bidirectional", "TimeDistributed", "InputLayer")):
        ctx.unsupported(where, f"TimeDistributed over {layer.keras_class} is not supported "
                               "(only non-recurrent layers such as Dense)")


# -- functional graphs ---------------------------------------------------------------------


def _history(ctx, where, value):
    if (not isinstance(value, (list, tuple)) or len(value) < 3 or not isinstance(value[0], str)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value[1:3])):
        ctx.bad(f"{where}: {_short(value)} is not a tensor reference [layer, node_index, tensor_index]")
    return TensorRef(value[0], value[1], value[2])


def _keras3_tensor(ctx, where, value):
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        config = value.get("config")
        if not isinstance(config, dict):
            ctx.bad(f"{where}: a __keras_tensor__ has no config")
        return _history(ctx, where, config.get("keras_history"))
    return None


def _keras3_node(ctx, spec, node, where):
    args, kwargs = node.get("args"), node.get("kwargs", {})
    if not isinstance(args, list) or not args or not isinstance(kwargs, dict):
        ctx.bad(f"{where}: an inbound node has no args")
    first = args[0]
    if isinstance(first, list):
        refs = [_keras3_tensor(ctx, where, v) for v in first]
        if any(r is None for r in refs):
            ctx.bad(f"{where}: an inbound node's input list holds a non-tensor")
        multi = True
    else:
        ref = _keras3_tensor(ctx, where, first)
        if ref is None:
            ctx.bad(f"{where}: an inbound node's first argument is not a tensor")
        refs, multi = [ref], False
    if spec.is_op:
        constants = args[1:]
        if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in constants) or kwargs:
            ctx.unsupported(where, "operation arguments other than one tensor and numbers are not supported")
        return NodeSpec(refs, multi, [], constants=constants)
    if len(args) > 1:
        ctx.unsupported(where, f"call with {len(args)} positional arguments is not supported")
    states, mask, mask_none = [], None, False
    for key, value in kwargs.items():
        if key == "training":
            continue
        if key == "mask":
            if value is None:
                mask_none = True
                continue
            mask = _keras3_tensor(ctx, where, value)
            if mask is None:
                ctx.unsupported(where, f"call argument mask={_short(value)} is not supported")
            continue
        if key == "initial_state" and value is not None:
            values = value if isinstance(value, list) else [value]
            states = [_keras3_tensor(ctx, where, v) for v in values]
            if any(s is None for s in states):
                ctx.bad(f"{where}: initial_state holds a non-tensor")
            if spec.table not in _TAKES_STATES:
                ctx.unsupported(where, "call argument initial_state is only supported on recurrent layers")
            continue
        ctx.unsupported(where, f"call argument {key}={_short(value)} is not supported")
    return NodeSpec(refs, multi, states, mask, mask_none)


def _keras2_node(ctx, spec, node, where):
    if not isinstance(node, list) or not node:
        ctx.bad(f"{where}: an inbound node is not a list of tensor references")
    refs = []
    for item in node:
        refs.append(_history(ctx, where, item))
        kwargs = item[3] if isinstance(item, (list, tuple)) and len(item) > 3 else {}
        if not isinstance(kwargs, dict):
            ctx.bad(f"{where}: inbound node call arguments are not an object")
        for key, value in kwargs.items():
            if key == "training" or (key == "mask" and value is None):
                continue
            ctx.unsupported(where, f"call argument {key}={_short(value)} is not supported")
    if spec.table in _TAKES_STATES and len(refs) > 1:
        # tf.keras 2.x records initial states as extra inbound tensors.
        return NodeSpec(refs[:1], False, refs[1:])
    if spec.table in _MULTI_INPUT:
        return NodeSpec(refs, True, [])
    if len(refs) > 1 and spec.rn_class is not None:
        ctx.unsupported(where, f"a call on {len(refs)} inputs is not supported by this layer")
    return NodeSpec(refs[:1], False, [])


def _nodes(ctx, spec, entry, where):
    inbound = entry.get("inbound_nodes", [])
    if not isinstance(inbound, list):
        ctx.bad(f"{where}: inbound_nodes is not a list")
    nodes = []
    for node in inbound:
        if isinstance(node, dict):
            nodes.append(_keras3_node(ctx, spec, node, where))
        else:
            nodes.append(_keras2_node(ctx, spec, node, where))
    return nodes


def _endpoints(ctx, value, key):
    """input_layers / output_layers: (list of TensorRef, single)."""
    where = f"model config {key}"
    if isinstance(value, dict):
        ctx.issues.append(f"model: {key} given as a dict is not supported")
        return [], False
    if (isinstance(value, list) and len(value) >= 3 and isinstance(value[0], str)
            and not isinstance(value[1], list)):
        return [_history(ctx, where, value)], True
    if not isinstance(value, list) or not value:
        ctx.bad(f"{where} is missing or empty")
    refs = [_history(ctx, where, v) for v in value]
    return refs, len(refs) == 1


# -- whole models ----------------------------------------------------------------------------


def model_spec(config, keras_major, path):
    """Translate a model config ``{"class_name": ..., "config": ...}``."""
    ctx = _Ctx(path, keras_major)
    if not isinstance(config, dict):
        ctx.bad("the model config is not a JSON object")
    cls = config.get("class_name")
    body = config.get("config")
    if cls == "Sequential":
        spec = _sequential(ctx, body)
    elif cls in ("Functional", "Model"):
        if not isinstance(body, dict) or "layers" not in body or "input_layers" not in body:
            ctx.bad(f"model class {cls} has no functional graph (a subclassed model?)")
        spec = _functional(ctx, body)
    elif isinstance(cls, str) and cls:
        spec = ModelSpec("unsupported", str(cls), [], keras_major)
        ctx.issues.append(f"model class {cls}: subclassed and custom models are not supported "
                          "(only Sequential and functional models)")
    else:
        ctx.bad("the model config has no class_name")
    spec.issues = ctx.issues
    return spec


def _layer_list(ctx, body):
    layers = body if isinstance(body, list) else (body.get("layers") if isinstance(body, dict) else None)
    if not isinstance(layers, list):
        ctx.bad("the model config has no list of layers")
    return layers


def _check_unique(ctx, specs):
    seen = set()
    for spec in specs:
        if spec.name in seen:
            ctx.bad(f'two layers are named "{spec.name}"')
        seen.add(spec.name)


def _model_name(ctx, body, default):
    name = body.get("name", default) if isinstance(body, dict) else default
    return name if isinstance(name, str) else default


def _sequential(ctx, body):
    entries = _layer_list(ctx, body)
    specs = [translate_layer(ctx, e, fallback_name=None) for e in entries]
    _check_unique(ctx, specs)
    model = ModelSpec("sequential", _model_name(ctx, body, "sequential"), specs, ctx.keras_major)
    if any(s.is_input for s in specs[1:]):
        ctx.bad("an InputLayer appears after the first layer of a Sequential model")
    layers = [s for s in specs if not s.is_input]
    if not layers:
        ctx.bad("the Sequential model has no layers")
    if specs[0].is_input:
        model.input = specs[0].input
    else:
        first_entry = entries[0]
        hint = layers[0].shape_hint
        if hint is None:  # Keras 3: the build config, or the model's build_input_shape
            build = first_entry.get("build_config") if isinstance(first_entry, dict) else None
            shape = build.get("input_shape") if isinstance(build, dict) else None
            if shape is None and isinstance(body, dict):
                shape = body.get("build_input_shape")
            if shape is not None:
                full = _shape(ctx, "model config", "build input_shape", shape)
                hint = (full[1:], full[0]) if full else None
        if hint is not None:
            model.input = (hint[0], hint[1], None)
    for spec in layers:
        if spec.kwargs.get("return_state"):
            ctx.unsupported(_where(spec.name, spec.keras_class),
                            "return_state=True in a Sequential model is not supported")
    return model


def _functional(ctx, body):
    entries = _layer_list(ctx, body)
    specs = []
    for entry in entries:
        spec = translate_layer(ctx, entry, fallback_name=entry.get("name") if isinstance(entry, dict) else None)
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"] != spec.name:
            ctx.bad(f'layer entry "{entry["name"]}" holds a config named "{spec.name}"')
        spec.nodes = [] if spec.is_input else _nodes(ctx, spec, entry, _where(spec.name, spec.keras_class))
        if spec.is_op and any(not isinstance(n, NodeSpec) or n.multi for n in spec.nodes):
            ctx.unsupported(_where(spec.name, spec.keras_class), "operation on a list of tensors is not supported")
        specs.append(spec)
    _check_unique(ctx, specs)
    model = ModelSpec("functional", _model_name(ctx, body, "functional"), specs, ctx.keras_major)
    model.inputs, model.single_input = _endpoints(ctx, body.get("input_layers"), "input_layers")
    model.outputs, model.single_output = _endpoints(ctx, body.get("output_layers"), "output_layers")
    by_name = {s.name: s for s in specs}
    for ref in model.inputs:
        if ref.layer not in by_name or not by_name[ref.layer].is_input:
            ctx.bad(f'model input "{ref.layer}" is not an InputLayer of the model')
    for spec in specs:
        for node in spec.nodes:
            for ref in node.inputs + node.states + ([node.mask] if node.mask else []):
                if ref.layer not in by_name:
                    ctx.bad(f'{_where(spec.name, spec.keras_class)}: inbound tensor from unknown layer "{ref.layer}"')
    for ref in model.outputs:
        if ref.layer not in by_name:
            ctx.bad(f'model output from unknown layer "{ref.layer}"')
    _resolve_masks(ctx, model, by_name)
    return model


def _resolve_masks(ctx, model, by_name):
    """Check every explicit Keras 3 mask against the mask rnnengine propagates.

    Walks the graph inputs-first, giving each tensor a symbolic value (an
    operation's expression, or the tensor itself) and the symbolic mask
    rnnengine's layers attach to it: Masking's and Embedding's own, passed on
    by Dense, Dropout, Activation, TimeDistributed and recurrent layers that
    return sequences, combined by merge layers, dropped by everything else.
    """
    values, masks, done = {}, {}, set()
    for spec in model.layers:
        if spec.is_input:
            ref = TensorRef(spec.name, 0, 0)
            values[ref], masks[ref] = ("tensor",) + tuple(ref), None
            done.add((spec.name, 0))

    def value(ref):
        return values.get(ref, ("tensor",) + tuple(ref))

    pending = [(s, k, n) for s in model.layers if not s.is_input for k, n in enumerate(s.nodes)]
    while pending:
        rest = []
        for spec, k, node in pending:
            refs = node.inputs + node.states + ([node.mask] if node.mask else [])
            if not all((r.layer, r.node) in done for r in refs):
                rest.append((spec, k, node))
                continue
            _mask_node(ctx, spec, k, node, value, masks, values)
            done.add((spec.name, k))
        if len(rest) == len(pending):
            break  # a reference never produced: assembling reports it
        pending = rest
    for spec in model.layers:
        if spec.is_op:
            continue
        for node in spec.nodes:
            for ref in node.inputs + node.states:
                if by_name[ref.layer].is_op:
                    ctx.unsupported(_where(spec.name, spec.keras_class),
                                    f"takes the output of operation {ref.layer!r} as data: keras.ops "
                                    "operations in a model are not supported (only as masks)")
    for ref in model.outputs:
        if by_name[ref.layer].is_op:
            ctx.issues.append(f'model: output {ref.layer!r} is a keras.ops operation, which is not supported')


def _mask_node(ctx, spec, k, node, value, masks, values):
    where = _where(spec.name, spec.keras_class)
    ins = [value(r) for r in node.inputs]
    in_masks = [masks.get(r) for r in node.inputs]
    out = TensorRef(spec.name, k, 0)
    if spec.is_op:
        constant = node.constants[0] if len(node.constants) == 1 else None
        if spec.keras_class == "NotEqual" and isinstance(constant, (int, float)) and not isinstance(constant, bool):
            values[out] = ("ne", ins[0], float(constant))
        elif spec.keras_class == "Any":
            axis = spec.op_config.get("axis")
            values[out] = ("any", ins[0], axis if axis == -1 else ("axis", axis),
                           bool(spec.op_config.get("keepdims", False)))
        else:
            values[out] = ("op", spec.name, k)
        masks[out] = None
        return
    values[out] = ("tensor",) + tuple(out)
    table, kw = spec.table, spec.kwargs
    in_mask = in_masks[0] if in_masks else None
    if table == "Masking":
        out_mask = ("any", ("ne", ins[0], float(kw.get("mask_value", 0.0))), -1, False)
    elif table == "Embedding":
        out_mask = ("ne", ins[0], 0.0) if kw.get("mask_zero") else None
    elif table in RECURRENT:
        out_mask = in_mask if kw.get("return_sequences") else None
    elif table == "Bidirectional":
        out_mask = in_mask if spec.children["layer"].kwargs.get("return_sequences") else None
    elif table in ("Dense", "Dropout", "Activation", "TimeDistributed") or spec.rn_class == "Dropout":
        out_mask = in_mask
    elif table in _MULTI_INPUT:
        present = sorted({m for m in in_masks if m is not None}, key=repr)
        out_mask = None if not present else present[0] if len(present) == 1 else ("and", tuple(present))
    else:
        out_mask = None
    masks[out] = out_mask
    if spec.table == "Bidirectional" and spec.kwargs.get("merge_mode", "concat") is None:
        masks[TensorRef(spec.name, k, 1)] = out_mask
    if node.mask is not None:
        if value(node.mask) != in_mask:
            ctx.unsupported(where, f"the mask= passed to this call (from {node.mask.layer!r}) is not the mask "
                                   "rnnengine propagates to it; explicit masks are not supported")
    elif node.mask_none and in_mask is not None and table in _TAKES_STATES + ("TimeDistributed",):
        ctx.unsupported(where, "Keras called this layer without the mask its input carries; "
                               "rnnengine would apply it")
