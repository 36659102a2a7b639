"""What Sequential and the functional Model share: predict, weights, summary.

A call flows ``predict`` -> ``_validate_inputs`` (once per call: rank, feature
size, dtype, layout) -> a workspace for this (batch, input shapes, dtypes) from
the pool -> ``_run`` (each layer's ``_node_forward`` on its buffers; the layer
picks its kernel) -> the outputs copied into the returned arrays (or ``out``).

Design: workspaces are per call, not per model: each in-flight call takes one
from ``WorkspacePool`` and gives it back, so concurrent ``predict`` calls from
several threads never share scratch memory, and the lock is held only to pop
and push, never while kernels run. Weights: a call plan (plan.py) binds them
under the model's weights lock; the general path snapshots every layer's
packed weights under that lock at the start of each batch
(``_weights_snapshot``), so a concurrent ``set_weights`` is seen entirely or
not at all. Stateful layers carry state on the layer, so a stateful model is
single-owner (one thread at a time).

Training (``compile``, ``fit``, ``evaluate``, ``train_on_batch``,
``test_on_batch``; the loop is ``training/engine.py``) uses a second pool of
workspaces built from each node's ``_node_train_spec`` (forward buffers plus
saved activations and gradient scratch) and the subclass's ``_run_train`` and
``_backward``. Training updates the weights in place, so a model being trained
is single-owner too. ``save`` writes a Keras 3 ``.keras`` archive and
``save_weights`` a Keras 3 ``.weights.h5`` (``io/export.py``).
"""
import threading

import numpy as np

from .. import _validation
from ..layers.base import bind_call_weights
from ..workspace import WorkspacePool
from .plan import ThreadPlans, get_plan

_KERAS_PREDICT_BATCH_SIZE = 32


class BaseModel:
    def __init__(self, name, trainable=True):
        self.name = name
        self.trainable = trainable
        self._pool = WorkspacePool(self._make_workspace)
        self._train_pool = WorkspacePool(self._make_train_workspace)
        self._compile_state = None
        self.optimizer = None
        self.loss = None
        self.compiled = False
        self.stop_training = False
        self.history = None
        self._local = threading.local()  # per-thread call plans (plan.py)
        self._output_spec_cache = {}
        self._owners_cache = None  # the layers that own weights (_weights_snapshot)
        # Held while weights are swapped and while a call plan binds them, and
        # while the model builds; never while kernels run.
        self._weights_lock = threading.RLock()

    def _clear_pools(self):
        self._pool.clear()
        self._train_pool.clear()
        if getattr(self, "_compile_state", None) is not None:
            self._compile_state.params = None  # the layers may have changed: rebind on the next step
        self._local = threading.local()  # per-thread call plans (plan.py)
        self._output_spec_cache = {}
        self._owners_cache = None

    # Subclasses provide: layers, _validate_inputs(x) -> [arrays],
    # _output_specs([(shape, dtype)]) -> [(shape, dtype)], _make_workspace(key),
    # _run(ws, arrays, training) -> [arrays], _single_output.

    def _forward_into(self, arrays, dests, training=False):
        """Run the model on one batch and copy the outputs into ``dests``."""
        if self._has_plans and not training:
            plans = getattr(self._local, "plans", None)
            if plans is None:
                plans = self._local.plans = ThreadPlans()
            plan = get_plan(self, plans, arrays)
            if plan is not None and plan.run(arrays, dests):
                if plan.cached:
                    plans.fast = plan.cy  # the next predict of this shape goes straight to it
                    if not plan.cached:  # dropped by another thread's trim meanwhile
                        plans.fast = None
                return
        key = (arrays[0].shape[0],) + tuple((a.shape[1:], a.dtype.str) for a in arrays)
        snapshot = self._weights_snapshot()
        ws = self._pool.acquire(key)
        previous = bind_call_weights(snapshot)
        try:
            for dest, y in zip(dests, self._run(ws, arrays, training)):
                np.copyto(dest, y)
        finally:
            bind_call_weights(previous)
            self._pool.release(key, ws)

    def _weight_owner_layers(self):
        """The layers that hold weights (a wrapper's inner layers), in order; cached."""
        owners = self._owners_cache
        if owners is None:
            owners = self._owners_cache = [o for layer in self.layers for o in layer._weight_owners()]
        return owners

    def _weights_snapshot(self):
        """{layer: packed weights} for every layer that owns weights, read at
        once under the weights lock: a graph (or a stack a call plan cannot
        describe) reaches its layers one after another, so it must not read
        each one's weights as it gets there, or a concurrent ``set_weights``
        can land between two layers. No copies: ``set_weights`` replaces the
        packed tuples, it never writes into them. The lock is released before
        any kernel runs."""
        owners = self._weight_owner_layers()
        with self._weights_lock:
            return {owner: owner._packed for owner in owners}

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None, out=None):
        """Outputs for ``x``, computed in batches of ``batch_size`` (Keras's default 32).

        Parameters
        ----------
        x : array-like, or a list of them for a model with several inputs
            Shape (samples, ...). float32/float64 is used as it is when it matches
            the model's dtype and cast otherwise; integer, bool and float16 are cast.
        batch_size : int, optional
            Rows per kernel call (Keras's default: 32). Stateful layers carry
            their state from one batch to the next.
        out : ndarray or list of ndarray, optional
            Filled and returned: exactly the output's shape and dtype, C-contiguous.
            With ``out`` a call allocates no array at all.

        Returns
        -------
        ndarray, or a list of them for a model with several outputs.
        """
        plans = getattr(self._local, "plans", None)
        fast = plans.fast if plans is not None else None
        if fast is not None:  # the shape this thread ran last, still current: one C call
            # batch_size None is Keras's 32, not the whole batch: a plan built by
            # predict_on_batch for 33 rows must not run a predict's 32 + 1 as one
            # call (other bits for the last row than the general path's).
            y = fast.predict(x, out, _KERAS_PREDICT_BATCH_SIZE if batch_size is None else batch_size)
            if y is not None:
                return y
        return self._predict(self._validate_inputs(x), batch_size, out)

    def _predict(self, arrays, batch_size, out):
        n = arrays[0].shape[0]
        if any(a.shape[0] != n for a in arrays):
            raise ValueError(f"All inputs of model \"{self.name}\" must have the same number of samples; "
                             f"received {[a.shape[0] for a in arrays]}.")
        batch_size = _KERAS_PREDICT_BATCH_SIZE if batch_size is None else \
            _validation.positive_int(batch_size, "batch_size", "predict")
        spec_key = tuple((a.shape[1:], a.dtype.str) for a in arrays)
        specs = self._output_spec_cache.get(spec_key)
        if specs is None:
            specs = self._output_specs([(a.shape[1:], a.dtype) for a in arrays])
            if len(self._output_spec_cache) > 64:
                self._output_spec_cache.clear()
            self._output_spec_cache[spec_key] = specs
        if out is None:
            outs = [np.empty((n,) + tuple(shape), dtype=dtype) for shape, dtype in specs]
        else:
            outs = [out] if self._single_output and isinstance(out, np.ndarray) else list(out)
            if len(outs) != len(specs):
                raise ValueError(f"`out` must hold {len(specs)} arrays for model \"{self.name}\".")
            for o, (shape, dtype) in zip(outs, specs):
                _validation.check_out(o, (n,) + tuple(shape), dtype)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            self._forward_into([a[start:stop] for a in arrays], [o[start:stop] for o in outs])
        return outs[0] if self._single_output else outs

    def predict_on_batch(self, x, out=None):
        """Outputs for ``x`` as one batch."""
        plans = getattr(self._local, "plans", None)
        fast = plans.fast if plans is not None else None
        if fast is not None:
            y = fast.predict(x, out)
            if y is not None:
                return y
        arrays = self._validate_inputs(x)
        return self._predict(arrays, arrays[0].shape[0], out)

    def __call__(self, x, training=False):
        """Outputs for ``x`` as one batch; ``training=True`` runs the training-mode
        forward (dropout active), without gradients."""
        if not training:
            return self.predict_on_batch(x)
        arrays = self._validate_inputs(x)
        key = (arrays[0].shape[0],) + tuple((a.shape[1:], a.dtype.str) for a in arrays)
        ws = self._train_pool.acquire(key)
        try:
            outs = [np.array(o, copy=True) for o in self._run_train(ws, arrays, training=True)[0]]
        finally:
            self._train_pool.release(key, ws)
        return outs[0] if self._single_output else outs

    # -- training (the loop itself lives in rnnengine/training/engine.py) ----------------
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, weighted_metrics=None,
                run_eagerly=False, steps_per_execution=1, jit_compile="auto", auto_scale_loss=True):
        """Configure the model for training, as Keras's ``Model.compile``.

        Parameters
        ----------
        optimizer : str or Optimizer
            ``"adam"``, ``"sgd"``, ``"rmsprop"`` (Keras's default), ``"adagrad"``,
            ``"adamw"``, ``"adamax"``, ``"nadam"``, ``"adadelta"``, or an
            ``rnnengine.optimizers`` instance (a Keras optimizer object is
            rebuilt from its config).
        loss : str or Loss, or a list/dict of them per output
            ``"categorical_crossentropy"``, ``"sparse_categorical_crossentropy"``,
            ``"binary_crossentropy"``, ``"mse"``/``"mean_squared_error"``,
            ``"mae"``/``"mean_absolute_error"``, or an ``rnnengine.losses`` instance.
        loss_weights : list or dict of float, optional
        metrics : list, optional
            ``"accuracy"`` (categorical, sparse or binary, picked as Keras picks it),
            the explicit accuracies, ``"mse"``, ``"mae"``, the crossentropies, or
            ``rnnengine.metrics`` instances; per output as a list of lists or a dict.
        weighted_metrics : list, optional
            Metrics weighted by ``sample_weight``.
        run_eagerly, steps_per_execution, jit_compile, auto_scale_loss
            Accepted for compatibility; they change nothing here.
        """
        from ..training import engine

        engine.compile(self, optimizer, loss, loss_weights, metrics, weighted_metrics, run_eagerly,
                       steps_per_execution, jit_compile, auto_scale_loss)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None, sample_weight=None,
            initial_epoch=0, steps_per_epoch=None, validation_steps=None, validation_batch_size=None,
            validation_freq=1):
        """Train the model for ``epochs`` epochs, as Keras's ``Model.fit``.

        Parameters
        ----------
        x, y : arrays (or lists/dicts of arrays for several inputs/outputs)
        batch_size : int, default 32
        epochs : int, default 1
        verbose : "auto", 0, 1 or 2
            1 (and "auto"): a progress bar per epoch; 2: one line per epoch.
        callbacks : list of rnnengine.callbacks.Callback
        validation_split : float
            The *last* fraction of the samples (before shuffling) is held out.
        validation_data : tuple ``(x_val, y_val)`` or ``(x_val, y_val, sample_weight)``
        shuffle : bool, default True
            Shuffle the training samples each epoch (``rnnengine.training.set_random_seed``).
        class_weight, sample_weight : optional per-sample loss weights
        initial_epoch, steps_per_epoch, validation_steps, validation_batch_size, validation_freq
            As in Keras.

        Returns
        -------
        History : ``history.history`` maps ``"loss"``, each metric and their
        ``"val_"`` versions to one value per epoch.
        """
        from ..training import engine

        return engine.fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split,
                          validation_data, shuffle, class_weight, sample_weight, initial_epoch, steps_per_epoch,
                          validation_steps, validation_batch_size, validation_freq)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False):
        """The loss (and metrics) on ``x, y``, in batches of ``batch_size`` (default 32).

        Returns the loss alone when the model has no metrics, else ``[loss, *metrics]``
        (or a dict with ``return_dict=True``), as Keras does.
        """
        from ..training import engine

        return engine.evaluate(self, x, y, batch_size, verbose, sample_weight, steps, callbacks, return_dict)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One gradient step on one batch; returns the batch's loss (and metrics),
        computed before the update."""
        from ..training import engine

        return engine.train_on_batch(self, x, y, sample_weight, class_weight, return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """The loss (and metrics) of one batch, without training."""
        from ..training import engine

        return engine.test_on_batch(self, x, y, sample_weight, return_dict)

    @property
    def metrics_names(self):
        state = getattr(self, "_compile_state", None)
        return [] if state is None else state.metric_names()

    # -- saving (Keras 3 formats) --------------------------------------------------------------
    def save(self, filepath, overwrite=True, zipped=None, **kwargs):
        """Write a Keras 3 ``.keras`` archive (config.json, metadata.json,
        model.weights.h5) that ``keras.saving.load_model`` loads."""
        from ..io import export

        export.save_model(self, filepath, overwrite=overwrite)

    def save_weights(self, filepath, overwrite=True):
        """Write the weights as a Keras 3 ``.weights.h5`` file."""
        from ..io import export

        export.save_weights(self, filepath, overwrite=overwrite)

    def _output_logits(self, ws, k):
        """(activation, logits) for output ``k`` when it comes straight from a
        softmax/sigmoid Dense or Activation node (Keras's ``_keras_logits``), else None."""
        found = self._logit_node(ws, k)
        if found is None:
            return None
        layer, buffers, inputs = found
        if layer.activity_regularizer is not None:
            return None  # its penalty reads the output: the backward goes through it, not around
        act = getattr(layer, "activation", None)
        if act not in ("softmax", "sigmoid") or not hasattr(layer, "_node_logits"):
            return None
        return act, layer._node_logits(buffers, inputs)

    def stream(self, batch_size=1):
        """A ``Stream`` that steps this model one timestep at a time; see ``models/stream.py``."""
        from .stream import Stream

        return Stream(self, batch_size)

    def reset_states(self):
        """Zero the state of every stateful layer."""
        for layer in self.layers:
            if hasattr(layer, "reset_states"):
                layer.reset_states()

    # -- weights ----------------------------------------------------------------------------
    def _weighted_layers(self):
        return [layer for layer in self.layers if layer._weight_specs]

    def get_weights(self):
        """Every layer's weights, in Keras's layer order, each in Keras's order and shape."""
        return [w for layer in self._weighted_layers() for w in layer.get_weights()]

    def set_weights(self, weights):
        weights = list(weights)
        layers = self._weighted_layers()
        expected = sum(len(layer._weight_specs) for layer in layers)
        if len(weights) != expected:
            raise ValueError(
                f"You called `set_weights(weights)` on model \"{self.name}\" with a weight list of "
                f"length {len(weights)}, but the model was expecting {expected} weights."
            )
        # Check every layer's weights (dtype, shape) before changing anything:
        # no half-updated model.
        chunks, start = [], 0
        for layer in layers:
            n = len(layer._weight_specs)
            chunks.append(layer._checked_weights(weights[start:start + n]))
            start += n
        with self._weights_lock:
            for layer, chunk in zip(layers, chunks):
                layer.set_weights(chunk)

    def load_weights(self, filepath):
        """Load Keras weights (``.weights.h5``, or a legacy ``.h5``) into this model."""
        from ..io import load_weights

        load_weights(self, filepath)

    @property
    def weights(self):
        return [w for layer in self.layers for w in layer.weights]

    def count_params(self):
        return sum(layer.count_params() for layer in self.layers)

    def summary(self, print_fn=None):
        """Print a Keras-style table of layers, output shapes and parameter counts."""
        print_fn = print_fn or print
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for layer, shapes in self._summary_rows():
            text = ", ".join(_validation.format_shape((None,) + tuple(s)) for s in shapes)
            rows.append((f"{layer.name} ({type(layer).__name__})", text, f"{layer.count_params():,}"))
        widths = [max(len(r[i]) for r in rows) + 2 for i in range(3)]
        line = "-" * sum(widths)
        lines = [f'Model: "{self.name}"', line]
        for k, row in enumerate(rows):
            lines.append(row[0].ljust(widths[0]) + row[1].ljust(widths[1]) + row[2].rjust(widths[2]))
            if k == 0:
                lines.append("=" * sum(widths))
        total = self.count_params()
        trainable = sum(layer.count_params() for layer in self.layers if layer.trainable)
        lines += [line, f" Total params: {total:,}", f" Trainable params: {trainable:,}",
                  f" Non-trainable params: {total - trainable:,}", line]
        for text in lines:
            print_fn(text)
