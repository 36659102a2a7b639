"""Merge layers for functional graphs: Concatenate, Add, Subtract, Multiply,
Average, Maximum, Minimum. Inputs must have equal shapes (Concatenate: equal
except on ``axis``). Masks combine as in Keras: a step is valid where every
input's mask is valid (no mask counts as all valid).

Backward: each merge hands every input its share of the output's gradient
(``_node_backward``); Maximum and Minimum route it to the first input that
attains the extremum, as TensorFlow's gradients of the chained
``maximum(maximum(x0, x1), x2)`` do (ties go to the left operand).
"""
import numpy as np

from .. import _validation
from .base import Layer


class _Merge(Layer):
    _multi_input = True
    supports_masking = True

    def _node_build(self, input_shapes):
        if len(input_shapes) < 2:
            raise ValueError(f"A merge layer (\"{self.name}\") should be called on a list of at least 2 "
                             f"inputs. Got {len(input_shapes)} inputs.")
        self._check_shapes(input_shapes)
        self._finish_build(input_shapes[0])

    def _check_shapes(self, shapes, skip_axis=None):
        rank = len(shapes[0])
        for s in shapes[1:]:
            if len(s) != rank or any(i != skip_axis and a is not None and b is not None and a != b
                                     for i, (a, b) in enumerate(zip(shapes[0], s))):
                raise ValueError(
                    f"Inputs of layer \"{self.name}\" ({type(self).__name__}) must have matching shapes"
                    + ("" if skip_axis is None else " except on the concatenation axis")
                    + f"; received {[_validation.format_shape((None,) + tuple(x)) for x in shapes]}"
                )

    def _node_output_shapes(self, input_shapes):
        return [tuple(input_shapes[0])]

    def _node_buffer_spec(self, B, input_shapes, input_dtypes):
        out_shape = self._node_output_shapes(input_shapes)[0]
        spec = {"y": ((B,) + tuple(out_shape), self.dtype)}
        if len(input_shapes[0]) >= 2:  # a sequence: room for a combined mask
            spec["mask"] = ((B, input_shapes[0][0]), np.bool_)
        return spec

    def _merge_masks(self, buffers, masks):
        present = [m for m in masks if m is not None]
        if not present:
            return None
        out = buffers["mask"]
        np.copyto(out, present[0])
        for m in present[1:]:
            np.logical_and(out, m, out=out)
        return out

    def _node_forward(self, buffers, inputs, masks, states, training=False):
        y = buffers["y"]
        # inf and NaN propagate as in Keras (README, input contract), without
        # NumPy's overflow/invalid RuntimeWarnings, which -W error would raise.
        with np.errstate(over="ignore", invalid="ignore"):
            self._combine(y, inputs)
        return [y], [self._merge_masks(buffers, masks)]

    def _node_train_spec(self, B, input_shapes, input_dtypes):
        spec = super()._node_train_spec(B, input_shapes, input_dtypes)
        out_shape = (B,) + tuple(self._node_output_shapes(input_shapes)[0])
        spec.update({"eq": (out_shape, np.bool_), "taken": (out_shape, np.bool_)})
        return spec

    def _node_backward(self, buffers, douts, inputs, masks, states):
        dy = douts[0]
        if dy is None:
            return [None] * len(inputs), []
        return self._split_grad(buffers, dy, inputs), []


class Add(_Merge):
    def _combine(self, y, xs):
        np.add(xs[0], xs[1], out=y)
        for x in xs[2:]:
            np.add(y, x, out=y)

    def _split_grad(self, buffers, dy, xs):
        return [dy] * len(xs)


class Subtract(_Merge):
    def _node_build(self, input_shapes):
        if len(input_shapes) != 2:
            raise ValueError(f"A `Subtract` layer (\"{self.name}\") should be called on exactly 2 inputs. "
                             f"Received: {len(input_shapes)} inputs")
        super()._node_build(input_shapes)

    def _combine(self, y, xs):
        np.subtract(xs[0], xs[1], out=y)

    def _split_grad(self, buffers, dy, xs):
        dx1 = buffers["dx1"]
        np.negative(dy, out=dx1)
        return [dy, dx1]


class Multiply(_Merge):
    def _combine(self, y, xs):
        np.multiply(xs[0], xs[1], out=y)
        for x in xs[2:]:
            np.multiply(y, x, out=y)

    def _split_grad(self, buffers, dy, xs):
        # forward: y = x0 * x1 * ...; dx_i = dy * (product of the others)
        out = []
        for i in range(len(xs)):
            dx = buffers[f"dx{i}"]
            np.copyto(dx, dy)
            for j, x in enumerate(xs):
                if j != i:
                    np.multiply(dx, x, out=dx)
            out.append(dx)
        return out


class Average(_Merge):
    def _combine(self, y, xs):
        Add._combine(self, y, xs)
        np.multiply(y, 1.0 / len(xs), out=y)

    def _split_grad(self, buffers, dy, xs):
        dx = buffers["dx0"]
        np.multiply(dy, 1.0 / len(xs), out=dx)
        return [dx] * len(xs)


class Maximum(_Merge):
    def _combine(self, y, xs):
        np.maximum(xs[0], xs[1], out=y)
        for x in xs[2:]:
            np.maximum(y, x, out=y)

    def _split_grad(self, buffers, dy, xs):
        return _route_to_first_extremum(buffers, dy, xs)


class Minimum(_Merge):
    def _combine(self, y, xs):
        np.minimum(xs[0], xs[1], out=y)
        for x in xs[2:]:
            np.minimum(y, x, out=y)

    def _split_grad(self, buffers, dy, xs):
        return _route_to_first_extremum(buffers, dy, xs)


def _route_to_first_extremum(buffers, dy, xs):
    """dx_i = dy where x_i is the first input equal to the output y, else 0."""
    y, eq, taken = buffers["y"], buffers["eq"], buffers["taken"]
    taken.fill(False)
    out = []
    for i, x in enumerate(xs):
        dx = buffers[f"dx{i}"]
        np.equal(x, y, out=eq)
        np.greater(eq, taken, out=eq)  # eq and not taken
        np.logical_or(taken, eq, out=taken)
        np.multiply(dy, eq, out=dx)
        out.append(dx)
    return out


class Concatenate(_Merge):
    """Concatenates its inputs along ``axis`` (default: the last, features)."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def _axis(self, rank):
        axis = self.axis if self.axis < 0 else self.axis - 1  # our shapes have no batch axis
        if not -rank <= axis < rank or self.axis == 0:
            raise ValueError(f"Concatenate \"{self.name}\": axis={self.axis} is out of range for inputs of rank {rank + 1}.")
        return axis % rank

    def _check_shapes(self, shapes, skip_axis=None):
        super()._check_shapes(shapes, skip_axis=self._axis(len(shapes[0])))

    def _node_output_shapes(self, input_shapes):
        axis = self._axis(len(input_shapes[0]))
        out = list(input_shapes[0])
        sizes = [s[axis] for s in input_shapes]
        out[axis] = None if None in sizes else sum(sizes)
        return [tuple(out)]

    def _node_forward(self, buffers, inputs, masks, states, training=False):
        y = buffers["y"]
        axis = self._axis(inputs[0].ndim - 1) + 1
        np.concatenate(inputs, axis=axis, out=y)
        if axis != inputs[0].ndim - 1 and any(m is not None for m in masks):
            raise ValueError(f"Concatenate \"{self.name}\": masked inputs can only be concatenated on the feature axis.")
        return [y], [self._merge_masks(buffers, masks)]

    def _split_grad(self, buffers, dy, xs):
        axis = self._axis(xs[0].ndim - 1) + 1
        out, start = [], 0
        for i, x in enumerate(xs):
            dx = buffers[f"dx{i}"]
            index = [slice(None)] * dy.ndim
            index[axis] = slice(start, start + x.shape[axis])
            np.copyto(dx, dy[tuple(index)])
            start += x.shape[axis]
            out.append(dx)
        return out

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
