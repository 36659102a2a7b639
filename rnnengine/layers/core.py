"""Dense, Dropout and the model input (Input / InputLayer), as in Keras.

Dense applies to the last axis of an input of any rank >= 2, so on a 3-D
sequence it runs per timestep (Keras's behaviour). Dropout is the identity at
inference and Keras's inverted dropout in training.

Training (the node protocol's backward half, see ``base.py``): Dense keeps its
pre-activation ``z`` when the activation is not linear, and computes
``dx = dz @ kernel.T``, ``dkernel += x.T @ dz``, ``dbias += sum(dz)`` as single
BLAS calls into its buffers. A Dense or Activation layer whose activation is
softmax or sigmoid also hands its logits to the loss (``_node_logits``), as
Keras 3's crossentropies take them from such an output.
"""
import numpy as np

from .. import _validation, constraints, regularizers
from .. import kernels
from ..kernels import activation_codes as _activations
from . import activations, initializers
from .base import KerasTensor, Layer, _dtype_name, serialize_option


def _dense_forward(*args):
    kernels.get_kernel("dense", "forward")(*args)


def _activation_inplace(y, code):
    kernels.get_kernel("activation", "forward")(y, code)


def _activation_backward(dz, dy, z, y, code):
    """dz = the gradient w.r.t. z of y = act(z), given dy: the selected backend's
    kernel (kernels/__init__.py: four (N, F) C-contiguous arrays of one dtype;
    dz may alias dy). An input of another dtype or layout (an Activation
    layer's raw input z, a strided upstream gradient) is converted first."""
    dt = dz.dtype
    dy = dy if dy.dtype == dt and dy.flags.c_contiguous else np.ascontiguousarray(dy, dt)
    z = z if z.dtype == dt and z.flags.c_contiguous else np.ascontiguousarray(z, dt)
    kernels.get_kernel("activation", "backward", None, dz.shape[0])(dz, dy, z, y, code)


class Dense(Layer):
    """``y = activation(x @ kernel + bias)``; kernel is (input_dim, units)."""

    supports_masking = True

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 lora_rank=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.units = _validation.positive_int(units, "units", "Dense")
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        if lora_rank:
            raise ValueError(f"Dense \"{self.name}\": lora_rank is not supported by rnnengine.")

    def build(self, input_shape):
        if len(input_shape) < 1 or input_shape[-1] is None:
            raise ValueError(
                f"Layer \"{self.name}\" needs an input of rank >= 2 with a known last axis; "
                f"received shape {_validation.format_shape((None,) + tuple(input_shape))}"
            )
        self._weight_specs, self._values = [], []
        self._add_weight("kernel", (input_shape[-1], self.units), self.kernel_initializer)
        if self.use_bias:
            self._add_weight("bias", (self.units,), self.bias_initializer)
        self._finish_build(input_shape)

    def _build_shape(self, shape):
        # Dense only fixes the feature axis; leading axes stay free, as in Keras.
        return (None,) * (len(shape) - 1) + (shape[-1],)

    def _pack(self):
        bias = self._values[1] if self.use_bias else np.zeros((self.units,), self.dtype)
        self._packed = (self._values[0], bias)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def buffer_spec(self, B, input_shape, input_dtype):
        spec = {"y": ((B,) + tuple(input_shape[:-1]) + (self.units,), self.dtype)}
        spec.update(self._cast_spec(B, input_shape, input_dtype))
        return spec

    def forward(self, buffers, x, training=False):
        x = self._cast_input(buffers, x)
        kernel, bias = self._call_packed()
        y = buffers["y"]
        C = x.shape[-1]
        N = x.size // C
        _dense_forward(y.reshape(N, self.units), x.reshape(N, C), kernel, bias, N, C, self.units,
                       activations.code(self.activation), int(self.use_bias))
        return y

    # -- training --------------------------------------------------------------------------
    def _node_train_spec(self, B, input_shapes, input_dtypes):
        spec = super()._node_train_spec(B, input_shapes, input_dtypes)
        out_shape = (B,) + tuple(input_shapes[0][:-1]) + (self.units,)
        if self.activation != "linear":
            spec["z"] = (out_shape, self.dtype)
            spec["dz"] = (out_shape, self.dtype)
        spec["dw"] = ((input_shapes[0][-1], self.units), self.dtype)
        spec["db"] = ((self.units,), self.dtype)
        return spec

    def _node_forward_train(self, buffers, inputs, masks, states, training=True):
        x = self._cast_input(buffers, inputs[0])
        kernel, bias = self._packed
        y, F = buffers["y"], self.units
        C = x.shape[-1]
        N = x.size // C
        if self.activation == "linear":
            _dense_forward(y.reshape(N, F), x.reshape(N, C), kernel, bias, N, C, F, _activations.LINEAR,
                           int(self.use_bias))
        else:
            # forward: the same kernel in two halves, keeping z = x @ kernel + bias.
            z = buffers["z"]
            _dense_forward(z.reshape(N, F), x.reshape(N, C), kernel, bias, N, C, F, _activations.LINEAR,
                           int(self.use_bias))
            np.copyto(y, z)
            _activation_inplace(y.reshape(N, F), activations.code(self.activation))
        return [y], [masks[0]]

    def _node_backward(self, buffers, douts, inputs, masks, states):
        dy = douts[0]
        if dy is None:
            return [None], []
        if self.activation == "linear":
            dz = dy
        else:
            # forward: y = act(z)
            dz, F = buffers["dz"], self.units
            _activation_backward(dz.reshape(-1, F), dy.reshape(-1, F), buffers["z"].reshape(-1, F),
                                 buffers["y"].reshape(-1, F), activations.code(self.activation))
        return self._backward_from_z(buffers, dz, inputs), []

    def _node_logits(self, buffers, inputs):
        return buffers["z"]

    def _node_backward_logits(self, buffers, dz, inputs, masks):
        return self._backward_from_z(buffers, dz, inputs), []

    def _backward_from_z(self, buffers, dz, inputs):
        # forward: z = x @ kernel + bias, over N = x.size // C rows
        x = buffers["x_cast"] if "x_cast" in buffers else inputs[0]
        kernel = self._packed[0]
        C, F = kernel.shape
        dz2 = dz.reshape(-1, F)
        x2 = x.reshape(-1, C)
        dkernel, dw = self._grads[0], buffers["dw"]
        np.dot(x2.T, dz2, out=dw)  # dkernel += x^T @ dz
        np.add(dkernel, dw, out=dkernel)
        if self.use_bias:
            dbias, db = self._grads[1], buffers["db"]
            np.sum(dz2, axis=0, out=db)  # dbias += sum over rows of dz
            np.add(dbias, db, out=dbias)
        dx = buffers.get("dx0")
        if dx is None:
            return [None]
        np.dot(dz2, kernel.T, out=dx.reshape(-1, C))  # dx = dz @ kernel^T
        return [dx]

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=self.activation, use_bias=self.use_bias,
                      kernel_regularizer=serialize_option(self.kernel_regularizer, regularizers),
                      bias_regularizer=serialize_option(self.bias_regularizer, regularizers),
                      activity_regularizer=serialize_option(self.activity_regularizer, regularizers),
                      kernel_constraint=serialize_option(self.kernel_constraint, constraints),
                      bias_constraint=serialize_option(self.bias_constraint, constraints))
        return config


class Dropout(Layer):
    """Randomly zeroes a fraction ``rate`` of inputs during training; identity at inference."""

    supports_masking = True

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _validation.rate(rate, "rate", "Dropout")
        self.noise_shape = noise_shape
        self.seed = seed

    def build(self, input_shape):
        self._finish_build(input_shape)

    def forward(self, buffers, x, training=False):
        return x

    # -- training: Keras's inverted dropout --------------------------------------------
    # Keras 3 (``backend.random.dropout``, TensorFlow's ``stateless_dropout``):
    # ``y = x * (1 / (1 - rate))`` where a uniform draw is ``>= rate``, else 0; the
    # mask has ``noise_shape`` (None entries take the input's size) and is
    # broadcast. The draws are rnnengine's own (NumPy's generator, seeded by
    # ``seed`` or ``rnnengine.training.set_random_seed``), not Keras's stream.
    def _noise_shape(self, shape):
        if self.noise_shape is None:
            return tuple(shape)
        noise = tuple(shape[i] if d is None else int(d) for i, d in enumerate(self.noise_shape))
        if len(noise) != len(shape):
            raise ValueError(f"Dropout \"{self.name}\": noise_shape={self.noise_shape} does not match the "
                             f"input's rank {len(shape)}.")
        return noise

    def _node_train_spec(self, B, input_shapes, input_dtypes):
        spec = super()._node_train_spec(B, input_shapes, input_dtypes)
        shape = (B,) + tuple(input_shapes[0])
        noise = self._noise_shape(shape)
        spec.update({"y": (shape, self.dtype), "noise": (noise, self.dtype), "keep": (noise, np.bool_)})
        return spec

    def _node_forward_train(self, buffers, inputs, masks, states, training=True):
        x = inputs[0]
        if not (training and self.rate > 0):
            return [x], [masks[0]]
        from ..training import random as _random

        noise, keep, y = buffers["noise"], buffers["keep"], buffers["y"]
        if self.rate >= 1:
            noise.fill(0)
        else:
            _random.layer_generator(self).random(dtype=noise.dtype, out=noise)
            np.greater_equal(noise, self.rate, out=keep)
            np.multiply(keep, noise.dtype.type(1.0 / (1.0 - self.rate)), out=noise, casting="unsafe")
        np.multiply(x, noise, out=y)
        return [y], [masks[0]]

    def _node_backward(self, buffers, douts, inputs, masks, states):
        dy = douts[0]
        if dy is None or self.rate <= 0:
            return [dy], []
        # forward: y = x * noise
        dx = buffers["dx0"]
        np.multiply(dy, buffers["noise"], out=dx)
        return [dx], []

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, noise_shape=self.noise_shape, seed=self.seed)
        return config


class InputLayer(Layer):
    """The layer behind ``Input``: fixes the model's input shape and batch size."""

    def __init__(self, shape=None, batch_size=None, dtype=None, name=None, batch_shape=None,
                 input_shape=None, batch_input_shape=None, sparse=None, ragged=None, **kwargs):
        if sparse or ragged:
            raise ValueError("Input: sparse and ragged inputs are not supported by rnnengine.")
        if batch_input_shape is not None:
            batch_shape = batch_input_shape
        if batch_shape is not None:
            batch_size, shape = batch_shape[0], tuple(batch_shape[1:])
        if shape is None:
            shape = input_shape
        if shape is None:
            raise ValueError("You must pass a `shape` argument to Input.")
        if isinstance(shape, int):
            shape = (shape,)
        super().__init__(name=name, **kwargs)
        self.dtype = _dtype_name(dtype, allow_int=True)  # integer inputs feed Embedding
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.batch_size = batch_size
        self._input_shape_hint = self.shape
        self.output = KerasTensor((batch_size,) + self.shape, self.dtype, self.name)
        self.output.input_layer = self
        self._finish_build(self.shape)

    def forward(self, buffers, x, training=False):
        return x

    def get_config(self):
        return {"batch_shape": (self.batch_size,) + self.shape, "dtype": self.dtype, "name": self.name}


def Input(shape=None, batch_size=None, dtype=None, name=None, batch_shape=None, **kwargs):
    """A symbolic input of ``shape`` (without the batch axis), as ``keras.Input``."""
    layer = InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, name=name,
                       batch_shape=batch_shape, **kwargs)
    return layer.output


class Activation(Layer):
    """Applies an activation function to its input (softmax over the last axis)."""

    supports_masking = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def build(self, input_shape):
        self._finish_build(input_shape)

    def buffer_spec(self, B, input_shape, input_dtype):
        return {"y": ((B,) + tuple(input_shape), self.dtype)}

    def forward(self, buffers, x, training=False):
        y = buffers["y"]
        _validation.cast_into(y, x)
        F = y.shape[-1]
        _activation_inplace(y.reshape(-1, F), activations.code(self.activation))
        return y

    def _node_backward(self, buffers, douts, inputs, masks, states):
        dy = douts[0]
        if dy is None:
            return [None], []
        dx, y = buffers["dx0"], buffers["y"]
        F = y.shape[-1]
        # forward: y = act(x)
        _activation_backward(dx.reshape(-1, F), dy.reshape(-1, F), inputs[0].reshape(-1, F),
                             y.reshape(-1, F), activations.code(self.activation))
        return [dx], []

    def _node_logits(self, buffers, inputs):
        return inputs[0]

    def _node_backward_logits(self, buffers, dz, inputs, masks):
        return [dz], []

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


class Flatten(Layer):
    """Flattens every axis but the batch axis: a view, no copy."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"Flatten \"{self.name}\": data_format={data_format!r} is not supported.")

    def build(self, input_shape):
        self._finish_build(input_shape)

    def compute_output_shape(self, input_shape):
        if any(d is None for d in input_shape):
            return (None,)
        return (int(np.prod(input_shape, dtype=np.int64)),)

    def forward(self, buffers, x, training=False):
        return x.reshape(x.shape[0], -1)

    def _node_backward(self, buffers, douts, inputs, masks, states):
        dy = douts[0]
        return [None if dy is None else dy.reshape(inputs[0].shape)], []


class RepeatVector(Layer):
    """Repeats a (batch, features) input ``n`` times: (batch, n, features)."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = _validation.positive_int(n, "n", "RepeatVector")

    def build(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"RepeatVector \"{self.name}\" expects a 2-D input (batch, features); "
                             f"received {_validation.format_shape((None,) + tuple(input_shape))}")
        self._finish_build(input_shape)

    def compute_output_shape(self, input_shape):
        return (self.n, input_shape[0])

    def buffer_spec(self, B, input_shape, input_dtype):
        return {"y": ((B, self.n, input_shape[0]), input_dtype)}

    def forward(self, buffers, x, training=False):
        y = buffers["y"]
        np.copyto(y, x[:, None, :])
        return y

    def _node_backward(self, buffers, douts, inputs, masks, states):
        dy = douts[0]
        if dy is None:
            return [None], []
        dx = buffers["dx0"]
        np.sum(dy, axis=1, out=dx)  # forward: y[:, n] = x for every n
        return [dx], []

    def get_config(self):
        return {**super().get_config(), "n": self.n}


class Masking(Layer):
    """Masks timesteps whose features all equal ``mask_value``; zeroes them in the output."""

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)

    def build(self, input_shape):
        self._finish_build(input_shape)

    def buffer_spec(self, B, input_shape, input_dtype):
        shape = (B,) + tuple(input_shape)
        spec = {"y": (shape, self.dtype), "differs": (shape, np.bool_), "mask": (shape[:-1], np.bool_)}
        spec.update(self._cast_spec(B, input_shape, input_dtype))
        return spec

    def _node_forward(self, buffers, inputs, masks, states, training=False):
        x = self._cast_input(buffers, inputs[0])
        differs, mask, y = buffers["differs"], buffers["mask"], buffers["y"]
        np.not_equal(x, self.mask_value, out=differs)
        np.any(differs, axis=-1, out=mask)
        np.multiply(x, mask[..., None], out=y)
        return [y], [mask]

    def _node_backward(self, buffers, douts, inputs, masks, states):
        dy = douts[0]
        if dy is None or "dx0" not in buffers:
            return [None], []
        dx = buffers["dx0"]
        np.multiply(dy, buffers["mask"][..., None], out=dx)  # forward: y = x * mask
        return [dx], []

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}


class Embedding(Layer):
    """Maps integer indices (batch, ...) to vectors (batch, ..., output_dim).

    ``mask_zero=True`` masks index 0 for the layers downstream. Indices outside
    ``[0, input_dim)`` raise ``ValueError`` (Keras on CPU raises too).
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform",
                 embeddings_regularizer=None, embeddings_constraint=None, mask_zero=False,
                 weights=None, lora_rank=None, input_length=None, **kwargs):
        if input_length is not None and "input_shape" not in kwargs:
            kwargs["input_shape"] = (input_length,)
        super().__init__(**kwargs)
        self.input_dim = _validation.positive_int(input_dim, "input_dim", "Embedding")
        self.output_dim = _validation.positive_int(output_dim, "output_dim", "Embedding")
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.embeddings_constraint = constraints.get(embeddings_constraint)
        self.mask_zero = bool(mask_zero)
        if lora_rank:
            raise ValueError(f"Embedding \"{self.name}\": lora_rank is not supported by rnnengine.")
        self._initial_weights = weights

    def _input_dtype(self):
        return "int64"

    def build(self, input_shape):
        self._weight_specs, self._values = [], []
        self._add_weight("embeddings", (self.input_dim, self.output_dim), self.embeddings_initializer)
        self._finish_build(input_shape)
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def buffer_spec(self, B, input_shape, input_dtype):
        shape = (B,) + tuple(input_shape)
        return {"idx": (shape, np.int64), "y": (shape + (self.output_dim,), self.dtype),
                "mask": (shape, np.bool_), "bad": (shape, np.bool_)}

    def _node_forward(self, buffers, inputs, masks, states, training=False):
        idx, y, bad = buffers["idx"], buffers["y"], buffers["bad"]
        _validation.cast_into(idx, inputs[0])  # NaN or huge floats: an out-of-range index, refused below
        np.greater_equal(idx, self.input_dim, out=bad)
        if bad.any() or idx.min() < 0:
            raise ValueError(
                f"Embedding \"{self.name}\": indices must be in [0, {self.input_dim}); received "
                f"values from {int(idx.min())} to {int(idx.max())}."
            )
        (embeddings,) = self._call_packed()
        np.take(embeddings, idx, axis=0, out=y)
        if not self.mask_zero:
            return [y], [None]
        mask = buffers["mask"]
        np.not_equal(idx, 0, out=mask)
        return [y], [mask]

    def forward(self, buffers, x, training=False):
        return self._node_forward(buffers, [x], [None], [], training)[0][0]

    def _node_train_spec(self, B, input_shapes, input_dtypes):
        return dict(self._node_buffer_spec(B, input_shapes, input_dtypes))  # indices take no gradient

    def _node_backward(self, buffers, douts, inputs, masks, states):
        dy = douts[0]
        if dy is not None:
            # forward: y = embeddings[idx]; rows looked up several times add up.
            np.add.at(self._grads[0], buffers["idx"].reshape(-1), dy.reshape(-1, self.output_dim))
        return [None], []

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "mask_zero": self.mask_zero,
                "embeddings_regularizer": serialize_option(self.embeddings_regularizer, regularizers),
                "embeddings_constraint": serialize_option(self.embeddings_constraint, constraints)}
