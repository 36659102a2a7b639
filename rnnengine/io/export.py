"""rnnengine models out, Keras 3 files in: ``.keras`` archives and ``.weights.h5``.

    model.save("model.keras")            # keras.saving.load_model("model.keras")
    model.save_weights("m.weights.h5")   # keras_model.load_weights("m.weights.h5")

A ``.keras`` archive is a zip of ``config.json`` (Keras 3 layer configs:
``{"module", "class_name", "config", "registered_name", "build_config"}`` per
layer; a functional model adds Keras 3's ``inbound_nodes`` with
``__keras_tensor__`` references), ``metadata.json`` and ``model.weights.h5``.
The weights file uses the layout ``keras_v3.py`` reads (the table is in
``weight_table.py``): ``layers/<class key>/vars/<i>`` for a layer's own weights,
``cell/vars`` inside a recurrent layer, ``forward_layer/`` and
``backward_layer/`` inside Bidirectional, ``layer/`` inside TimeDistributed,
every ``vars`` group carrying its object's ``name`` attribute as Keras writes
it. Nothing is transposed: rnnengine keeps Keras's layout.

A compiled model also gets ``compile_config`` (optimizer, loss and metrics, by
Keras name) and its optimizer state under ``optimizer/vars`` in Keras's order
(``iterations``, ``learning_rate``, then the slot variables interleaved per
weight as Keras's ``add_optimizer_variables`` creates them), so Keras resumes
training where rnnengine stopped. Configs carry no initializers (the weights
are in the file) and keep only arguments Keras 3 accepts; regularizers and
constraints that are set are written in Keras 3's serialized form
(``{"module": "keras.regularizers", "class_name": "L2", "config": {...}}``).

This module writes files with json, zipfile and h5py only: it never imports
Keras or TensorFlow.
"""
import datetime
import io
import json
import os
import zipfile

import numpy as np

from .. import __version__ as _rnnengine_version
from ..errors import UnsupportedKerasFeature
from .keras_v3 import CONFIG, METADATA, WEIGHTS, layer_keys

# The Keras 3 release whose format this writer follows (and whose loader the tests run).
KERAS_FORMAT_VERSION = "3.15.1"

_ACTIVATION_NAMES = {"swish": "silu", "hard_swish": "hard_silu"}


def _layer_classes():
    from ..layers import core, merge, recurrent, wrappers

    return core, merge, recurrent, wrappers


# ----------------------------------------------------------------------------
# Configs

def _activation(layer, value):
    if value == "hard_sigmoid_keras2":
        raise UnsupportedKerasFeature(
            f"Layer \"{layer.name}\" uses Keras 2's hard_sigmoid (0.2 * x + 0.5), which Keras 3 does not have; "
            "it cannot be saved in the Keras 3 format."
        )
    return _ACTIVATION_NAMES.get(value, value)


def _dtype(layer):
    return layer.dtype


_OPTION_ATTRS = ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "embeddings_regularizer",
                 "activity_regularizer", "kernel_constraint", "recurrent_constraint", "bias_constraint",
                 "embeddings_constraint")


def _options(layer):
    """The layer's regularizers and constraints that are set, in Keras 3's serialized form."""
    from .. import constraints, regularizers

    out = {}
    for attr in _OPTION_ATTRS:
        value = getattr(layer, attr, None)
        if value is None:
            continue
        module = regularizers if attr.endswith("_regularizer") else constraints
        try:
            out[attr] = module.serialize(value)
        except ValueError:
            raise UnsupportedKerasFeature(
                f"Layer \"{layer.name}\": {attr}={value!r} has no Keras config (a plain function); it cannot be "
                "saved in the Keras 3 format. Use a rnnengine.regularizers / rnnengine.constraints object."
            ) from None
    return out


def layer_config(layer):
    """The Keras 3 ``config`` dict of one layer (without build info)."""
    cfg = _layer_config(layer)
    if "batch_shape" not in cfg:  # every layer but InputLayer
        cfg.update(_options(layer))
    return cfg


def _layer_config(layer):
    core, merge, recurrent, wrappers = _layer_classes()
    base = {"name": layer.name, "trainable": bool(layer.trainable), "dtype": _dtype(layer)}
    if isinstance(layer, core.InputLayer):
        return {"batch_shape": [layer.batch_size] + list(layer.shape), "dtype": layer.dtype, "sparse": False,
                "ragged": False, "name": layer.name}
    if isinstance(layer, recurrent._RNN):
        cfg = dict(base, return_sequences=layer.return_sequences, return_state=layer.return_state,
                   go_backwards=layer.go_backwards, stateful=layer.stateful, unroll=layer.unroll,
                   zero_output_for_mask=layer.zero_output_for_mask, units=layer.units,
                   activation=_activation(layer, layer.activation), use_bias=layer.use_bias,
                   dropout=layer.dropout, recurrent_dropout=layer.recurrent_dropout, seed=layer.seed)
        if isinstance(layer, (recurrent.LSTM, recurrent.GRU)):
            cfg["recurrent_activation"] = _activation(layer, layer.recurrent_activation)
        if isinstance(layer, recurrent.LSTM):
            cfg["unit_forget_bias"] = layer.unit_forget_bias
        if isinstance(layer, recurrent.GRU):
            cfg["reset_after"] = layer.reset_after
        return cfg
    if isinstance(layer, core.Dense):
        return dict(base, units=layer.units, activation=_activation(layer, layer.activation),
                    use_bias=layer.use_bias)
    if isinstance(layer, core.Dropout):
        noise = None if layer.noise_shape is None else list(layer.noise_shape)
        return dict(base, rate=layer.rate, noise_shape=noise, seed=layer.seed)
    if isinstance(layer, core.Activation):
        return dict(base, activation=_activation(layer, layer.activation))
    if isinstance(layer, core.Flatten):
        return dict(base, data_format="channels_last")
    if isinstance(layer, core.RepeatVector):
        return dict(base, n=layer.n)
    if isinstance(layer, core.Masking):
        return dict(base, mask_value=layer.mask_value)
    if isinstance(layer, core.Embedding):
        return dict(base, input_dim=layer.input_dim, output_dim=layer.output_dim, mask_zero=layer.mask_zero)
    if isinstance(layer, merge.Concatenate):
        return dict(base, axis=layer.axis)
    if isinstance(layer, merge._Merge):
        return base
    if isinstance(layer, wrappers.Bidirectional):
        return dict(base, merge_mode=layer.merge_mode, layer=_entry(layer.forward_layer),
                    backward_layer=_entry(layer.backward_layer))
    if isinstance(layer, wrappers.TimeDistributed):
        return dict(base, layer=_entry(layer.layer))
    raise UnsupportedKerasFeature(f"Layer \"{layer.name}\" ({type(layer).__name__}) has no Keras 3 config writer.")


def _input_shape(layer):
    if getattr(layer, "input_shape", None) is None:
        return None
    return [None] + [None if d is None else int(d) for d in layer.input_shape]


def _entry(layer, build_shape=None):
    """``{"module", "class_name", "config", "registered_name", "build_config"}`` of a layer."""
    core = _layer_classes()[0]
    entry = {"module": "keras.layers", "class_name": type(layer).__name__, "config": layer_config(layer),
             "registered_name": None}
    if not isinstance(layer, core.InputLayer):
        shape = build_shape if build_shape is not None else _input_shape(layer)
        if shape is not None:
            entry["build_config"] = {"input_shape": shape}
    return entry


def _sequential_config(model):
    model._ensure_built()
    core = _layer_classes()[0]
    input_layer = model._input_layer
    batch_shape = [None] + [None if d is None else int(d) for d in model._input_shape]
    if input_layer is None:
        entries = [{"module": "keras.layers", "class_name": "InputLayer",
                    "config": {"batch_shape": batch_shape, "dtype": model._first_dtype, "sparse": False,
                               "ragged": False, "name": "input_layer"}, "registered_name": None}]
    else:
        entries = [_entry(input_layer)]
    shape = tuple(model._input_shape)
    for layer in model.layers:
        entries.append(_entry(layer, [None] + [None if d is None else int(d) for d in shape]))
        shape = layer._node_output_shapes([shape])[0]
    del core
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": model.name, "trainable": bool(model.trainable), "dtype": model._layers[0].dtype,
                       "layers": entries, "build_input_shape": batch_shape},
            "registered_name": None, "build_config": {"input_shape": batch_shape}}


def _tensor_ref(t, history):
    return {"class_name": "__keras_tensor__",
            "config": {"shape": [None if d is None else int(d) for d in t.shape], "dtype": t.dtype,
                       "keras_history": list(history[id(t)])}}


def _functional_config(model):
    history = {}  # id(tensor) -> [layer name, node index, tensor index]
    node_count = {}
    inbound = {}
    for t in model.inputs:
        history[id(t)] = [t.input_layer.name, 0, 0]
    for node in model._nodes:
        layer = node.layer
        k = node_count.get(id(layer), 0)
        node_count[id(layer)] = k + 1
        if layer._multi_input:
            args = [[_tensor_ref(t, history) for t in node.inputs]]
        else:
            args = [_tensor_ref(node.inputs[0], history)]
        kwargs = {}
        if node.states:
            kwargs["initial_state"] = [_tensor_ref(t, history) for t in node.states]
        inbound.setdefault(id(layer), []).append({"args": args, "kwargs": kwargs})
        for i, t in enumerate(node.outputs):
            history[id(t)] = [layer.name, k, i]
    entries = []
    for layer in model.layers:
        build = None
        shapes = [[None] + [None if d is None else int(d) for d in n.inputs[0].shape[1:]]
                  for n in model._nodes if n.layer is layer]
        if layer._multi_input:
            shapes = [[[None] + list(t.shape[1:]) for t in n.inputs] for n in model._nodes if n.layer is layer]
        if shapes:
            build = shapes[0]
        entry = _entry(layer, build)
        entry["name"] = layer.name
        entry["inbound_nodes"] = inbound.get(id(layer), [])
        entries.append(entry)
    return {"module": "keras.src.models.functional", "class_name": "Functional",
            "config": {"name": model.name, "trainable": bool(model.trainable), "layers": entries,
                       "input_layers": [history[id(t)] for t in model.inputs],
                       "output_layers": [history[id(t)] for t in model.outputs]},
            "registered_name": "Functional", "build_config": {"input_shape": None}}


def model_config(model):
    """The Keras 3 ``config.json`` content of ``model`` (without compile_config)."""
    from ..models import Model, Sequential

    if isinstance(model, Sequential):
        return _sequential_config(model)
    if isinstance(model, Model):
        return _functional_config(model)
    raise TypeError(f"Cannot save {model!r}: expected an rnnengine Sequential or Model.")


def _compile_config(model):
    state = getattr(model, "_compile_state", None)
    if state is None:
        return None
    opt = state.optimizer
    config = opt.get_config()
    if opt._schedule is not None:
        return None  # a Python schedule has no Keras config
    opt_entry = {"module": "keras.optimizers", "class_name": type(opt).__name__, "config": config,
                 "registered_name": None}

    def loss_entry(spec):
        if spec is None or isinstance(spec, str):
            return spec
        from ..training import losses

        loss = losses.get(spec)
        cfg = {k: v for k, v in loss.get_config().items() if k != "dtype"}
        return {"module": "keras.losses", "class_name": type(loss).__name__, "config": cfg, "registered_name": None}

    def metric_entry(m):
        if m is None or isinstance(m, str):
            return m
        if isinstance(m, (list, tuple)):
            return [metric_entry(x) for x in m]
        if isinstance(m, dict):
            return {k: metric_entry(v) for k, v in m.items()}
        return {"module": "keras.metrics", "class_name": type(m).__name__,
                "config": {k: v for k, v in m.get_config().items() if v is not None}, "registered_name": None}

    loss = state.loss_spec
    if isinstance(loss, (list, tuple)):
        loss = [loss_entry(x) for x in loss]
    elif isinstance(loss, dict):
        loss = {k: loss_entry(v) for k, v in loss.items()}
    else:
        loss = loss_entry(loss)
    return {"optimizer": opt_entry, "loss": loss, "loss_weights": None,
            "metrics": metric_entry(state.metrics_spec), "weighted_metrics": metric_entry(state.weighted_metrics_spec),
            "run_eagerly": False, "steps_per_execution": 1, "jit_compile": False}


# ----------------------------------------------------------------------------
# Weights

def _weight_groups(layer, prefix):
    """[(group path, name attribute, [arrays])] for ``layer`` under ``prefix``."""
    _, _, recurrent, wrappers = _layer_classes()
    if isinstance(layer, recurrent._RNN):
        cell_name = {"SimpleRNN": "simple_rnn_cell", "LSTM": "lstm_cell", "GRU": "gru_cell"}[type(layer).__name__]
        return [(f"{prefix}/cell/vars", cell_name, list(layer._values)), (f"{prefix}/vars", layer.name, [])]
    if isinstance(layer, wrappers.Bidirectional):
        return (_weight_groups(layer.forward_layer, f"{prefix}/forward_layer")
                + _weight_groups(layer.backward_layer, f"{prefix}/backward_layer")
                + [(f"{prefix}/vars", layer.name, [])])
    if isinstance(layer, wrappers.TimeDistributed):
        return _weight_groups(layer.layer, f"{prefix}/layer") + [(f"{prefix}/vars", layer.name, [])]
    return [(f"{prefix}/vars", layer.name, list(layer._values) if layer._weight_specs else [])]


def _keras_layers(model):
    """``model.layers`` as Keras lists them (a Sequential's without its InputLayer)."""
    return list(model.layers)


def _write_weights_h5(model, target, optimizer_state=None):
    import h5py

    with h5py.File(target, "w") as f:
        layers = _keras_layers(model)
        keys = layer_keys([type(l).__name__ for l in layers])
        root = f.create_group("layers")
        for layer, key in zip(layers, keys):
            root.create_group(key)
            for path, name, arrays in _weight_groups(layer, f"layers/{key}"):
                group = f.require_group(path)
                group.attrs["name"] = name
                for i, a in enumerate(arrays):
                    group.create_dataset(str(i), data=np.asarray(a))
        if optimizer_state is not None:
            name, arrays = optimizer_state
            group = f.create_group("optimizer").create_group("vars")
            group.attrs["name"] = name
            for i, a in enumerate(arrays):
                group.create_dataset(str(i), data=a)
        f.create_group("vars").attrs["name"] = model.name


def _optimizer_state(model):
    """(name, [iterations, learning_rate, slot arrays...]) in Keras's variable order, or None."""
    state = getattr(model, "_compile_state", None)
    if state is None or state.params is None or state.optimizer._slots is None:
        return None
    opt, params = state.optimizer, state.params
    groups = opt._slot_groups()
    if groups is None:
        return None
    arrays = [np.asarray(opt.iterations, np.int64), np.asarray(opt.learning_rate, np.float32)]
    for group in groups:
        for (a, b), shape in zip(params.segments, params.shapes):
            for name in group:
                arrays.append(opt._slots[name][a:b].reshape(shape).copy())
    return opt.name, arrays


def save_weights(model, filepath, overwrite=True):
    """Write ``model``'s weights as a Keras 3 ``.weights.h5`` file."""
    filepath = os.fspath(filepath)
    if not filepath.endswith(".weights.h5"):
        raise ValueError(f"The filename must end in `.weights.h5`. Received: filepath={filepath}")
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(f"{filepath} exists and overwrite=False.")
    _ensure_built(model)
    _write_weights_h5(model, filepath)


def _ensure_built(model):
    if hasattr(model, "_ensure_built"):
        model._ensure_built()


def save_model(model, filepath, overwrite=True):
    """Write ``model`` as a Keras 3 ``.keras`` archive."""
    filepath = os.fspath(filepath)
    if not filepath.endswith(".keras"):
        raise ValueError("Invalid filepath extension for saving. Please add the `.keras` extension: rnnengine "
                         f"writes the Keras 3 format. Received: filepath={filepath}")
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(f"{filepath} exists and overwrite=False.")
    _ensure_built(model)
    config = model_config(model)
    compile_config = _compile_config(model)
    config["compile_config"] = compile_config
    optimizer_state = _optimizer_state(model) if compile_config is not None else None
    metadata = {"keras_version": KERAS_FORMAT_VERSION,
                "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
                "saved_by": f"rnnengine {_rnnengine_version}"}
    weights = io.BytesIO()
    _write_weights_h5(model, weights, optimizer_state)
    tmp = filepath + ".tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(METADATA, json.dumps(metadata))
        zf.writestr(CONFIG, json.dumps(config))
        zf.writestr(WEIGHTS, weights.getvalue())
    os.replace(tmp, filepath)
