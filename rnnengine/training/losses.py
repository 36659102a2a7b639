"""Keras 3's losses in NumPy, with their gradients.

The same names, arguments and numbers as ``keras.losses`` on the TensorFlow
backend (``keras/src/losses/losses.py`` and ``backend/tensorflow/nn.py``):

- ``categorical_crossentropy``: from probabilities, Keras renormalises each row
  (``p / sum(p)``), clips to ``[1e-7, 1 - 1e-7]`` and takes ``-sum(t * log(p))``;
  from logits it is TensorFlow's ``softmax_cross_entropy_with_logits``.
- ``sparse_categorical_crossentropy``: from probabilities, clip then log, then
  TensorFlow's sparse softmax cross-entropy on those logs (no renormalisation);
  from logits, the sparse softmax cross-entropy.
- ``binary_crossentropy``: clip, ``-(t log p + (1 - t) log(1 - p))``, mean over
  the last axis; from logits TensorFlow's ``sigmoid_cross_entropy_with_logits``.
- ``mean_squared_error`` / ``mse``, ``mean_absolute_error`` / ``mae``: mean over
  the last axis, after Keras's ``squeeze_or_expand_to_same_rank``.

Which logits a crossentropy uses in training is Keras 3's rule too: when the
model's output comes straight from a softmax (categorical) or sigmoid (binary)
activation of a Dense or Activation layer, Keras reads the pre-activation
through the output's ``_keras_logits`` and computes the loss from logits, even
with ``from_logits=False`` (and also with ``from_logits=True``: the logits win,
with a warning). The engine passes those logits in ``logits=``.

Reduction (``reduction="sum_over_batch_size"``, Keras's default): the
per-sample values, weighted by ``sample_weight`` and by the output's mask (valid
steps weighted ``total / valid``, as Keras's ``apply_mask``), summed and divided
by their count.

Gradients: ``_values_and_grad(y_true, y_pred, logits)`` returns the per-sample
values and the gradient of their sum w.r.t. ``y_pred`` (or w.r.t. the logits,
when it used them); each gradient follows TensorFlow's for the same ops
(``clip_by_value`` passes the gradient on its bounds; the softmax
cross-entropies' is ``softmax - labels``).
"""
import numpy as np

__all__ = ["Loss", "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "BinaryCrossentropy",
           "MeanSquaredError", "MeanAbsoluteError", "categorical_crossentropy",
           "sparse_categorical_crossentropy", "binary_crossentropy", "mean_squared_error",
           "mean_absolute_error", "mse", "mae", "MSE", "MAE", "get", "reduce_values"]


EPSILON = 1e-7  # keras.config.epsilon()

_REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)


def _as_float(y_pred):
    y_pred = np.asarray(y_pred)
    if y_pred.dtype not in (np.float32, np.float64):
        y_pred = y_pred.astype(np.float32)
    return y_pred


def _squeeze_or_expand(y_true, y_pred):
    """Keras's ``squeeze_or_expand_to_same_rank`` for (y_true, y_pred)."""
    if y_true.ndim == y_pred.ndim - 1 and y_pred.shape[-1] == 1:
        y_true = y_true[..., None]
    elif y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return y_true


def _check_same_shape(name, y_true, y_pred):
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"{name}: `y_true` and `y_pred` must have the same shape. Received: "
            f"y_true.shape={y_true.shape}, y_pred.shape={y_pred.shape}"
        )


def _clip_mask(p, lo, hi):
    """TensorFlow's clip_by_value gradient: 1 inside [lo, hi] (bounds included), else 0."""
    return ((p >= lo) & (p <= hi)).astype(p.dtype)


def _softmax_xent_logits(t, z):
    """tf.nn.softmax_cross_entropy_with_logits: (loss, dloss/dz) over the last axis."""
    shifted = z - z.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    sum_e = e.sum(axis=-1, keepdims=True)
    loss = (t * (np.log(sum_e) - shifted)).sum(axis=-1)
    return loss, e / sum_e - t


def _sparse_xent_logits(labels, z, name):
    """tf.nn.sparse_softmax_cross_entropy_with_logits: (loss, dloss/dz)."""
    F = z.shape[-1]
    if labels.size and (labels.min() < 0 or labels.max() >= F):
        raise ValueError(
            f"{name}: received a label value of {int(labels.max() if labels.max() >= F else labels.min())} "
            f"which is outside the valid range of [0, {F})."
        )
    shifted = z - z.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    sum_e = e.sum(axis=-1, keepdims=True)
    picked = np.take_along_axis(shifted, labels[..., None], axis=-1)[..., 0]
    loss = np.log(sum_e[..., 0]) - picked
    grad = e / sum_e
    np.put_along_axis(grad, labels[..., None], np.take_along_axis(grad, labels[..., None], axis=-1) - 1, axis=-1)
    return loss, grad


def _sparse_labels(y_true, y_pred, name):
    y_true = np.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    if y_true.shape != y_pred.shape[:-1]:
        raise ValueError(
            f"{name}: `y_true` must hold one integer class per row of `y_pred`. Received: "
            f"y_true.shape={np.shape(y_true)}, y_pred.shape={y_pred.shape}"
        )
    if y_true.dtype.kind == "f" and not np.all(np.isfinite(y_true)):
        raise ValueError(f"{name}: `y_true` holds NaN or inf; expected integer class indices.")
    return y_true.astype(np.int64)


# ----------------------------------------------------------------------------
# Functions: per-sample values, as keras.losses.<name>(y_true, y_pred)

def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Per-sample categorical crossentropy, as ``keras.losses.categorical_crossentropy``."""
    return CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing,
                                   axis=axis).call(y_true, y_pred)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1):
    """Per-sample sparse categorical crossentropy, as ``keras.losses.sparse_categorical_crossentropy``."""
    return SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=ignore_class,
                                         axis=axis).call(y_true, y_pred)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Per-sample binary crossentropy (mean over the last axis), as ``keras.losses.binary_crossentropy``."""
    return BinaryCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing,
                              axis=axis).call(y_true, y_pred)


def mean_squared_error(y_true, y_pred):
    """``mean(square(y_true - y_pred), axis=-1)``."""
    return MeanSquaredError().call(y_true, y_pred)


def mean_absolute_error(y_true, y_pred):
    """``mean(abs(y_true - y_pred), axis=-1)``."""
    return MeanAbsoluteError().call(y_true, y_pred)


mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error


# ----------------------------------------------------------------------------
# Loss classes

class Loss:
    """Base class: ``loss(y_true, y_pred, sample_weight=None)`` is the reduced loss.

    Subclasses implement ``_values_and_grad(y_true, y_pred, logits=None)``.
    """

    # Which activation's logits this loss takes from the model's output layer
    # (Keras's ``_keras_logits``): "softmax", "sigmoid" or None.
    logits_activation = None

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"Invalid value for argument `reduction`. Expected one of {_REDUCTIONS}. "
                             f"Received: reduction={reduction!r}")
        self.name = name or _snake(type(self).__name__)
        self.reduction = reduction
        self.dtype = dtype

    def call(self, y_true, y_pred):
        """Per-sample values (the batch axis and any axes before the last)."""
        y_pred = _as_float(y_pred)
        return self._values_and_grad(np.asarray(y_true), y_pred, None, need_grad=False)[0]

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_pred = _as_float(y_pred)
        values = self._values_and_grad(np.asarray(y_true), y_pred, None, need_grad=False)[0]
        if self.reduction in (None, "none"):
            if sample_weight is not None:
                values = values * _broadcast_weight(sample_weight, values)
            return values
        loss, _ = reduce_values(values, sample_weight, None, self.reduction)
        return loss

    def _values_and_grad(self, y_true, y_pred, logits, need_grad=True):
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


def _snake(name):
    import re

    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _broadcast_weight(sample_weight, values):
    w = np.asarray(sample_weight, dtype=values.dtype)
    while w.ndim > values.ndim and w.shape[-1] == 1:
        w = w[..., 0]
    while w.ndim < values.ndim:
        w = w[..., None]
    return np.broadcast_to(w, values.shape)


def reduce_values(values, sample_weight, mask, reduction="sum_over_batch_size"):
    """Keras's ``reduce_weighted_values``: (loss, dloss/dvalues) for per-sample ``values``.

    ``mask`` (bool, shaped like ``values``) weights valid entries ``total / valid``
    and masked ones 0 when the reduction is a mean, as Keras's ``apply_mask``.
    """
    dtype = values.dtype
    weight = None
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask, dtype=bool).reshape(mask.shape + (1,) * (values.ndim - mask.ndim)),
                               values.shape)
        if reduction in ("mean", "sum_over_batch_size"):
            valid = dtype.type(mask.sum())
            total = dtype.type(mask.size)
            mask_weight = total / valid if valid else dtype.type(0)
            weight = np.where(mask, mask_weight, dtype.type(0)).astype(dtype)
        else:
            weight = mask.astype(dtype)
    if sample_weight is not None:
        sw = _broadcast_weight(sample_weight, values)
        weight = sw if weight is None else weight * sw
    weighted = values if weight is None else values * weight
    total = weighted.sum(dtype=dtype)
    if reduction == "sum":
        divisor = dtype.type(1)
    elif reduction == "mean_with_sample_weight" and sample_weight is not None:
        divisor = weight.sum(dtype=dtype)
    else:
        divisor = dtype.type(values.size)
    # Keras: divide_no_nan(sum, divisor), in the values' dtype; d(loss)/d(values) = weight / divisor.
    loss = dtype.type(total / divisor) if divisor else dtype.type(0)
    inv = dtype.type(1) / divisor if divisor else dtype.type(0)
    dvalues = np.full(values.shape, inv, dtype) if weight is None else (weight * inv).astype(dtype)
    return loss, dvalues


class CategoricalCrossentropy(Loss):
    """Keras's ``CategoricalCrossentropy(from_logits=False, label_smoothing=0.0, axis=-1)``."""

    logits_activation = "softmax"

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="categorical_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        if axis != -1:
            raise ValueError(f"{type(self).__name__}: only axis=-1 is supported; received axis={axis}")
        self.axis = axis

    def _values_and_grad(self, y_true, y_pred, logits, need_grad=True):
        t = np.asarray(y_true, dtype=y_pred.dtype)
        _check_same_shape(self.name, t, y_pred)
        if self.label_smoothing:
            F = y_pred.shape[-1]
            t = t * (1.0 - self.label_smoothing) + (self.label_smoothing / F)
            t = t.astype(y_pred.dtype)
        if logits is not None or self.from_logits:
            z = y_pred if logits is None else logits
            loss, grad = _softmax_xent_logits(t, z)
            return loss, grad, logits is not None
        # forward: q = p / sum(p); qc = clip(q, eps, 1 - eps); loss = -sum(t * log(qc))
        eps, one = y_pred.dtype.type(EPSILON), y_pred.dtype.type(1.0 - EPSILON)
        s = y_pred.sum(axis=-1, keepdims=True)
        q = y_pred / s
        qc = np.clip(q, eps, one)
        loss = -(t * np.log(qc)).sum(axis=-1)
        if not need_grad:
            return loss, None, False
        dq = -t / qc * _clip_mask(q, eps, one)
        grad = (dq - (dq * q).sum(axis=-1, keepdims=True)) / s
        return loss, grad, False

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "axis": self.axis}


class SparseCategoricalCrossentropy(Loss):
    """Keras's ``SparseCategoricalCrossentropy(from_logits=False, ignore_class=None)``."""

    logits_activation = "softmax"

    def __init__(self, from_logits=False, ignore_class=None, reduction="sum_over_batch_size",
                 name="sparse_categorical_crossentropy", dtype=None, axis=-1):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.ignore_class = ignore_class
        if axis != -1:
            raise ValueError(f"{type(self).__name__}: only axis=-1 is supported; received axis={axis}")

    def _values_and_grad(self, y_true, y_pred, logits, need_grad=True):
        raw = np.asarray(y_true)
        if raw.ndim == y_pred.ndim and raw.shape[-1] == 1:
            raw = raw[..., 0]
        valid = None
        if self.ignore_class is not None:
            valid = raw != self.ignore_class
            raw = np.where(valid, raw, 0)
        labels = _sparse_labels(raw, y_pred, self.name)
        if logits is not None or self.from_logits:
            z = y_pred if logits is None else logits
            if valid is not None:
                z = np.where(valid[..., None], z, 0).astype(z.dtype)
            loss, grad = _sparse_xent_logits(labels, z, self.name)
            used_logits = logits is not None
        else:
            # forward: l = log(clip(p, eps, 1 - eps)); loss = sparse_xent_with_logits(labels, l)
            p = y_pred if valid is None else np.where(valid[..., None], y_pred, 0).astype(y_pred.dtype)
            eps, one = p.dtype.type(EPSILON), p.dtype.type(1.0 - EPSILON)
            pc = np.clip(p, eps, one)
            loss, dl = _sparse_xent_logits(labels, np.log(pc), self.name)
            grad = dl / pc * _clip_mask(p, eps, one)
            used_logits = False
        if valid is not None:
            loss = np.where(valid, loss, 0).astype(loss.dtype)
            grad = grad * valid[..., None]
        return loss, grad, used_logits

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "ignore_class": self.ignore_class}


class BinaryCrossentropy(Loss):
    """Keras's ``BinaryCrossentropy(from_logits=False, label_smoothing=0.0, axis=-1)``."""

    logits_activation = "sigmoid"

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="binary_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        if axis != -1:
            raise ValueError(f"{type(self).__name__}: only axis=-1 is supported; received axis={axis}")
        self.axis = axis

    def _values_and_grad(self, y_true, y_pred, logits, need_grad=True):
        t = np.asarray(y_true, dtype=y_pred.dtype)
        _check_same_shape(self.name, t, y_pred)
        if self.label_smoothing:
            t = (t * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing).astype(y_pred.dtype)
        F = y_pred.dtype.type(y_pred.shape[-1])
        if logits is not None or self.from_logits:
            x = y_pred if logits is None else logits
            # tf.nn.sigmoid_cross_entropy_with_logits: max(x, 0) - x * t + log1p(exp(-|x|))
            per = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
            grad = None
            if need_grad:
                sig = np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x))).astype(x.dtype)
                grad = (sig - t) / F
            return per.mean(axis=-1), grad, logits is not None
        # forward: pc = clip(p, eps, 1 - eps); per = -(t log pc + (1 - t) log(1 - pc))
        eps, one = y_pred.dtype.type(EPSILON), y_pred.dtype.type(1.0 - EPSILON)
        pc = np.clip(y_pred, eps, one)
        bce = t * np.log(pc)
        bce += (1 - t) * np.log(1 - pc)
        loss = (-bce).mean(axis=-1)
        if not need_grad:
            return loss, None, False
        grad = -(t / pc - (1 - t) / (1 - pc)) * _clip_mask(y_pred, eps, one) / F
        return loss, grad, False

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "axis": self.axis}


class MeanSquaredError(Loss):
    """Keras's ``MeanSquaredError``: ``mean(square(y_true - y_pred), axis=-1)``."""

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _values_and_grad(self, y_true, y_pred, logits, need_grad=True):
        t = _squeeze_or_expand(np.asarray(y_true, dtype=y_pred.dtype), y_pred)
        _check_same_shape(self.name, t, y_pred)
        diff = t - y_pred
        loss = np.square(diff).mean(axis=-1)
        grad = (-2 * diff / y_pred.dtype.type(y_pred.shape[-1])).astype(y_pred.dtype) if need_grad else None
        return loss, grad, False


class MeanAbsoluteError(Loss):
    """Keras's ``MeanAbsoluteError``: ``mean(abs(y_true - y_pred), axis=-1)``."""

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _values_and_grad(self, y_true, y_pred, logits, need_grad=True):
        t = _squeeze_or_expand(np.asarray(y_true, dtype=y_pred.dtype), y_pred)
        _check_same_shape(self.name, t, y_pred)
        diff = t - y_pred
        loss = np.abs(diff).mean(axis=-1)
        grad = (-np.sign(diff) / y_pred.dtype.type(y_pred.shape[-1])).astype(y_pred.dtype) if need_grad else None
        return loss, grad, False


_CLASSES = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
}
_ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error"}
_FUNCTIONS = {categorical_crossentropy: "categorical_crossentropy",
              sparse_categorical_crossentropy: "sparse_categorical_crossentropy",
              binary_crossentropy: "binary_crossentropy", mean_squared_error: "mean_squared_error",
              mean_absolute_error: "mean_absolute_error"}
SUPPORTED = sorted(set(_CLASSES) | set(_ALIASES) | {c.__name__ for c in _CLASSES.values()} | {"MSE", "MAE"})


def get(identifier):
    """A ``Loss`` for ``identifier``: a name (``"mse"``, ``"categorical_crossentropy"``,
    ``"CategoricalCrossentropy"``), one of this module's functions or classes, a
    ``Loss``, a config dict, or a Keras loss object (rebuilt from its config).
    Raises ``ValueError`` for anything else, listing what is supported.

    The name of a loss given by name is that name (Keras's ``LossFunctionWrapper``).
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if identifier in _FUNCTIONS:
        return _CLASSES[_FUNCTIONS[identifier]]()
    if isinstance(identifier, str):
        key = identifier if identifier in _CLASSES else _ALIASES.get(identifier.lower(), identifier)
        if key in _CLASSES:
            loss = _CLASSES[key]()
            loss.name = identifier
            return loss
        for cls in _CLASSES.values():
            if cls.__name__ == identifier:
                return cls()
    if isinstance(identifier, dict) and "class_name" in identifier:
        return _from_class(identifier["class_name"], identifier.get("config", {}), identifier)
    cls_name = type(identifier).__name__
    if hasattr(identifier, "get_config") and any(c.__name__ == cls_name for c in _CLASSES.values()):
        return _from_class(cls_name, identifier.get_config(), identifier)
    if callable(identifier) and getattr(identifier, "__name__", None) in _CLASSES:
        return _CLASSES[identifier.__name__]()  # a keras.losses function
    raise ValueError(
        f"Could not interpret loss identifier: {identifier!r}. rnnengine trains with the losses it "
        f"can differentiate: {', '.join(SUPPORTED)}."
    )


def _from_class(cls_name, config, identifier):
    for cls in _CLASSES.values():
        if cls.__name__ == cls_name:
            import inspect

            accepted = set(inspect.signature(cls.__init__).parameters)
            return cls(**{k: v for k, v in config.items() if k in accepted})
    raise ValueError(f"Could not interpret loss identifier: {identifier!r}. rnnengine supports: "
                     f"{', '.join(SUPPORTED)}.")
