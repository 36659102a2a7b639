"""Plain NumPy forward and backward passes for every cell: the readable spec and the test oracle.

This version is the clean, minimal reference. As such: it allocates freely, loops
over time in Python, and uses float64-safe NumPy expressions. The fast kernels
(Numba and Cython) must reproduce it; the tests check that, check the forward
against real Keras, and check the backward against float64 finite differences
and TensorFlow's GradientTape.

Shapes: x is (B, T, C); kernel is (C, K*H); recurrent_kernel is (H, K*H); states
are (B, H). Gate orders are Keras's: LSTM i, f, c, o; GRU z, r, h.

Forward: ``<cell>_forward`` returns ``(y, h)`` (or ``(y, h, c)`` for LSTM) where
y is (B, T, H) with ``return_sequences`` and (B, H) without; with
``go_backwards`` the steps are processed from T-1 down to 0 and y keeps
processing order, as Keras does. ``<cell>_forward_train`` returns the same plus
a ``cache`` dict: the inputs, weights and options, and per processing step the
state entering it and the pre-activations. Both take Keras's ``mask`` (B, T)
(true = a real step) and ``zero_output_for_mask``: a masked row's step leaves
its states unchanged and outputs the previous output (zeros before the first
valid step), or zeros with ``zero_output_for_mask``, as ``masked_forward``
does; the training forward still computes every row's step (the cache holds
it), then blends.

Backward: ``<cell>_backward(dy, dh_n, [dc_n,] cache)`` takes the gradient of the
loss w.r.t. the layer's outputs (dy shaped like y, dh_n and dc_n like the final
states; with ``return_sequences`` false y *is* the final h and both
contributions add; with a mask, the gradient of a masked step's output goes
to the last valid step's output, or nowhere with ``zero_output_for_mask``, and
the state gradients pass a masked step unchanged) and returns fresh arrays
``(dx, dh0, [dc0,] dkernel, drecurrent_kernel, dbias)``, dbias in Keras's shape:
(2, 3H) for GRU with ``reset_after``. Each step of a backward cites the forward
line it undoes ("forward: ...").
"""
import numpy as np


def _erf(v):
    # Imported on first use: scipy.special costs about 0.2 s, and every
    # `import rnnengine` loads this module (layers/activations.py).
    from scipy.special import erf

    return erf(v)


def _sigmoid(v):
    # exp-based on each side, accurate in the tails (0.5 * (tanh(v / 2) + 1)
    # cancels to 0 below v = -38, where Keras still gives exp(v)).
    e = np.exp(-np.abs(v))
    return np.where(v >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.result_type(v, np.float32))


def _softplus(v):
    return np.logaddexp(v, 0.0).astype(v.dtype)


def _softmax(v):
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS = {
    "linear": lambda v: v,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "hard_sigmoid": lambda v: np.clip(v / 6.0 + 0.5, 0.0, 1.0),
    "hard_sigmoid_keras2": lambda v: np.clip(0.2 * v + 0.5, 0.0, 1.0),
    "relu": lambda v: np.maximum(v, 0.0),
    "relu6": lambda v: np.clip(v, 0.0, 6.0),
    "leaky_relu": lambda v: np.where(v >= 0, v, 0.2 * v),
    "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0.0))),
    "selu": lambda v: 1.0507009873554804934193349852946
    * np.where(v > 0, v, 1.6732632423543772848170429916717 * np.expm1(np.minimum(v, 0.0))),
    "softplus": _softplus,
    "softsign": lambda v: v / (1.0 + np.abs(v)),
    "swish": lambda v: v * _sigmoid(v),
    "silu": lambda v: v * _sigmoid(v),
    "hard_swish": lambda v: v * np.clip(v / 6.0 + 0.5, 0.0, 1.0),
    "hard_silu": lambda v: v * np.clip(v / 6.0 + 0.5, 0.0, 1.0),
    "mish": lambda v: v * np.tanh(_softplus(v)),
    "gelu": lambda v: 0.5 * v * (1.0 + _erf(v / np.sqrt(2.0))),
    "exponential": np.exp,
    "softmax": _softmax,
    "log_softmax": lambda v: np.log(_softmax(v)),
}



def _where(cond, a, b, v):
    return np.where(cond, a, b).astype(v.dtype)


def _swish_grad(v):
    s = _sigmoid(v)
    return s * (1.0 + v * (1.0 - s))


def _hard_swish_grad(v):
    # d/dv [v * hard_sigmoid(v)] = hard_sigmoid(v) + v * hard_sigmoid'(v)
    return np.clip(v / 6.0 + 0.5, 0.0, 1.0) + _where((v > -3.0) & (v < 3.0), v / 6.0, 0.0, v)


def _mish_grad(v):
    t = np.tanh(_softplus(v))
    return t + v * (1.0 - t * t) * _sigmoid(v)


# Derivative of each elementwise activation, as a function of its input (the
# pre-activation). At a kink the one-sided value is TensorFlow's: relu and
# leaky_relu take the left value at 0 (``features > 0``); relu6 and the hard
# sigmoids are flat on the clip boundaries (``Relu6Grad``: 0 < x < 6). Row-wise
# activations (softmax, log_softmax) are not here: ``dense_backward`` handles them.
ACTIVATION_GRADS = {
    "linear": np.ones_like,
    "tanh": lambda v: 1.0 - np.tanh(v) ** 2,
    "sigmoid": lambda v: _sigmoid(v) * (1.0 - _sigmoid(v)),
    "hard_sigmoid": lambda v: _where((v > -3.0) & (v < 3.0), 1.0 / 6.0, 0.0, v),
    "hard_sigmoid_keras2": lambda v: _where((v > -2.5) & (v < 2.5), 0.2, 0.0, v),
    "relu": lambda v: _where(v > 0, 1.0, 0.0, v),
    "relu6": lambda v: _where((v > 0) & (v < 6.0), 1.0, 0.0, v),
    "leaky_relu": lambda v: _where(v > 0, 1.0, 0.2, v),
    "elu": lambda v: np.where(v > 0, 1.0, np.exp(np.minimum(v, 0.0))).astype(v.dtype),
    "selu": lambda v: 1.0507009873554804934193349852946
    * np.where(v > 0, 1.0, 1.6732632423543772848170429916717 * np.exp(np.minimum(v, 0.0))).astype(v.dtype),
    "softplus": _sigmoid,
    "softsign": lambda v: 1.0 / (1.0 + np.abs(v)) ** 2,
    "swish": _swish_grad,
    "silu": _swish_grad,
    "hard_swish": _hard_swish_grad,
    "hard_silu": _hard_swish_grad,
    "mish": _mish_grad,
    "gelu": lambda v: 0.5 * (1.0 + _erf(v / np.sqrt(2.0))) + v * np.exp(-0.5 * v * v) / np.sqrt(2.0 * np.pi),
    "exponential": np.exp,
}


def _steps(T, go_backwards):
    return range(T - 1, -1, -1) if go_backwards else range(T)


def _collect(outputs, return_sequences):
    return np.stack(outputs, axis=1) if return_sequences else outputs[-1]


def masked_forward(step, x, states, mask, go_backwards, return_sequences, zero_output_for_mask):
    """Keras's masked recurrence (``backend.rnn`` with a mask) around any cell's
    forward ``step(x_t (B, 1, C), states) -> (y_t (B, H), new states)``: where
    ``mask[b, t]`` is false the states carry through unchanged and the output
    repeats the previous output (zeros before the first valid step), or is
    zeros with ``zero_output_for_mask``. Returns (y, *final states)."""
    mask = np.asarray(mask, bool)
    prev, outputs = None, []
    for t in _steps(x.shape[1], go_backwards):
        y, new = step(x[:, t:t + 1], states)
        m = mask[:, t:t + 1]
        states = [np.where(m, n, s) for n, s in zip(new, states)]
        prev = np.zeros_like(y) if prev is None or zero_output_for_mask else prev
        prev = np.where(m, y, prev)
        outputs.append(prev)
    return (_collect(outputs, return_sequences),) + tuple(states)


def _masked_output(prev, y, keep, zero_output_for_mask):
    """One masked step's output: ``y`` where ``keep`` (B, 1), else the previous
    output (``prev``, None before the first step) or zeros."""
    prev = np.zeros_like(y) if prev is None or zero_output_for_mask else prev
    return np.where(keep, y, prev)


class _MaskRoute:
    """The backward's side of a masked forward (cache["mask"] not None), one
    processing step at a time from the last: ``enter(s, t, dh, dy)`` returns
    the gradient w.r.t. the state the step computed (zero on masked rows);
    ``leave(new, old)`` blends a step's gradient w.r.t. the states entering it
    with the one that skipped it (a masked row's state passed straight
    through). forward: y_s = keep ? y_step : carried (carried = 0 with
    zero_output_for_mask, else y_{s-1}); state_s = keep ? state_step : state_{s-1}."""

    def __init__(self, cache, dy):
        self.mask = np.asarray(cache["mask"], bool)
        self.zero = cache["zero_output_for_mask"]
        self.rs = cache["return_sequences"]
        # the gradient w.r.t. the carried output; without return_sequences the
        # output is the last step's blended output, so dy enters there
        self.carry = np.zeros_like(dy[:, 0]) if self.rs else dy.copy()

    def enter(self, s, t, dh, dy):
        self.keep = self.mask[:, t:t + 1]
        dout = self.carry + dy[:, s] if self.rs else self.carry
        self.carry = np.zeros_like(dout) if self.zero else np.where(self.keep, 0.0, dout).astype(dout.dtype)
        return np.where(self.keep, dh + dout, 0.0).astype(dh.dtype)

    def gate(self, d):
        """A state gradient other than dh entering the step (LSTM's dc)."""
        return np.where(self.keep, d, 0.0).astype(d.dtype)

    def leave(self, new, old):
        return np.where(self.keep, new, old)


def _dy_at(dy, s, T, return_sequences):
    """The part of dy that lands on the output of processing step ``s``."""
    if return_sequences:
        return dy[:, s]
    return dy if s == T - 1 else 0.0


# ----------------------------------------------------------------------------
# SimpleRNN

def simple_rnn_forward_train(x, h0, kernel, recurrent_kernel, bias, activation="tanh",
                             go_backwards=False, return_sequences=False, mask=None,
                             zero_output_for_mask=False):
    act = ACTIVATIONS[activation]
    h = h0.copy()
    outputs, h_tm1s, zs = [], [], []
    prev = None
    for t in _steps(x.shape[1], go_backwards):
        h_tm1s.append(h)
        z = x[:, t] @ kernel + bias + h @ recurrent_kernel
        h_new = act(z)
        zs.append(z)
        if mask is None:
            h = h_new
            outputs.append(h)
        else:
            keep = np.asarray(mask, bool)[:, t:t + 1]
            h = np.where(keep, h_new, h)
            prev = _masked_output(prev, h_new, keep, zero_output_for_mask)
            outputs.append(prev)
    cache = dict(x=x, kernel=kernel, recurrent_kernel=recurrent_kernel, activation=activation,
                 go_backwards=go_backwards, return_sequences=return_sequences, h_tm1=h_tm1s, z=zs,
                 mask=mask, zero_output_for_mask=zero_output_for_mask)
    return _collect(outputs, return_sequences), h, cache


def simple_rnn_forward(x, h0, kernel, recurrent_kernel, bias, activation="tanh",
                       go_backwards=False, return_sequences=False, mask=None, zero_output_for_mask=False):
    if mask is not None:
        def step(x_t, states):
            y, h = simple_rnn_forward(x_t, states[0], kernel, recurrent_kernel, bias, activation)
            return y, [h]
        return masked_forward(step, x, [h0], mask, go_backwards, return_sequences, zero_output_for_mask)
    return simple_rnn_forward_train(x, h0, kernel, recurrent_kernel, bias, activation,
                                    go_backwards, return_sequences)[:2]


def simple_rnn_backward(dy, dh_n, cache):
    x, kernel, recurrent_kernel = cache["x"], cache["kernel"], cache["recurrent_kernel"]
    dact = ACTIVATION_GRADS[cache["activation"]]
    T = x.shape[1]
    dx = np.zeros_like(x)
    dkernel = np.zeros_like(kernel)
    drecurrent_kernel = np.zeros_like(recurrent_kernel)
    dbias = np.zeros(kernel.shape[1], x.dtype)
    dh = dh_n.copy()
    route = None if cache.get("mask") is None else _MaskRoute(cache, dy)
    for s, t in reversed(list(enumerate(_steps(T, cache["go_backwards"])))):
        dh_in = dh
        if route is None:
            dh = dh + _dy_at(dy, s, T, cache["return_sequences"])
        else:
            dh = route.enter(s, t, dh, dy)
        h_tm1, z = cache["h_tm1"][s], cache["z"][s]
        # forward: h = act(z)
        dz = dh * dact(z)
        # forward: z = x[:, t] @ kernel + bias + h_tm1 @ recurrent_kernel
        dx[:, t] = dz @ kernel.T
        dkernel += x[:, t].T @ dz
        dbias += dz.sum(axis=0)
        drecurrent_kernel += h_tm1.T @ dz
        dh = dz @ recurrent_kernel.T
        if route is not None:  # forward: h = keep ? h_new : h_tm1
            dh = route.leave(dh, dh_in)
    return dx, dh, dkernel, drecurrent_kernel, dbias


# ----------------------------------------------------------------------------
# LSTM

def lstm_forward_train(x, h0, c0, kernel, recurrent_kernel, bias, activation="tanh",
                       recurrent_activation="sigmoid", go_backwards=False,
                       return_sequences=False, mask=None, zero_output_for_mask=False):
    act, ract = ACTIVATIONS[activation], ACTIVATIONS[recurrent_activation]
    H = h0.shape[1]
    h, c = h0.copy(), c0.copy()
    outputs, h_tm1s, c_tm1s, zs, cs = [], [], [], [], []
    prev = None
    for t in _steps(x.shape[1], go_backwards):
        h_tm1s.append(h)
        c_tm1s.append(c)
        z = x[:, t] @ kernel + bias + h @ recurrent_kernel
        i = ract(z[:, :H])
        f = ract(z[:, H:2 * H])
        c_new = f * c + i * act(z[:, 2 * H:3 * H])
        o = ract(z[:, 3 * H:])
        h_new = o * act(c_new)
        zs.append(z)
        cs.append(c_new)
        if mask is None:
            h, c = h_new, c_new
            outputs.append(h)
        else:
            keep = np.asarray(mask, bool)[:, t:t + 1]
            h, c = np.where(keep, h_new, h), np.where(keep, c_new, c)
            prev = _masked_output(prev, h_new, keep, zero_output_for_mask)
            outputs.append(prev)
    cache = dict(x=x, kernel=kernel, recurrent_kernel=recurrent_kernel, activation=activation,
                 recurrent_activation=recurrent_activation, go_backwards=go_backwards,
                 return_sequences=return_sequences, h_tm1=h_tm1s, c_tm1=c_tm1s, z=zs, c=cs,
                 mask=mask, zero_output_for_mask=zero_output_for_mask)
    return _collect(outputs, return_sequences), h, c, cache


def lstm_forward(x, h0, c0, kernel, recurrent_kernel, bias, activation="tanh",
                 recurrent_activation="sigmoid", go_backwards=False,
                 return_sequences=False, mask=None, zero_output_for_mask=False):
    if mask is not None:
        def step(x_t, states):
            y, h, c = lstm_forward(x_t, states[0], states[1], kernel, recurrent_kernel, bias, activation,
                                   recurrent_activation)
            return y, [h, c]
        return masked_forward(step, x, [h0, c0], mask, go_backwards, return_sequences, zero_output_for_mask)
    return lstm_forward_train(x, h0, c0, kernel, recurrent_kernel, bias, activation,
                              recurrent_activation, go_backwards, return_sequences)[:3]


def lstm_backward(dy, dh_n, dc_n, cache):
    x, kernel, recurrent_kernel = cache["x"], cache["kernel"], cache["recurrent_kernel"]
    act, ract = ACTIVATIONS[cache["activation"]], ACTIVATIONS[cache["recurrent_activation"]]
    dact = ACTIVATION_GRADS[cache["activation"]]
    dract = ACTIVATION_GRADS[cache["recurrent_activation"]]
    T = x.shape[1]
    H = dh_n.shape[1]
    dx = np.zeros_like(x)
    dkernel = np.zeros_like(kernel)
    drecurrent_kernel = np.zeros_like(recurrent_kernel)
    dbias = np.zeros(kernel.shape[1], x.dtype)
    dh, dc = dh_n.copy(), dc_n.copy()
    route = None if cache.get("mask") is None else _MaskRoute(cache, dy)
    for s, t in reversed(list(enumerate(_steps(T, cache["go_backwards"])))):
        dh_in, dc_in = dh, dc
        if route is None:
            dh = dh + _dy_at(dy, s, T, cache["return_sequences"])
        else:
            dh, dc = route.enter(s, t, dh, dy), route.gate(dc)
        h_tm1, c_tm1, z, c = cache["h_tm1"][s], cache["c_tm1"][s], cache["z"][s], cache["c"][s]
        zi, zf, zc, zo = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
        i, f, g, o = ract(zi), ract(zf), act(zc), ract(zo)
        # forward: h = o * act(c)
        do = dh * act(c)
        dc = dc + dh * o * dact(c)
        # forward: c = f * c_tm1 + i * act(zc)
        di, df, dg = dc * g, dc * c_tm1, dc * i
        dc = dc * f
        # forward: i, f, o = ract(zi), ract(zf), ract(zo)
        dz = np.concatenate([di * dract(zi), df * dract(zf), dg * dact(zc), do * dract(zo)], axis=1)
        # forward: z = x[:, t] @ kernel + bias + h_tm1 @ recurrent_kernel
        dx[:, t] = dz @ kernel.T
        dkernel += x[:, t].T @ dz
        dbias += dz.sum(axis=0)
        drecurrent_kernel += h_tm1.T @ dz
        dh = dz @ recurrent_kernel.T
        if route is not None:  # forward: h, c = keep ? (h_new, c_new) : (h_tm1, c_tm1)
            dh, dc = route.leave(dh, dh_in), route.leave(dc, dc_in)
    return dx, dh, dc, dkernel, drecurrent_kernel, dbias


# ----------------------------------------------------------------------------
# GRU

def gru_forward_train(x, h0, kernel, recurrent_kernel, bias, activation="tanh",
                      recurrent_activation="sigmoid", go_backwards=False,
                      return_sequences=False, reset_after=True, mask=None, zero_output_for_mask=False):
    """``bias`` is Keras's: (2, 3H) [input_bias, recurrent_bias] when
    ``reset_after``, else (3H,)."""
    act, ract = ACTIVATIONS[activation], ACTIVATIONS[recurrent_activation]
    H = h0.shape[1]
    if reset_after:
        input_bias, recurrent_bias = bias[0], bias[1]
    else:
        input_bias, recurrent_bias = bias, np.zeros_like(bias)
    h = h0.copy()
    outputs, h_tm1s, zs, hh_recs = [], [], [], []
    prev = None
    for t in _steps(x.shape[1], go_backwards):
        h_tm1s.append(h)
        xz = x[:, t] @ kernel + input_bias
        if reset_after:
            inner = h @ recurrent_kernel + recurrent_bias
            a_z = xz[:, :H] + inner[:, :H]
            a_r = xz[:, H:2 * H] + inner[:, H:2 * H]
            r = ract(a_r)
            hh_rec = inner[:, 2 * H:]  # h_tm1 @ U_h + recurrent_bias_h, before r scales it
            a_h = xz[:, 2 * H:] + r * hh_rec
        else:
            inner = h @ recurrent_kernel[:, :2 * H]
            a_z = xz[:, :H] + inner[:, :H]
            a_r = xz[:, H:2 * H] + inner[:, H:]
            r = ract(a_r)
            hh_rec = r * h  # rh, before U_h multiplies it
            a_h = xz[:, 2 * H:] + hh_rec @ recurrent_kernel[:, 2 * H:]
        z = ract(a_z)
        hh = act(a_h)
        h_new = z * h + (1.0 - z) * hh
        zs.append(np.concatenate([a_z, a_r, a_h], axis=1))
        hh_recs.append(hh_rec)
        if mask is None:
            h = h_new
            outputs.append(h)
        else:
            keep = np.asarray(mask, bool)[:, t:t + 1]
            h = np.where(keep, h_new, h)
            prev = _masked_output(prev, h_new, keep, zero_output_for_mask)
            outputs.append(prev)
    cache = dict(x=x, kernel=kernel, recurrent_kernel=recurrent_kernel, activation=activation,
                 recurrent_activation=recurrent_activation, go_backwards=go_backwards,
                 return_sequences=return_sequences, reset_after=reset_after,
                 h_tm1=h_tm1s, z=zs, hh_rec=hh_recs, mask=mask, zero_output_for_mask=zero_output_for_mask)
    return _collect(outputs, return_sequences), h, cache


def gru_forward(x, h0, kernel, recurrent_kernel, bias, activation="tanh",
                recurrent_activation="sigmoid", go_backwards=False,
                return_sequences=False, reset_after=True, mask=None, zero_output_for_mask=False):
    """``bias`` is Keras's: (2, 3H) [input_bias, recurrent_bias] when
    ``reset_after``, else (3H,)."""
    if mask is not None:
        def step(x_t, states):
            y, h = gru_forward(x_t, states[0], kernel, recurrent_kernel, bias, activation, recurrent_activation,
                               reset_after=reset_after)
            return y, [h]
        return masked_forward(step, x, [h0], mask, go_backwards, return_sequences, zero_output_for_mask)
    return gru_forward_train(x, h0, kernel, recurrent_kernel, bias, activation,
                             recurrent_activation, go_backwards, return_sequences,
                             reset_after)[:2]


def gru_backward(dy, dh_n, cache):
    x, kernel, recurrent_kernel = cache["x"], cache["kernel"], cache["recurrent_kernel"]
    act, ract = ACTIVATIONS[cache["activation"]], ACTIVATIONS[cache["recurrent_activation"]]
    dact = ACTIVATION_GRADS[cache["activation"]]
    dract = ACTIVATION_GRADS[cache["recurrent_activation"]]
    reset_after = cache["reset_after"]
    T = x.shape[1]
    H = dh_n.shape[1]
    dx = np.zeros_like(x)
    dkernel = np.zeros_like(kernel)
    drecurrent_kernel = np.zeros_like(recurrent_kernel)
    dinput_bias = np.zeros(3 * H, x.dtype)
    drecurrent_bias = np.zeros(3 * H, x.dtype)
    dh = dh_n.copy()
    route = None if cache.get("mask") is None else _MaskRoute(cache, dy)
    for s, t in reversed(list(enumerate(_steps(T, cache["go_backwards"])))):
        dh_in = dh
        if route is None:
            dh = dh + _dy_at(dy, s, T, cache["return_sequences"])
        else:
            dh = route.enter(s, t, dh, dy)
        h_tm1, a, hh_rec = cache["h_tm1"][s], cache["z"][s], cache["hh_rec"][s]
        a_z, a_r, a_h = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
        z, r, hh = ract(a_z), ract(a_r), act(a_h)
        # forward: h = z * h_tm1 + (1 - z) * hh
        dz = dh * (h_tm1 - hh)
        dhh = dh * (1.0 - z)
        dh_tm1 = dh * z
        # forward: hh = act(a_h)
        da_h = dhh * dact(a_h)
        if reset_after:
            # forward: a_h = x_h + input_bias_h + r * hh_rec, hh_rec = h_tm1 @ U_h + recurrent_bias_h
            dr = da_h * hh_rec
            dhh_rec = da_h * r
        else:
            # forward: a_h = x_h + input_bias_h + hh_rec @ U_h, hh_rec = r * h_tm1
            drecurrent_kernel[:, 2 * H:] += hh_rec.T @ da_h
            drh = da_h @ recurrent_kernel[:, 2 * H:].T
            dr = drh * h_tm1
            dh_tm1 = dh_tm1 + drh * r
        # forward: z, r = ract(a_z), ract(a_r)
        da_z = dz * dract(a_z)
        da_r = dr * dract(a_r)
        # forward: a = x[:, t] @ kernel + input_bias + [recurrent part]
        da = np.concatenate([da_z, da_r, da_h], axis=1)
        dx[:, t] = da @ kernel.T
        dkernel += x[:, t].T @ da
        dinput_bias += da.sum(axis=0)
        if reset_after:
            # forward: inner = h_tm1 @ recurrent_kernel + recurrent_bias
            dinner = np.concatenate([da_z, da_r, dhh_rec], axis=1)
            drecurrent_kernel += h_tm1.T @ dinner
            drecurrent_bias += dinner.sum(axis=0)
            dh_tm1 = dh_tm1 + dinner @ recurrent_kernel.T
        else:
            # forward: inner = h_tm1 @ recurrent_kernel[:, :2H]
            dinner = np.concatenate([da_z, da_r], axis=1)
            drecurrent_kernel[:, :2 * H] += h_tm1.T @ dinner
            dh_tm1 = dh_tm1 + dinner @ recurrent_kernel[:, :2 * H].T
        dh = dh_tm1 if route is None else route.leave(dh_tm1, dh_in)  # forward: h = keep ? h_new : h_tm1
    dbias = np.stack([dinput_bias, drecurrent_bias]) if reset_after else dinput_bias
    return dx, dh, dkernel, drecurrent_kernel, dbias


# ----------------------------------------------------------------------------
# Dense

def dense_forward(x, kernel, bias, activation="linear"):
    """x is (..., C); kernel is (C, N); applies to the last axis, as Keras does."""
    y = x @ kernel
    if bias is not None:
        y = y + bias
    return ACTIVATIONS[activation](y)


def dense_backward(dy, x, kernel, bias, activation="linear"):
    """Gradients of ``dense_forward``: returns ``(dx, dkernel, dbias)``, dbias None
    when ``bias`` is None. dy is shaped like y, (..., N)."""
    C, N = kernel.shape
    # forward: y = act(x @ kernel + bias)
    z = x @ kernel
    if bias is not None:
        z = z + bias
    if activation == "softmax":
        sm = _softmax(z)
        dz = sm * (dy - (dy * sm).sum(axis=-1, keepdims=True))
    elif activation == "log_softmax":
        dz = dy - _softmax(z) * dy.sum(axis=-1, keepdims=True)
    else:
        dz = dy * ACTIVATION_GRADS[activation](z)
    dx = dz @ kernel.T
    dkernel = x.reshape(-1, C).T @ dz.reshape(-1, N)
    dbias = dz.reshape(-1, N).sum(axis=0) if bias is not None else None
    return dx, dkernel, dbias
