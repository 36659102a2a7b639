"""Regularization penalties and constraints in a training step, as Keras 3 adds them.

Keras 3 (``trainers/trainer.py`` ``compute_loss``): the loss is the compiled
loss plus ``sum(model.losses)``, and ``model.losses`` holds

- for every *trainable* weight with a regularizer, ``regularizer(weight)``
  (``Layer._get_regularization_losses``), at the weights before the update;
- for every layer call with an ``activity_regularizer``, for each output it
  returns, ``regularizer(output) / batch_size`` (``Layer.__call__``;
  ``divide_no_nan`` by ``shape(output)[0]``), in training and in ``evaluate``.

The reported ``loss`` (``fit``, ``evaluate``, ``train_on_batch``) is that total;
the per-output ``<name>_loss`` entries of a multi-output model are the compiled
losses alone. Gradients: each weight penalty's ``grad`` is added to its weight's
gradient; each activity penalty's ``grad / batch_size`` to the gradient flowing
into the layer's backward from its output (``add_activity_grads``).

Constraints are applied by the optimizer after the update
(``optimizers.Optimizer.apply``); ``constrained_weights`` lists them.
"""
import numpy as np


def _trainable_weights(model):
    """(owner layer, index) of every trainable weight, as ``ParamSet`` counts them."""
    for layer in model.layers:
        trainable = bool(model.trainable and layer.trainable)
        for owner in layer._weight_owners():
            if trainable and owner.trainable:
                for i in range(len(owner._weight_specs)):
                    yield owner, i


def weight_penalty(model, accumulate_grads=False):
    """The sum of the trainable weights' regularization penalties; with
    ``accumulate_grads``, each penalty's gradient is added into the weight's
    ``_grads`` view (bound by ``ParamSet``)."""
    total = 0.0
    for owner, i in _trainable_weights(model):
        reg = owner._weight_regularizer(i)
        if reg is None:
            continue
        w = owner._values[i]
        total += float(reg(w))
        if accumulate_grads:
            g = owner._grads[i]
            np.add(g, np.asarray(reg.grad(w), dtype=g.dtype), out=g)
    return total


def constrained_weights(model):
    """``(weight view, constraint)`` of every trainable weight with a constraint."""
    return [(owner._values[i], c) for owner, i in _trainable_weights(model)
            if (c := owner._weight_constraint(i)) is not None]


def _float_outputs(outs):
    return [o for o in outs if o is not None and np.asarray(o).dtype.kind == "f"]


def activity_penalty(layer, outs):
    """``sum(activity_regularizer(o) / batch_size)`` over the float outputs of one call."""
    reg = layer.activity_regularizer
    total = 0.0
    for o in _float_outputs(outs):
        value = reg(o)
        if o.ndim > 0 and o.shape[0] > 0:
            value = value / o.dtype.type(o.shape[0])
        total += float(value)
    return total


def activity_grad_spec(layer, out_shapes, dtype, B):
    """Buffers for ``add_activity_grads``: one per output, named ``actd<k>``."""
    if layer.activity_regularizer is None:
        return {}
    return {f"actd{k}": ((B,) + tuple(shape), dtype) for k, shape in enumerate(out_shapes)}


def add_activity_grads(layer, buffers, outs, douts):
    """``douts`` with the activity penalty's gradient added (into the ``actd<k>``
    buffers: the incoming gradients are left as they are)."""
    reg = layer.activity_regularizer
    new = list(douts) + [None] * (len(outs) - len(douts))
    for k, o in enumerate(outs):
        if o is None or np.asarray(o).dtype.kind != "f":
            continue
        buf = buffers[f"actd{k}"]
        g = np.asarray(reg.grad(o))
        if o.ndim > 0 and o.shape[0] > 0:
            g = g / o.dtype.type(o.shape[0])
        if new[k] is None:
            np.copyto(buf, g.reshape(buf.shape), casting="unsafe")
        else:
            np.add(new[k].reshape(buf.shape), g.reshape(buf.shape), out=buf, casting="unsafe")
        new[k] = buf
    return new
