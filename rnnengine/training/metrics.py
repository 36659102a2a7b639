"""Keras 3's metrics in NumPy: stateful means over the batches of an epoch.

A metric's ``update_state(y_true, y_pred, sample_weight=None)`` adds one batch,
``result()`` is the running value, ``reset_state()`` starts over (``fit`` does
at each epoch, ``evaluate`` at each call). As Keras's ``MeanMetricWrapper``,
each sample counts once: per-element values are first averaged over every axis
but the batch axis; a sample weight (or the output's mask) weights them.

``compile(metrics=["accuracy"])`` picks the accuracy the way Keras does
(``compile_utils.get_metric``): binary when the output's last axis is 1, sparse
categorical when ``y_true`` has a lower rank than the output (or a last axis of
1 where the output's is larger), categorical otherwise.
"""
import numpy as np

from . import losses as _losses


__all__ = ["Metric", "Mean", "MeanMetricWrapper", "Accuracy", "CategoricalAccuracy",
           "SparseCategoricalAccuracy", "BinaryAccuracy", "TopKCategoricalAccuracy",
           "SparseTopKCategoricalAccuracy", "MeanSquaredError", "MeanAbsoluteError",
           "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "BinaryCrossentropy", "accuracy",
           "categorical_accuracy", "sparse_categorical_accuracy", "binary_accuracy",
           "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy", "get"]


class Metric:
    """Base class: ``update_state``, ``result``, ``reset_state``."""

    def __init__(self, name=None, dtype=None):
        self.name = name or _losses._snake(type(self).__name__)
        self.dtype = dtype
        self.reset_state()

    def reset_state(self):
        raise NotImplementedError

    def reset_states(self):
        self.reset_state()

    def update_state(self, y_true, y_pred, sample_weight=None):
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None):
        self.update_state(y_true, y_pred, sample_weight)
        return self.result()

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


class Mean(Metric):
    """The weighted mean of the values it is given, per sample."""

    def reset_state(self):
        self.total = 0.0
        self.count = 0.0

    def update_state(self, values, sample_weight=None, mask=None):
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 0:
            values = values[None]
        weight = None
        if mask is not None:
            weight = np.asarray(mask, dtype=np.float64)
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=np.float64)
            while sw.ndim > values.ndim and sw.shape[-1] == 1:
                sw = sw[..., 0]
            while sw.ndim < values.ndim:
                sw = sw[..., None]
            weight = sw if weight is None else weight * sw
        if weight is None:
            self.total += float(values.reshape(values.shape[0], -1).mean(axis=1).sum()) if values.ndim > 1 \
                else float(values.sum())
            self.count += values.shape[0]
            return
        weight = np.broadcast_to(weight.reshape(weight.shape + (1,) * (values.ndim - weight.ndim)), values.shape)
        per = values.shape[0]
        inner = max(values.size // per, 1) if per else 1
        self.total += float((values * weight).sum()) / inner
        self.count += float(weight.sum()) / inner

    def result(self):
        return self.total / self.count if self.count else 0.0


class MeanMetricWrapper(Mean):
    """``fn(y_true, y_pred)`` per element, averaged as ``Mean``."""

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        self._fn = fn
        self._fn_kwargs = kwargs
        super().__init__(name=name or getattr(fn, "__name__", None), dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None, mask=None, logits=None):
        values = self._values(np.asarray(y_true), np.asarray(y_pred), logits)
        if mask is not None and mask.shape != values.shape[:mask.ndim]:
            mask = None
        super().update_state(values, sample_weight, mask)

    def _values(self, y_true, y_pred, logits):
        return self._fn(y_true, y_pred, **self._fn_kwargs)


# ----------------------------------------------------------------------------
# Functions (per element), as keras.metrics.<name>

def categorical_accuracy(y_true, y_pred):
    """1.0 where ``argmax(y_true) == argmax(y_pred)`` over the last axis."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return (np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)).astype(np.float32)


def sparse_categorical_accuracy(y_true, y_pred):
    """1.0 where the integer label equals ``argmax(y_pred)``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    pred = np.argmax(y_pred, axis=-1)
    return (y_true == pred.astype(y_true.dtype)).astype(np.float32)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """``mean(y_true == (y_pred > threshold), axis=-1)``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    y_true = _losses._squeeze_or_expand(y_true, y_pred)
    pred = (y_pred > threshold).astype(y_true.dtype if y_true.dtype.kind == "f" else np.float32)
    return (y_true == pred).astype(np.float32).mean(axis=-1)


def accuracy(y_true, y_pred):
    """1.0 where ``y_true == y_pred`` exactly."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    y_true = _losses._squeeze_or_expand(y_true, y_pred)
    return (y_true == y_pred).astype(np.float32)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1.0 where the true class (argmax of one-hot y_true) is among the top k predictions."""
    labels = np.argmax(np.asarray(y_true), axis=-1)
    return _in_top_k(labels, np.asarray(y_pred), k)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return _in_top_k(y_true.astype(np.int64), y_pred, k)


def _in_top_k(labels, y_pred, k):
    target = np.take_along_axis(y_pred, labels[..., None], axis=-1)
    return ((y_pred > target).sum(axis=-1) < k).astype(np.float32)


# ----------------------------------------------------------------------------
# Classes

class Accuracy(MeanMetricWrapper):
    def __init__(self, name="accuracy", dtype=None):
        super().__init__(accuracy, name=name, dtype=dtype)


class CategoricalAccuracy(MeanMetricWrapper):
    def __init__(self, name="categorical_accuracy", dtype=None):
        super().__init__(categorical_accuracy, name=name, dtype=dtype)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    def __init__(self, name="sparse_categorical_accuracy", dtype=None):
        super().__init__(sparse_categorical_accuracy, name=name, dtype=dtype)


class BinaryAccuracy(MeanMetricWrapper):
    def __init__(self, name="binary_accuracy", dtype=None, threshold=0.5):
        super().__init__(binary_accuracy, name=name, dtype=dtype, threshold=threshold)


class TopKCategoricalAccuracy(MeanMetricWrapper):
    def __init__(self, k=5, name="top_k_categorical_accuracy", dtype=None):
        super().__init__(top_k_categorical_accuracy, name=name, dtype=dtype, k=k)


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    def __init__(self, k=5, name="sparse_top_k_categorical_accuracy", dtype=None):
        super().__init__(sparse_top_k_categorical_accuracy, name=name, dtype=dtype, k=k)


class _LossMetric(MeanMetricWrapper):
    """A loss's per-sample values as a metric (Keras's crossentropy metrics also
    read the logits of a softmax/sigmoid output, as the losses do)."""

    _loss_cls = None

    def __init__(self, name=None, dtype=None, **kwargs):
        self._loss = self._loss_cls(**kwargs)
        super().__init__(None, name=name or self._loss.name, dtype=dtype)

    def _values(self, y_true, y_pred, logits):
        y_pred = _losses._as_float(y_pred)
        if logits is not None and self._loss.logits_activation is None:
            logits = None
        return self._loss._values_and_grad(y_true, y_pred, logits, need_grad=False)[0]


class MeanSquaredError(_LossMetric):
    _loss_cls = _losses.MeanSquaredError

    def __init__(self, name="mean_squared_error", dtype=None):
        super().__init__(name=name, dtype=dtype)


class MeanAbsoluteError(_LossMetric):
    _loss_cls = _losses.MeanAbsoluteError

    def __init__(self, name="mean_absolute_error", dtype=None):
        super().__init__(name=name, dtype=dtype)


class CategoricalCrossentropy(_LossMetric):
    _loss_cls = _losses.CategoricalCrossentropy

    def __init__(self, name="categorical_crossentropy", dtype=None, from_logits=False, label_smoothing=0.0):
        super().__init__(name=name, dtype=dtype, from_logits=from_logits, label_smoothing=label_smoothing)


class SparseCategoricalCrossentropy(_LossMetric):
    _loss_cls = _losses.SparseCategoricalCrossentropy

    def __init__(self, name="sparse_categorical_crossentropy", dtype=None, from_logits=False):
        super().__init__(name=name, dtype=dtype, from_logits=from_logits)


class BinaryCrossentropy(_LossMetric):
    _loss_cls = _losses.BinaryCrossentropy

    def __init__(self, name="binary_crossentropy", dtype=None, from_logits=False, label_smoothing=0.0):
        super().__init__(name=name, dtype=dtype, from_logits=from_logits, label_smoothing=label_smoothing)


_BY_NAME = {
    "accuracy": Accuracy, "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy, "binary_accuracy": BinaryAccuracy,
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
}
_FUNCTIONS = {categorical_accuracy: CategoricalAccuracy, sparse_categorical_accuracy: SparseCategoricalAccuracy,
              binary_accuracy: BinaryAccuracy, accuracy: Accuracy,
              top_k_categorical_accuracy: TopKCategoricalAccuracy,
              sparse_top_k_categorical_accuracy: SparseTopKCategoricalAccuracy}


def get(identifier, y_true=None, y_pred_shape=None):
    """A ``Metric`` for ``identifier`` (a name, a function or class of this module,
    a ``Metric``, or a Keras metric object of a supported class). ``"accuracy"``
    and ``"acc"`` resolve against ``y_true`` and the output's shape, as Keras's."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if identifier in _FUNCTIONS:
        return _FUNCTIONS[identifier]()
    if isinstance(identifier, str):
        low = identifier.lower()
        if low in ("accuracy", "acc") and y_pred_shape is not None:
            y_true_shape = np.shape(y_true)
            is_binary = y_pred_shape[-1] == 1
            is_sparse = len(y_true_shape) < len(y_pred_shape) or (y_true_shape[-1] == 1 and y_pred_shape[-1] > 1)
            cls = BinaryAccuracy if is_binary else SparseCategoricalAccuracy if is_sparse else CategoricalAccuracy
            return cls(name=identifier)
        if low in _BY_NAME:
            metric = _BY_NAME[low]()
            metric.name = identifier
            return metric
        for cls in set(_BY_NAME.values()):
            if cls.__name__ == identifier:
                return cls()
    cls_name = type(identifier).__name__
    for cls in set(_BY_NAME.values()):
        if cls.__name__ == cls_name and hasattr(identifier, "get_config"):
            import inspect

            config = identifier.get_config()
            accepted = set(inspect.signature(cls.__init__).parameters)
            return cls(**{k: v for k, v in config.items() if k in accepted})
    raise ValueError(
        f"Could not interpret metric identifier: {identifier!r}. rnnengine supports: "
        f"{', '.join(sorted(set(_BY_NAME) | {'acc'}))}."
    )
