"""What Sequential and the functional Model share: predict, weights, summary.

A call flows ``predict`` -> ``_validate_inputs`` (once per call: rank, feature
size, dtype, layout) -> a workspace for this (batch, input shapes, dtypes) from
the pool -> ``_run`` (each layer's ``_node_forward`` on its buffers; the layer
picks its kernel) -> the outputs copied into the returned arrays (or ``out``).

Design: workspaces are per call, not per model: each in-flight call takes one
from ``WorkspacePool`` and gives it back, so concurrent ``predict`` calls from
several threads never share scratch memory, and the lock is held only to pop
and push, never while kernels run. Stateful layers carry state on the layer,
so a stateful model is single-owner (one thread at a time).
"""
import numpy as np

from .. import _validation
from ..workspace import WorkspacePool

_KERAS_PREDICT_BATCH_SIZE = 32


class BaseModel:
    def __init__(self, name, trainable=True):
        self.name = name
        self.trainable = trainable
        self._pool = WorkspacePool(self._make_workspace)

    # Subclasses provide: layers, _validate_inputs(x) -> [arrays],
    # _output_specs([(shape, dtype)]) -> [(shape, dtype)], _make_workspace(key),
    # _run(ws, arrays, training) -> [arrays], _single_output.

    def _forward_into(self, arrays, dests, training=False):
        """Run the model on one batch and copy the outputs into ``dests``."""
        key = (arrays[0].shape[0],) + tuple((a.shape[1:], a.dtype.str) for a in arrays)
        ws = self._pool.acquire(key)
        try:
            for dest, y in zip(dests, self._run(ws, arrays, training)):
                np.copyto(dest, y)
        finally:
            self._pool.release(key, ws)

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
        return self._predict(self._validate_inputs(x), batch_size, out)

    def _predict(self, arrays, batch_size, out):
        n = arrays[0].shape[0]
        if any(a.shape[0] != n for a in arrays):
            raise ValueError(f"All inputs of model \"{self.name}\" must have the same number of samples; "
                             f"received {[a.shape[0] for a in arrays]}.")
        batch_size = _KERAS_PREDICT_BATCH_SIZE if batch_size is None else \
            _validation.positive_int(batch_size, "batch_size", "predict")
        specs = self._output_specs([(a.shape[1:], a.dtype) for a in arrays])
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
        arrays = self._validate_inputs(x)
        return self._predict(arrays, arrays[0].shape[0], out)

    def __call__(self, x, training=False):
        if training:
            raise NotImplementedError(f"Calling model \"{self.name}\" with training=True needs the training engine.")
        return self.predict_on_batch(x)

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
        # Check every shape before changing anything: no half-updated model.
        start = 0
        for layer in layers:
            for (wname, shape), w in zip(layer._weight_specs, weights[start:]):
                if tuple(np.shape(w)) != shape:
                    raise ValueError(
                        f"Layer \"{layer.name}\" weight shape mismatch for \"{wname}\": expected shape "
                        f"{shape}, received {tuple(np.shape(w))}."
                    )
            start += len(layer._weight_specs)
        start = 0
        for layer in layers:
            n = len(layer._weight_specs)
            layer.set_weights(weights[start:start + n])
            start += n

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
