"""compile, fit, evaluate, train_on_batch, test_on_batch: Keras 3's training loop.

How one training step flows (``_train_step``): the model's ``ParamSet`` makes
sure every layer computes with (and accumulates gradients into) views of the
one flat parameter / gradient arrays; a training workspace for this batch shape
comes from the model's pool (allocated once, reused by every batch of that
shape); ``model._run_train`` runs each node's ``_node_forward_train``; the
losses write d(loss)/d(output) (or d(loss)/d(logits), see ``losses.py``) into
the workspace; ``model._backward`` runs each node's ``_node_backward`` in
reverse, accumulating weight gradients; the optimizer updates the flat
parameters in place; the metrics see this step's outputs.

Keras semantics kept here (``keras/src/trainers/trainer.py``,
``backend/tensorflow/trainer.py``, ``data_adapters``):

- ``fit`` takes ``validation_split`` as the *last* fraction of the samples,
  before any shuffling; shuffles the training samples each epoch
  (``shuffle=True``); batches of ``batch_size`` (default 32), the last one
  smaller; the logged ``loss`` is the mean of the batch losses weighted by
  batch size, and metrics are running means over the epoch; ``val_*`` come
  from ``evaluate`` on the validation data at the end of the epoch.
- ``evaluate`` returns the loss alone when there are no metrics, else
  ``[loss, *metrics]`` (``return_dict=True``: the dict).
- ``train_on_batch`` / ``test_on_batch`` reset the metrics and return this one
  batch's loss and metrics (the loss before the update).
- the loss is the compiled loss plus the regularization penalties (weights'
  and activity's, ``regularization.py``), whose gradients join the backward;
  the weights' constraints apply after the optimizer's update.
"""
import contextlib
import math

import numpy as np

from .. import _validation
from . import callbacks as callbacks_module
from . import losses as losses_module
from . import metrics as metrics_module
from . import optimizers as optimizers_module
from . import random as _random
from . import regularization
from .params import ParamSet

_DEFAULT_BATCH_SIZE = 32


class CompiledState:
    """What ``compile`` fixed: optimizer, one loss per output, metrics, weights."""

    def __init__(self, model, optimizer, loss, loss_weights, metrics, weighted_metrics):
        self.model = model
        self.optimizer = optimizer
        self.loss_spec = loss
        self.metrics_spec = metrics
        self.weighted_metrics_spec = weighted_metrics
        self.output_names = model._output_names()
        n = len(self.output_names)
        self.losses = _per_output(loss, self.output_names, "loss", losses_module.get) if loss is not None else None
        if loss_weights is None:
            self.loss_weights = [1.0] * n
        else:
            self.loss_weights = [float(w) if w is not None else 1.0 for w in
                                 _per_output(loss_weights, self.output_names, "loss_weights", lambda w: w)]
        self.metrics = None  # resolved on the first batch: "accuracy" depends on y's shape
        self.params = None
        self.loss_total = 0.0
        self.loss_count = 0.0

    # -- metrics ------------------------------------------------------------------------------
    def build_metrics(self, ys):
        if self.metrics is not None:
            return
        out_shapes = self.model._output_shapes()
        self.metrics = []
        for k, name in enumerate(self.output_names):
            spec = _metrics_for_output(self.metrics_spec, k, name, len(self.output_names))
            weighted = _metrics_for_output(self.weighted_metrics_spec, k, name, len(self.output_names))
            shape = (None,) + tuple(out_shapes[k])
            found = [(metrics_module.get(m, ys[k], shape), False) for m in spec]
            found += [(metrics_module.get(m, ys[k], shape), True) for m in weighted]
            if len(self.output_names) > 1:
                for m, _ in found:
                    m.name = f"{name}_{m.name}"
            self.metrics.append(found)

    def reset_metrics(self):
        self.loss_total = self.loss_count = 0.0
        self.output_loss_totals = [0.0] * len(self.output_names)
        for found in self.metrics or []:
            for m, _ in found:
                m.reset_state()

    def logs(self):
        logs = {"loss": self.loss_total / self.loss_count if self.loss_count else 0.0}
        if len(self.output_names) > 1 and self.loss_count:
            for name, t in zip(self.output_names, self.output_loss_totals):
                logs[f"{name}_loss"] = t / self.loss_count
        for found in self.metrics or []:
            for m, _ in found:
                logs[m.name] = float(m.result())
        return dict(sorted(logs.items()))  # Keras 3 logs (and History) list keys alphabetically

    def metric_names(self):
        names = ["loss"]
        if len(self.output_names) > 1:
            names += [f"{n}_loss" for n in self.output_names]
        for found in self.metrics or []:
            names += [m.name for m, _ in found]
        return names


def _per_output(spec, names, what, resolve):
    n = len(names)
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(names))
        if unknown:
            raise ValueError(f"compile: `{what}` has keys {unknown} that are not output names {names}.")
        return [resolve(spec[name]) if spec.get(name) is not None else None for name in names]
    if isinstance(spec, (list, tuple)) and not isinstance(spec, str):
        if len(spec) != n:
            raise ValueError(f"compile: `{what}` is a list of {len(spec)} entries but the model has {n} "
                             f"output(s) {names}.")
        return [resolve(s) if s is not None else None for s in spec]
    return [resolve(spec)] + [resolve(spec) if what == "loss" else spec for _ in range(n - 1)]


def _metrics_for_output(spec, k, name, n):
    if spec is None:
        return []
    if isinstance(spec, dict):
        got = spec.get(name, [])
        return list(got) if isinstance(got, (list, tuple)) else [got]
    if isinstance(spec, (list, tuple)):
        if n > 1 and len(spec) == n and all(isinstance(s, (list, tuple)) or s is None for s in spec):
            got = spec[k] or []
            return list(got) if isinstance(got, (list, tuple)) else [got]
        return list(spec)
    return [spec]


# ----------------------------------------------------------------------------
# compile

def compile(model, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, weighted_metrics=None,
            run_eagerly=False, steps_per_execution=1, jit_compile="auto", auto_scale_loss=True):
    optimizer = optimizers_module.get(optimizer)
    _check_trainable(model)
    model._compile_state = CompiledState(model, optimizer, loss, loss_weights, metrics, weighted_metrics)
    model.optimizer = optimizer
    model.loss = loss
    model.compiled = True
    model.stop_training = False


def _check_trainable(model):
    if hasattr(model, "_ensure_built"):
        try:
            model._ensure_built()
        except ValueError:
            return  # built on the first batch; checked again then
    layers = [l for l in model.layers if type(l).__name__ != "InputLayer"]
    dtypes = sorted({l.dtype for l in layers})
    if len(dtypes) > 1:
        raise NotImplementedError(
            f"Model \"{model.name}\" mixes layer dtypes {dtypes}: rnnengine trains models whose layers share "
            "one dtype."
        )
    for layer in layers:
        layer._check_trainable()


def _state(model, what):
    state = getattr(model, "_compile_state", None)
    if state is None:
        raise RuntimeError(f"You must call `compile()` before using the model \"{model.name}\" in `{what}`.")
    if state.losses is None or all(l is None for l in state.losses):
        raise ValueError(f"No loss to compute for model \"{model.name}\" in `{what}`. Provide a `loss` "
                         "argument in `compile()`.")
    return state


def _params(model, state):
    if state.params is None:
        _check_trainable(model)
        state.params = ParamSet(model)
    state.params.bind()
    return state.params


# ----------------------------------------------------------------------------
# Data

def _as_targets(model, state, y, n, what):
    names = state.output_names
    if y is None:
        raise ValueError(f"`{what}` needs targets: received y=None for model \"{model.name}\".")
    if isinstance(y, dict):
        missing = [k for k in names if k not in y]
        if missing:
            raise ValueError(f"`{what}`: y is missing the outputs {missing}; received keys {sorted(y)}.")
        ys = [y[k] for k in names]
    elif len(names) > 1:
        if not isinstance(y, (list, tuple)) or len(y) != len(names):
            raise ValueError(f"`{what}`: model \"{model.name}\" has {len(names)} outputs {names}; pass y as a "
                             f"list or dict of {len(names)} arrays.")
        ys = list(y)
    elif isinstance(y, (list, tuple)) and len(y) == 1 and np.shape(y[0])[:1] == (n,) and n != 1:
        ys = [y[0]]
    else:
        ys = [y]
    out_specs = model._output_shapes()
    dtypes = model._output_dtypes()
    checked = []
    for k, (yk, loss, shape, dtype) in enumerate(zip(ys, state.losses, out_specs, dtypes)):
        yk = np.asarray(yk)
        if yk.dtype.kind not in "fiub":
            raise TypeError(f"`{what}`: y for output \"{names[k]}\" has dtype {yk.dtype}; expected numbers.")
        if yk.ndim == 0 or yk.shape[0] != n:
            raise ValueError(
                "Data cardinality is ambiguous. Make sure all arrays contain the same number of samples. "
                f"'x' sizes: {n}; 'y' sizes: {yk.shape[0] if yk.ndim else 'a scalar'} "
                f"(output \"{names[k]}\")."
            )
        if loss is not None:
            _check_target_shape(loss, yk, shape, names[k], model)
        if not isinstance(loss, losses_module.SparseCategoricalCrossentropy) and yk.dtype != dtype:
            yk = _validation.cast(yk, dtype)
        checked.append(np.ascontiguousarray(yk))
    return checked


def _fits(got, want):
    return len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want))


def _check_target_shape(loss, y, out_shape, name, model):
    got, want = tuple(y.shape[1:]), tuple(out_shape)
    if _fits(got, want):
        want = got  # fill the free axes (None) from y
    elif _fits(got, want[:-1]) or _fits(got, want[:-1] + (1,)):
        want = got[:len(want) - 1] + want[len(want) - 1:]
    if isinstance(loss, losses_module.SparseCategoricalCrossentropy):
        ok = got == want[:-1] or got == want[:-1] + (1,)
        need = f"{_validation.format_shape((None,) + want[:-1])} of integer class indices"
    elif isinstance(loss, (losses_module.MeanSquaredError, losses_module.MeanAbsoluteError)):
        ok = got == want or (want[-1:] == (1,) and got == want[:-1]) or (got[-1:] == (1,) and got[:-1] == want)
        need = _validation.format_shape((None,) + want)
    else:
        ok = got == want
        need = _validation.format_shape((None,) + want)
        if isinstance(loss, losses_module.CategoricalCrossentropy) and got in (want[:-1] + (1,), want[:-1]):
            need += (" (one-hot: use keras.utils.to_categorical, or loss='sparse_categorical_crossentropy' "
                     "for integer labels)")
    if not ok:
        raise ValueError(
            f"Target y has shape {_validation.format_shape(y.shape)}, but the output \"{name}\" of model "
            f"\"{model.name}\" has shape {_validation.format_shape((None,) + want)}: loss {loss.name!r} "
            f"needs y of shape {need}."
        )


def _sample_weights(sample_weight, class_weight, ys, n, what):
    if sample_weight is not None and class_weight is not None:
        raise ValueError("Arguments `sample_weight` and `class_weight` cannot be specified at the same time. "
                         f"Received: sample_weight={sample_weight}, class_weight={class_weight}")
    if class_weight is not None:
        if len(ys) > 1:
            raise ValueError("`class_weight` is only supported for models with a single output.")
        y = ys[0]
        classes = np.argmax(y, axis=-1) if y.ndim > 1 and y.shape[-1] > 1 else y.reshape(y.shape[0], -1)[:, 0]
        classes = np.round(classes).astype(np.int64)
        missing = sorted(set(np.unique(classes).tolist()) - set(int(k) for k in class_weight))
        if missing:
            raise ValueError(f"`class_weight` must contain all classes in the data. The classes {missing} "
                             f"exist in the data but not in `class_weight`.")
        table = {int(k): float(v) for k, v in class_weight.items()}
        return [np.array([table[c] for c in classes.tolist()], dtype=np.float32)]
    if sample_weight is None:
        return [None] * len(ys)
    sws = list(sample_weight) if isinstance(sample_weight, (list, tuple)) and len(ys) > 1 else [sample_weight]
    out = []
    for sw in sws:
        sw = None if sw is None else np.asarray(sw, dtype=np.float64)
        if sw is not None and (sw.ndim == 0 or sw.shape[0] != n):
            raise ValueError(f"`{what}`: sample_weight has shape {sw.shape}; expected {n} entries, one per sample.")
        out.append(sw)
    return out + [None] * (len(ys) - len(out))


def _batch_size(batch_size, what):
    if batch_size is None:
        return _DEFAULT_BATCH_SIZE
    return _validation.positive_int(batch_size, "batch_size", what)


def _split_validation(arrays, ys, sws, validation_split):
    if not 0.0 < validation_split < 1.0:
        raise ValueError(f"`validation_split` must be in (0, 1); received {validation_split}.")
    n = arrays[0].shape[0]
    split_at = int(math.floor(n * (1.0 - validation_split)))
    if split_at == 0 or split_at == n:
        raise ValueError(
            f"Training data contains {n} samples, which is not sufficient to split it into a validation and "
            f"training set as specified by `validation_split={validation_split}`. Either provide more data, or "
            "a different value for the `validation_split` argument."
        )

    def cut(items, a, b):
        return [None if v is None else v[a:b] for v in items]

    return ((cut(arrays, 0, split_at), cut(ys, 0, split_at), cut(sws, 0, split_at)),
            (cut(arrays, split_at, n), cut(ys, split_at, n), cut(sws, split_at, n)))


class _Batcher:
    """Batches of (x arrays, y arrays, sample weights), gathered into buffers
    reused across batches and epochs (one set per batch size)."""

    def __init__(self, arrays, ys, sws, batch_size):
        self.items = list(arrays) + list(ys) + list(sws)
        self.nx, self.ny = len(arrays), len(ys)
        self.n = arrays[0].shape[0]
        self.batch_size = batch_size
        self._buffers = {}

    def __len__(self):
        return -(-self.n // self.batch_size)

    def batch(self, step, order=None):
        a = step * self.batch_size
        b = min(a + self.batch_size, self.n)
        if order is None:
            out = [None if v is None else v[a:b] for v in self.items]
        else:
            idx = order[a:b]
            bufs = self._buffers.get(b - a)
            if bufs is None:
                bufs = self._buffers[b - a] = [None if v is None else np.empty((b - a,) + v.shape[1:], v.dtype)
                                               for v in self.items]
            out = []
            for v, buf in zip(self.items, bufs):
                if v is None:
                    out.append(None)
                else:
                    np.take(v, idx, axis=0, out=buf)
                    out.append(buf)
        return out[:self.nx], out[self.nx:self.nx + self.ny], out[self.nx + self.ny:]


# ----------------------------------------------------------------------------
# One step

def _losses_and_grads(model, state, ws, outs, out_masks, ys, sws, need_grad):
    total = 0.0
    douts, dlogits = [], []
    per_output = []
    for k, (loss, weight) in enumerate(zip(state.losses, state.loss_weights)):
        if loss is None:
            douts.append(None)
            dlogits.append(None)
            per_output.append(0.0)
            continue
        y_pred = outs[k]
        logits = None
        if loss.logits_activation is not None:
            found = model._output_logits(ws, k)
            if found is not None and found[0] == loss.logits_activation:
                logits = found[1]
        values, grad, wrt_logits = loss._values_and_grad(ys[k], y_pred, logits, need_grad=need_grad)
        mask = out_masks[k] if out_masks[k] is not None and out_masks[k].shape == values.shape else None
        value, dvalues = losses_module.reduce_values(values, sws[k], mask, loss.reduction)
        value = float(value)
        per_output.append(value)
        total += weight * value
        if not need_grad:
            continue
        dest = ws.loss_grads[k]
        np.multiply(grad, dvalues[..., None], out=dest, casting="unsafe")
        if weight != 1.0:
            np.multiply(dest, dest.dtype.type(weight), out=dest)
        douts.append(None if wrt_logits else dest)
        dlogits.append(dest if wrt_logits else None)
    return total, per_output, douts, dlogits


def _update_metrics(model, state, ws, outs, out_masks, ys, sws, total, per_output, B):
    state.loss_total += total * B
    state.loss_count += B
    for k, v in enumerate(per_output):
        state.output_loss_totals[k] += v * B
    for k, found in enumerate(state.metrics):
        logits = None
        if found:
            got = model._output_logits(ws, k)
            logits = None if got is None else got[1]
        for metric, weighted in found:
            mask = out_masks[k]
            if isinstance(metric, metrics_module.MeanMetricWrapper):
                kw = {}
                if isinstance(metric, metrics_module._LossMetric) and got is not None and \
                        got[0] == metric._loss.logits_activation:
                    kw["logits"] = logits
                metric.update_state(ys[k], outs[k], sws[k] if weighted else None, mask=mask, **kw)
            else:
                metric.update_state(ys[k], outs[k], sws[k] if weighted else None)


def _train_step(model, state, arrays, ys, sws):
    params = _params(model, state)
    state.build_metrics(ys)
    B = arrays[0].shape[0]
    key = (B,) + tuple((a.shape[1:], a.dtype.str) for a in arrays)
    ws = model._train_pool.acquire(key)
    try:
        outs, out_masks = model._run_train(ws, arrays, training=True)
        params.zero_grad()
        total, per_output, douts, dlogits = _losses_and_grads(model, state, ws, outs, out_masks, ys, sws, True)
        # Keras: loss = compiled loss + sum(model.losses) (weight penalties, then activity ones)
        total += regularization.weight_penalty(model, accumulate_grads=True) + ws.activity_loss
        model._backward(ws, douts, dlogits)
        state.optimizer.apply(params.trainable_params, params.trainable_grads, params.segments,
                              regularization.constrained_weights(model))
        params.after_update()
        _update_metrics(model, state, ws, outs, out_masks, ys, sws, total, per_output, B)
    finally:
        model._train_pool.release(key, ws)
    return state.logs()


def _test_step(model, state, arrays, ys, sws):
    state.build_metrics(ys)
    if state.params is not None:
        state.params.bind()
    B = arrays[0].shape[0]
    key = (B,) + tuple((a.shape[1:], a.dtype.str) for a in arrays)
    ws = model._train_pool.acquire(key)
    try:
        outs, out_masks = model._run_train(ws, arrays, training=False)
        total, per_output, _, _ = _losses_and_grads(model, state, ws, outs, out_masks, ys, sws, False)
        total += regularization.weight_penalty(model) + ws.activity_loss
        _update_metrics(model, state, ws, outs, out_masks, ys, sws, total, per_output, B)
    finally:
        model._train_pool.release(key, ws)
    return state.logs()


def _flatten(state, logs, return_dict):
    if return_dict:
        return logs
    names = state.metric_names()
    results = [logs[k] for k in names if k in logs] + [logs[k] for k in sorted(logs) if k not in names]
    return results[0] if len(results) == 1 else results


def _verbose(verbose):
    return 1 if verbose == "auto" else int(verbose)


# ----------------------------------------------------------------------------
# BLAS threads
#
# The training kernels make one small GEMM per timestep (``dgates_t @
# recurrent_kernel.T``, (B, K*H) @ (K*H, H)). Below about 2M multiply-adds a
# multi-threaded BLAS only adds synchronisation: on the digits model (B=64,
# H=50) OpenBLAS's threads made a training step 5x slower on a busy 2-core
# machine (bench/train_digits.py, 1.2 s vs 5.0 s for 25 epochs). So training
# runs such models with BLAS on one thread (threadpoolctl, when installed; the
# limit is process-wide while a fit/evaluate/train_on_batch call runs).

_SMALL_STEP = 1 << 21
_controller = []


def _blas_threads(model, B):
    work = 0
    for layer in model.layers:
        for owner in layer._weight_owners():
            if hasattr(owner, "_gates"):
                work = max(work, B * owner._gates * owner.units * owner.units)
    if work == 0 or work >= _SMALL_STEP:
        return contextlib.nullcontext()
    if not _controller:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _controller.append(None)
        else:
            _controller.append(ThreadpoolController())
    if _controller[0] is None:
        return contextlib.nullcontext()
    return _controller[0].limit(limits=1, user_api="blas")


# ----------------------------------------------------------------------------
# Public entry points (BaseModel delegates here)

def train_on_batch(model, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
    state = _state(model, "train_on_batch")
    arrays = model._validate_inputs(x)
    ys = _as_targets(model, state, y, arrays[0].shape[0], "train_on_batch")
    sws = _sample_weights(sample_weight, class_weight, ys, arrays[0].shape[0], "train_on_batch")
    state.build_metrics(ys)
    state.reset_metrics()
    with _blas_threads(model, arrays[0].shape[0]):
        return _flatten(state, _train_step(model, state, arrays, ys, sws), return_dict)


def test_on_batch(model, x, y=None, sample_weight=None, return_dict=False):
    state = _state(model, "test_on_batch")
    arrays = model._validate_inputs(x)
    ys = _as_targets(model, state, y, arrays[0].shape[0], "test_on_batch")
    sws = _sample_weights(sample_weight, None, ys, arrays[0].shape[0], "test_on_batch")
    state.build_metrics(ys)
    state.reset_metrics()
    with _blas_threads(model, arrays[0].shape[0]):
        return _flatten(state, _test_step(model, state, arrays, ys, sws), return_dict)


def evaluate(model, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
             callbacks=None, return_dict=False, _callback_list=None):
    state = _state(model, "evaluate")
    arrays = model._validate_inputs(x)
    n = arrays[0].shape[0]
    ys = _as_targets(model, state, y, n, "evaluate")
    sws = _sample_weights(sample_weight, None, ys, n, "evaluate")
    batch_size = _batch_size(batch_size, "evaluate")
    with _blas_threads(model, min(batch_size, n)):
        return _evaluate_arrays(model, state, arrays, ys, sws, batch_size, steps, verbose, callbacks, return_dict,
                                _callback_list)


def _evaluate_arrays(model, state, arrays, ys, sws, batch_size, steps, verbose, callbacks, return_dict,
                     callback_list=None):
    batcher = _Batcher(arrays, ys, sws, batch_size)
    n_steps = len(batcher) if steps is None else min(int(steps), len(batcher))
    cbs = callback_list or callbacks_module.CallbackList(callbacks, model=model, add_progbar=True,
                                                         verbose=_verbose(verbose), epochs=1, steps=n_steps)
    state.build_metrics(ys)
    state.reset_metrics()
    cbs.on_test_begin()
    logs = {}
    for step in range(n_steps):
        cbs.on_test_batch_begin(step)
        xb, yb, swb = batcher.batch(step)
        logs = _test_step(model, state, xb, yb, swb)
        cbs.on_test_batch_end(step, logs)
    logs = state.logs()
    cbs.on_test_end(logs)
    return _flatten(state, logs, return_dict)


def fit(model, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
        validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
        steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1):
    state = _state(model, "fit")
    arrays = model._validate_inputs(x)
    n = arrays[0].shape[0]
    ys = _as_targets(model, state, y, n, "fit")
    sws = _sample_weights(sample_weight, class_weight, ys, n, "fit")
    batch_size = _batch_size(batch_size, "fit")
    epochs = int(epochs)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (list, tuple)) or len(validation_data) not in (2, 3):
            raise ValueError("`validation_data` should be a tuple `(x_val, y_val)` or "
                             f"`(x_val, y_val, val_sample_weights)`. Received: {type(validation_data).__name__}")
        xv, yv = validation_data[0], validation_data[1]
        swv = validation_data[2] if len(validation_data) == 3 else None
        av = model._validate_inputs(xv)
        yvs = _as_targets(model, state, yv, av[0].shape[0], "fit (validation_data)")
        val = (av, yvs, _sample_weights(swv, None, yvs, av[0].shape[0], "fit (validation_data)"))
    elif validation_split:
        (arrays, ys, sws), val = _split_validation(arrays, ys, sws, validation_split)
        n = arrays[0].shape[0]
    if shuffle == "batch":
        raise NotImplementedError("fit(shuffle='batch') is not supported by rnnengine; use shuffle=True.")
    batcher = _Batcher(arrays, ys, sws, batch_size)
    steps = len(batcher) if steps_per_epoch is None else min(int(steps_per_epoch), len(batcher))
    verbose = _verbose(verbose)
    cbs = callbacks_module.CallbackList(callbacks, model=model, add_history=True, add_progbar=verbose != 0,
                                        verbose=verbose, epochs=epochs, steps=steps)
    model.stop_training = False
    _params(model, state)
    state.build_metrics(ys)
    with _blas_threads(model, min(batch_size, n)):
        return _fit_loop(model, state, cbs, batcher, steps, epochs, initial_epoch, shuffle, n, val, batch_size,
                         validation_batch_size, validation_steps, validation_freq)


def _fit_loop(model, state, cbs, batcher, steps, epochs, initial_epoch, shuffle, n, val, batch_size,
              validation_batch_size, validation_steps, validation_freq):
    cbs.on_train_begin()
    epoch_logs = {}
    for epoch in range(int(initial_epoch), epochs):
        state.reset_metrics()
        cbs.on_epoch_begin(epoch)
        order = _random.generator().permutation(n) if shuffle else None
        logs = {}
        for step in range(steps):
            cbs.on_train_batch_begin(step)
            xb, yb, swb = batcher.batch(step, order)
            logs = _train_step(model, state, xb, yb, swb)
            cbs.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = dict(state.logs())
        if val is not None and (epoch + 1) % int(validation_freq) == 0:
            val_logs = _evaluate_arrays(model, state, val[0], val[1], val[2],
                                        _batch_size(validation_batch_size or batch_size, "fit"), validation_steps,
                                        0, None, True, callback_list=cbs)
            epoch_logs.update({"val_" + k: v for k, v in val_logs.items()})
        cbs.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    cbs.on_train_end(epoch_logs)
    return cbs.history
