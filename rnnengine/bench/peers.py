"""Workloads, weights and runners for ``rnnengine bench`` (the standard workloads of
/work/shared/workloads.md).

A *runner* is what gets timed: ``runner.f(*args)`` takes NumPy arrays and returns
NumPy arrays, one call per request, the way a service would call it.

- Ordinary workloads (L1, L2, T1, T2): ``args == (x,)`` with x (B, T, C) float32;
  ``f`` returns y: (B, H) for the last step, or (B, T, H) with return_sequences.
- S1 (one streaming step): ``args == (x, h0)`` or ``(x, h0, c0)`` for LSTM, with
  x (B, 1, C) and states (B, H); ``f`` returns ``(y, h)`` or ``(y, h, c)``.
  A runner that cannot take a state yet (``Runner.takes_state`` false) is called
  as ``f(x)`` from a zero state and returns y alone; it is checked against the
  zero-state reference.

Weights are always given in Keras layout (Keras 3 defaults: tanh, sigmoid
recurrent activation, GRU reset_after=True):
kernel (C, K*H), recurrent_kernel (H, K*H), bias (K*H,) or (2, 3H) for GRU,
with K = 1, 4, 3 for SimpleRNN, LSTM, GRU. They are converted for PyTorch / ONNX:
LSTM gates i,f,c,o = PyTorch i,f,g,o; GRU z,r,h -> PyTorch r,z,n (first two
blocks swapped); weight_ih = kernel.T, weight_hh = recurrent_kernel.T; GRU bias
row 0 -> bias_ih, row 1 -> bias_hh; SimpleRNN/LSTM bias -> bias_ih, bias_hh = 0.

Every peer import is optional: a missing framework raises ``PeerUnavailable``
from ``build_runner`` and the caller skips that runner with a note.

Nothing here imports a framework at module import time (only NumPy), so a
benchmark process only loads the one framework it times. The benchmark's
worker processes load this file by its path, without importing the rnnengine
package (see ``compare._load_sibling``); the rnnengine runners import it
themselves.
"""
import dataclasses
import importlib.util
import os
import warnings
from typing import Callable

import numpy as np

CELLS = ("simple_rnn", "lstm", "gru")
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
CELL_TITLES = {"simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}

# Peers are what rnnengine is compared with ("ratio to the best peer").
PEER_RUNNERS = ("keras-predict", "keras-tf-function", "keras-xla", "torch", "onnxruntime")
RNNENGINE_RUNNERS = ("rnnengine-numba", "rnnengine-cython", "kernel-numba", "kernel-cython")
# rnnengine-cython again with another kernel build forced, or in deterministic
# mode: the same runner in a process started with these variables.
VARIANT_RUNNERS = {
    "rnnengine-cython-avx2": {"RNNENGINE_ISA": "avx2"},
    "rnnengine-cython-baseline": {"RNNENGINE_ISA": "baseline"},
    "rnnengine-cython-det": {"RNNENGINE_DETERMINISTIC": "1"},
}
ALL_RUNNERS = PEER_RUNNERS + RNNENGINE_RUNNERS + tuple(VARIANT_RUNNERS)

TORCH_THREADS = 2
ORT_THREADS = 2
ONNX_OPSET = 17

# rnnengine/ (this file is rnnengine/bench/peers.py)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Workload:
    id: str
    B: int
    T: int
    C: int
    H: int
    return_sequences: bool
    stream: bool = False
    what: str = ""

    def flops(self, cell):
        """Matrix-product FLOPs of one call: 2*B*T*(C+H)*K*H."""
        return 2 * self.B * self.T * (self.C + self.H) * GATES[cell] * self.H


WORKLOADS = {
    "L1": Workload("L1", 1, 50, 32, 128, False, what="one request, low latency"),
    "L2": Workload("L2", 1, 20, 8, 32, False, what="tiny model, overhead-dominated"),
    "S1": Workload("S1", 1, 1, 32, 128, False, stream=True,
                   what="one streaming step, state in and out"),
    "T1": Workload("T1", 256, 100, 64, 256, True, what="offline throughput"),
    "T2": Workload("T2", 32, 100, 64, 256, False, what="medium batch"),
}


class PeerUnavailable(RuntimeError):
    """The framework a runner needs is not importable here (the runner is skipped)."""


@dataclasses.dataclass
class Runner:
    name: str
    f: Callable
    takes_state: bool = True  # only meaningful for streaming workloads
    note: str = ""


# --------------------------------------------------------------------------- data

def n_states(cell):
    return 2 if cell == "lstm" else 1


def make_weights(cell, C, H, seed=0):
    """Random non-zero float32 weights in Keras layout: (kernel, recurrent_kernel, bias).

    Scaled like a trained layer (entries ~ 1/sqrt(fan_in)) so the activations
    stay out of saturation and the numerical check means something.
    """
    rng = np.random.default_rng([seed, GATES[cell], C, H])
    K = GATES[cell]
    kernel = rng.uniform(-1.0, 1.0, (C, K * H)) / np.sqrt(C)
    recurrent_kernel = rng.uniform(-1.0, 1.0, (H, K * H)) / np.sqrt(H)
    bshape = (2, 3 * H) if cell == "gru" else (K * H,)
    bias = rng.uniform(-0.5, 0.5, bshape)
    # "non-zero": bump any exact zero (practically never happens)
    for a in (kernel, recurrent_kernel, bias):
        a[a == 0] = 1e-3
    return tuple(np.ascontiguousarray(a, dtype=np.float32)
                 for a in (kernel, recurrent_kernel, bias))


def make_args(wl, cell, seed=1):
    """The call arguments for one request: (x,) or, for streaming, (x, h0[, c0])."""
    rng = np.random.default_rng([seed, GATES[cell], wl.B, wl.T, wl.C, wl.H])
    x = rng.standard_normal((wl.B, wl.T, wl.C)).astype(np.float32)
    if not wl.stream:
        return (x,)
    states = tuple(rng.uniform(-0.5, 0.5, (wl.B, wl.H)).astype(np.float32)
                   for _ in range(n_states(cell)))
    return (x,) + states


def _load_reference():
    """rnnengine/kernels/reference.py of this same copy of rnnengine, loaded by
    path so that no Numba (nor the rest of rnnengine) gets imported into a
    peer's benchmark process."""
    path = os.path.join(_PACKAGE_DIR, "kernels", "reference.py")
    mod_spec = importlib.util.spec_from_file_location("_rnnengine_reference", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def reference(wl, cell, weights, args, zero_state=False):
    """float64 NumPy reference outputs, shaped like a runner's return value
    (always a tuple): (y,) or, for streaming, (y, h[, c])."""
    ref = _load_reference()
    kernel, rk, bias = (w.astype(np.float64) for w in weights)
    x = args[0].astype(np.float64)
    if wl.stream and not zero_state:
        states = [s.astype(np.float64) for s in args[1:]]
    else:
        states = [np.zeros((wl.B, wl.H)) for _ in range(n_states(cell))]
    rs = wl.return_sequences
    if cell == "simple_rnn":
        out = ref.simple_rnn_forward(x, states[0], kernel, rk, bias, return_sequences=rs)
    elif cell == "lstm":
        out = ref.lstm_forward(x, states[0], states[1], kernel, rk, bias, return_sequences=rs)
    else:
        out = ref.gru_forward(x, states[0], kernel, rk, bias, return_sequences=rs,
                              reset_after=True)
    if wl.stream and not zero_state:
        return tuple(out)
    return (out[0],)


# --------------------------------------------------------------------------- Keras

def _keras_model(cell, wl, weights):
    try:
        import keras
    except ImportError as exc:
        raise PeerUnavailable(f"keras/tensorflow not importable: {exc}") from None
    cls = {"simple_rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM,
           "gru": keras.layers.GRU}[cell]
    if not wl.stream:
        model = keras.Sequential([
            keras.Input(shape=(wl.T, wl.C), batch_size=wl.B),
            cls(wl.H, return_sequences=wl.return_sequences),
        ])
    else:
        x_in = keras.Input(shape=(wl.T, wl.C), batch_size=wl.B)
        s_in = [keras.Input(shape=(wl.H,), batch_size=wl.B) for _ in range(n_states(cell))]
        outs = cls(wl.H, return_state=True)(x_in, initial_state=s_in)
        model = keras.Model([x_in] + s_in, outs)
    model.set_weights(list(weights))
    return model


def _as_output(out):
    if isinstance(out, (list, tuple)):
        return tuple(np.asarray(o) for o in out)
    return np.asarray(out)


def build_keras_predict(cell, wl, weights):
    model = _keras_model(cell, wl, weights)

    def f(*args):
        return _as_output(model.predict_on_batch(args[0] if len(args) == 1 else list(args)))

    return Runner("keras-predict", f)


def build_keras_function(cell, wl, weights, jit_compile=False):
    model = _keras_model(cell, wl, weights)
    import tensorflow as tf

    shapes = [(wl.B, wl.T, wl.C)] + ([(wl.B, wl.H)] * n_states(cell) if wl.stream else [])
    spec = [tf.TensorSpec(s, tf.float32) for s in shapes]

    @tf.function(input_signature=spec, jit_compile=jit_compile)
    def call(*a):
        return model(a[0] if len(a) == 1 else list(a), training=False)

    def f(*args):
        out = call(*args)
        if isinstance(out, (list, tuple)):
            return tuple(o.numpy() for o in out)
        return out.numpy()

    name = "keras-xla" if jit_compile else "keras-tf-function"
    return Runner(name, f)


# --------------------------------------------------------------------------- PyTorch

def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise PeerUnavailable(f"torch not importable: {exc}") from None
    return torch


def keras_to_torch(cell, weights):
    """Keras-layout weights -> (weight_ih, weight_hh, bias_ih, bias_hh), float32 NumPy."""
    kernel, rk, bias = weights
    H = rk.shape[0]
    if cell == "gru":
        perm = np.r_[H:2 * H, 0:H, 2 * H:3 * H]  # z,r,h -> r,z,n
        return (np.ascontiguousarray(kernel[:, perm].T), np.ascontiguousarray(rk[:, perm].T),
                bias[0][perm].copy(), bias[1][perm].copy())
    # SimpleRNN: one block; LSTM: i,f,c,o == i,f,g,o
    return (np.ascontiguousarray(kernel.T), np.ascontiguousarray(rk.T),
            bias.copy(), np.zeros_like(bias))


def torch_module(cell, wl, weights):
    """An eval-mode torch.nn.Module with the runner's call signature and outputs."""
    torch = _import_torch()
    C, H = wl.C, wl.H
    if cell == "simple_rnn":
        rnn = torch.nn.RNN(C, H, nonlinearity="tanh", batch_first=True)
    elif cell == "lstm":
        rnn = torch.nn.LSTM(C, H, batch_first=True)
    else:
        rnn = torch.nn.GRU(C, H, batch_first=True)
    w_ih, w_hh, b_ih, b_hh = keras_to_torch(cell, weights)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(w_ih))
        rnn.weight_hh_l0.copy_(torch.from_numpy(w_hh))
        rnn.bias_ih_l0.copy_(torch.from_numpy(b_ih))
        rnn.bias_hh_l0.copy_(torch.from_numpy(b_hh))
    rnn.requires_grad_(False)

    lstm = cell == "lstm"
    stream = wl.stream
    rs = wl.return_sequences

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn

        def forward(self, x, *states):
            if stream:
                init = tuple(s.unsqueeze(0) for s in states)
                out, hn = self.rnn(x, init if lstm else init[0])
                if lstm:
                    return out[:, -1], hn[0][0], hn[1][0]
                return out[:, -1], hn[0]
            out, hn = self.rnn(x)
            if rs:
                return out
            return (hn[0] if lstm else hn)[0]

    return Wrapped().eval()


def build_torch(cell, wl, weights):
    torch = _import_torch()
    torch.set_num_threads(TORCH_THREADS)
    mod = torch_module(cell, wl, weights)
    from_numpy = torch.from_numpy
    inference_mode = torch.inference_mode

    def f(*args):
        with inference_mode():
            out = mod(*[from_numpy(a) for a in args])
        if isinstance(out, tuple):
            return tuple(o.numpy() for o in out)
        return out.numpy()

    return Runner("torch", f, note=f"{TORCH_THREADS} threads, inference_mode")


# --------------------------------------------------------------------------- ONNX Runtime

def export_onnx(cell, wl, weights, path):
    """Export the PyTorch module of ``torch_module`` to ``path`` (fixed shapes).

    Uses the TorchScript-based exporter (``dynamo=False``): it maps nn.RNN/LSTM/GRU
    to the ONNX RNN/LSTM/GRU operators, which ONNX Runtime runs with its own
    fused kernels. Returns a short description of the exporter used.
    """
    torch = _import_torch()
    mod = torch_module(cell, wl, weights)
    example = tuple(torch.from_numpy(a) for a in make_args(wl, cell))
    in_names = ["x"] + (["h0", "c0"][:n_states(cell)] if wl.stream else [])
    out_names = (["y", "h", "c"][:1 + n_states(cell)]) if wl.stream else ["y"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(mod, example, path, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=in_names, output_names=out_names,
                              do_constant_folding=True)
            return f"torch.onnx.export(dynamo=False), opset {ONNX_OPSET}"
        except TypeError:  # a torch without the dynamo argument: legacy is the only one
            torch.onnx.export(mod, example, path, opset_version=ONNX_OPSET,
                              input_names=in_names, output_names=out_names,
                              do_constant_folding=True)
            return f"torch.onnx.export, opset {ONNX_OPSET}"


def export_torchscript(cell, wl, weights, path):
    """Save the PyTorch module of ``torch_module`` as TorchScript (``torch.jit.trace``)
    to ``path``: what the cold-start measurement loads with ``torch.jit.load``."""
    torch = _import_torch()
    mod = torch_module(cell, wl, weights)
    example = tuple(torch.from_numpy(a) for a in make_args(wl, cell))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(mod, example)
        torch.jit.save(traced, path)
    return "torch.jit.trace + torch.jit.save"


def build_onnxruntime(cell, wl, weights, onnx_path=None):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise PeerUnavailable(f"onnxruntime not importable: {exc}") from None
    note = ""
    if onnx_path is None or not os.path.exists(onnx_path):
        import tempfile
        onnx_path = os.path.join(tempfile.mkdtemp(prefix="rnnengine-onnx-"),
                                 f"{wl.id}_{cell}.onnx")
        note = export_onnx(cell, wl, weights, onnx_path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = ORT_THREADS
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    run = sess.run

    def f(*args):
        outs = run(None, dict(zip(names, args)))
        return outs[0] if len(outs) == 1 else tuple(outs)

    return Runner("onnxruntime", f, note=note or f"{ORT_THREADS} intra-op threads, ORT_ENABLE_ALL")


# --------------------------------------------------------------------------- rnnengine

def rnnengine_model(cell, wl, weights, backend=None):
    """An rnnengine ``Sequential([Input((T, C)), Cell(H)])`` with ``weights``;
    ``backend`` ("numba"/"cython") is set process-wide first when given."""
    try:
        import rnnengine.config
        from rnnengine.layers import GRU, LSTM, Input, SimpleRNN
        from rnnengine.models import Sequential
    except ImportError as exc:
        raise PeerUnavailable(f"rnnengine public API not importable: {exc}") from None
    if backend is not None:
        _check_backend_built(backend)
        rnnengine.config.set_kernels(backend)
    cls = {"simple_rnn": SimpleRNN, "lstm": LSTM, "gru": GRU}[cell]
    model = Sequential([Input(shape=(wl.T, wl.C)),
                        cls(wl.H, return_sequences=wl.return_sequences)])
    model.set_weights(list(weights))
    return model


def _check_backend_built(backend):
    if backend == "cython":
        try:
            from rnnengine.kernels import CYTHON_IMPORT_ERROR, cython_available
        except ImportError:
            return
        if not cython_available():
            raise PeerUnavailable(f"rnnengine Cython kernels not built: {CYTHON_IMPORT_ERROR}")


def build_rnnengine(cell, wl, weights, backend):
    """rnnengine's public, Keras-like API (``rnnengine.models.Sequential``)."""
    try:
        import rnnengine
        import rnnengine.config
        from rnnengine.layers import GRU, LSTM, Input, SimpleRNN
        from rnnengine.models import Sequential
    except ImportError as exc:
        raise PeerUnavailable(f"rnnengine public API not importable: {exc}") from None
    _check_backend_built(backend)
    rnnengine.config.set_kernels(backend)
    cls = {"simple_rnn": SimpleRNN, "lstm": LSTM, "gru": GRU}[cell]
    if wl.stream:
        # S1: model.stream(); the state stays inside the stream between steps, as
        # a service keeps it. The state given with the first call is loaded
        # once (set_state); each call returns the step's output and the state.
        model = Sequential([Input(shape=(None, wl.C)), cls(wl.H, return_sequences=True)])
        model.set_weights(list(weights))
        stream = model.stream(batch_size=wl.B)
        y = np.empty((wl.B, wl.H), np.float32)
        loaded = []

        def f(x, *state):
            if not loaded:
                stream.set_state([list(state)])
                loaded.append(True)
            stream.step(x[:, 0], out=y)
            return (y,) + tuple(stream._states[0])

        return Runner(f"rnnengine-{backend}", f, note="S1: model.stream(batch_size=1).step(x_t, out=)")

    model = rnnengine_model(cell, wl, weights)
    out = np.empty((wl.B, wl.T, wl.H) if wl.return_sequences else (wl.B, wl.H), np.float32)

    def f(x):
        return model.predict_on_batch(x, out=out)

    return Runner(f"rnnengine-{backend}", f)


def build_kernel(cell, wl, weights, backend):
    """Stand-in: the raw kernel (``rnnengine.kernels.get_kernel``) behind a thin
    NumPy wrapper that allocates the output per call and keeps the scratch
    buffers (as a layer's workspace would). No argument checks."""
    try:
        from rnnengine.kernels import _activations as acts
        from rnnengine.kernels import contract, get_kernel
        kern = get_kernel(cell, "forward", backend)
    except (ImportError, RuntimeError) as exc:
        raise PeerUnavailable(f"rnnengine {backend} kernel not available: {exc}") from None
    B, T, C, H = wl.B, wl.T, wl.C, wl.H
    f32 = np.float32
    kernel, rk, bias = weights
    rs = int(wl.return_sequences)
    if cell == "gru":
        packed = (kernel, rk, np.ascontiguousarray(rk[:, 2 * H:]), np.ascontiguousarray(bias[0]),
                  np.ascontiguousarray(bias[1]))
    else:
        packed = (kernel, rk, bias)
    scratch = contract.allocate(cell, "forward", {"B": B, "T": T, "G": GATES[cell] * H, "H": H}, f32)
    ns = n_states(cell)

    def run(x, states):
        y = np.empty((B, T if rs else 1, H), f32)
        kern(*contract.forward_args(cell, x, states, packed, acts.TANH, acts.SIGMOID, 0, rs, y_out=y,
                                    scratch=scratch))
        return y if rs else y[:, 0]

    if wl.stream:
        def f(x, *states):
            st = [s.copy() for s in states]
            y = run(x, st)
            return (y, *st)
    else:
        def f(x):
            return run(x, [np.zeros((B, H), f32) for _ in range(ns)])

    return Runner(f"kernel-{backend}", f, note="raw kernel, no checks (stand-in)")


# --------------------------------------------------------------------------- dispatch

def build_runner(name, cell, wl, weights, onnx_path=None):
    """Build runner ``name`` (one of ``ALL_RUNNERS``) for ``cell`` on workload ``wl``.

    Raises ``PeerUnavailable`` when the framework it needs is missing.
    """
    if name == "keras-predict":
        return build_keras_predict(cell, wl, weights)
    if name == "keras-tf-function":
        return build_keras_function(cell, wl, weights, jit_compile=False)
    if name == "keras-xla":
        return build_keras_function(cell, wl, weights, jit_compile=True)
    if name == "torch":
        return build_torch(cell, wl, weights)
    if name == "onnxruntime":
        return build_onnxruntime(cell, wl, weights, onnx_path)
    if name in ("rnnengine-numba", "rnnengine-cython") or name in VARIANT_RUNNERS:
        runner = build_rnnengine(cell, wl, weights, name.split("-")[1])
        runner.name = name
        return runner
    if name in ("kernel-numba", "kernel-cython"):
        return build_kernel(cell, wl, weights, name.split("-")[1])
    raise ValueError(f"unknown runner {name!r}; expected one of {ALL_RUNNERS}")


def call(runner, args):
    """Call a runner with a workload's args, honouring ``takes_state``."""
    return runner.f(*args) if runner.takes_state else runner.f(args[0])


def max_abs_diff(out, expected):
    """Largest |out - expected| over the outputs a runner returned."""
    outs = out if isinstance(out, tuple) else (out,)
    if len(outs) > len(expected):
        raise ValueError(f"runner returned {len(outs)} outputs, expected {len(expected)}")
    worst = 0.0
    for o, e in zip(outs, expected):
        o = np.asarray(o)
        if o.shape != e.shape:
            o = o.reshape(e.shape)  # e.g. (B, 1, H) vs (B, H): fail loudly if sizes differ
        worst = max(worst, float(np.max(np.abs(o.astype(np.float64) - e))))
    return worst
