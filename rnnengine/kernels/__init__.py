"""Kernel dispatch, and the one contract every backend implements.

There are two backends with the same signatures: Numba (``numba_*.py``) and
Cython (``src/_*.pyx``, compiled into ``rnnengine/kernels/_cy_*``). A layer asks
``get_kernel(cell, pass_, backend, B)`` for a function and calls it with buffers
from its workspace.

Contract (forward), in llm.c's argument order: outputs, saved buffers, inputs,
weights, dims, flags. The names, roles and shapes of every call's arguments are
data in ``contract.py`` (``CALLS``; build tuples with ``contract.bind``)::

    simple_rnn_forward(y_out, h, xproj, rec, x, keep, kernel, recurrent_kernel,
                       bias, B, T, C, H, activation, go_backwards,
                       return_sequences, zero_output_for_mask)
    lstm_forward(y_out, h, c, xproj, rec, x, keep, kernel, recurrent_kernel,
                 bias, B, T, C, H, activation, recurrent_activation,
                 go_backwards, return_sequences, zero_output_for_mask)
    gru_forward(y_out, h, xproj, rec, rec_h, rh, x, keep, kernel,
                recurrent_kernel, recurrent_kernel_h, input_bias, recurrent_bias,
                B, T, C, H, activation, recurrent_activation, go_backwards,
                return_sequences, reset_after, zero_output_for_mask)

- ``keep`` is Keras's mask as uint8 (B, T), indexed by input time (1: the step
  runs; 0: the row's state carries through unchanged and its output repeats
  the last valid one, or is zero with ``zero_output_for_mask``; before any
  valid step the output is zero), or an empty (0, 0) array: no mask
  (``contract.NO_MASK``). Masked steps cost nothing: steps where no row is
  valid are skipped, and a batch-1 call runs only its valid runs.
- Every array is C-contiguous and of one float dtype (float32 or float64).
- ``x`` is (B, T, C); ``kernel`` (C, K*H); ``recurrent_kernel`` (H, K*H), K = 1,
  4, 3; bias vectors are (K*H,) (zeros when the layer has no bias).
- ``h`` (and ``c``) are (B, H): the initial state on entry, the final state on
  return. ``xproj`` (B, T, K*H), ``rec`` (B, K*H), ``rec_h`` and ``rh`` (B, H)
  are scratch; their contents on entry do not matter.
- ``y_out`` is (B, T, H) when ``return_sequences`` (step s written at index s,
  in processing order: with ``go_backwards`` step s reads x[:, T-1-s], as Keras
  does) and (B, 1, H) otherwise (the last step's output).
- GRU: ``recurrent_kernel_h`` is ``recurrent_kernel[:, 2H:]`` copied contiguous,
  used only when ``reset_after`` is false. With ``reset_after`` true,
  ``recurrent_bias`` is added to the recurrent product before the reset gate
  multiplies it (Keras 3's default); with it false, pass zeros.
- Activations are int codes from ``_activations``; flags are ints 0/1.
- Kernels never allocate, never raise, never touch Python objects, and release
  the GIL. The Python boundary (``rnnengine/_validation.py`` and the layers)
  checks shapes, dtypes and layout before any kernel runs.

Contract (training: pass names ``"forward_train"`` and ``"backward"``; both
backends, Numba in ``numba_*.py`` and Cython in ``src/_*.pyx``)::

    simple_rnn_forward_train(y_out, h, h_tm1_seq, preact, gates, rec, x, keep,
                             kernel, recurrent_kernel, bias, B, T, C, H,
                             activation, go_backwards, return_sequences,
                             zero_output_for_mask)
    simple_rnn_backward(dx, dh0, dkernel, drecurrent_kernel, dbias, dgates,
                        dgates_t, dh_rec, dcarry, dw, dy, dh_n, h_tm1_seq,
                        preact, gates, x, keep, kernel, recurrent_kernel, B, T,
                        C, H, activation, go_backwards, return_sequences,
                        zero_output_for_mask)

    lstm_forward_train(y_out, h, c, h_tm1_seq, c_tm1_seq, preact, gates, rec, x,
                       keep, kernel, recurrent_kernel, bias, B, T, C, H,
                       activation, recurrent_activation, go_backwards,
                       return_sequences, zero_output_for_mask)
    lstm_backward(dx, dh0, dc0, dkernel, drecurrent_kernel, dbias, dgates,
                  dgates_t, dh_rec, dcarry, dw, dy, dh_n, dc_n, h_tm1_seq,
                  c_tm1_seq, preact, gates, x, keep, kernel, recurrent_kernel,
                  B, T, C, H, activation, recurrent_activation, go_backwards,
                  return_sequences, zero_output_for_mask)

    gru_forward_train(y_out, h, h_tm1_seq, preact, gates, hh_rec_seq, rec, rec_h,
                      rh, x, keep, kernel, recurrent_kernel, recurrent_kernel_h,
                      input_bias, recurrent_bias, B, T, C, H, activation,
                      recurrent_activation, go_backwards, return_sequences,
                      reset_after, zero_output_for_mask)
    gru_backward(dx, dh0, dkernel, drecurrent_kernel, dinput_bias,
                 drecurrent_bias, dgates, dhh_rec_seq, dgates_t, dh_rec, dhh_t,
                 dcarry, dw, dy, dh_n, h_tm1_seq, preact, gates, hh_rec_seq, x,
                 keep, kernel, recurrent_kernel, recurrent_kernel_h, B, T, C, H,
                 activation, recurrent_activation, go_backwards,
                 return_sequences, reset_after, zero_output_for_mask)

- ``forward_train`` computes exactly what ``forward`` does (same ``y_out``, ``h``,
  ``c``, same rules as above) and also fills the saved buffers, each indexed by
  the input time t (the step that reads ``x[:, t]``, whatever ``go_backwards``):
  ``h_tm1_seq`` and ``c_tm1_seq`` (B, T, H), the state entering that step;
  ``preact`` (B, T, K*H), the gate pre-activations (LSTM i, f, c, o; GRU a_z,
  a_r, a_h, the candidate's full activation input); ``gates`` (B, T, K*H), their
  activations (SimpleRNN: the new h; LSTM i, f, act(zc), o; GRU z, r, hh);
  ``hh_rec_seq`` (GRU, (B, T, H)), the candidate's recurrent term:
  ``h_tm1 @ U_h + recurrent_bias_h`` before r scales it (``reset_after``) or
  ``r * h_tm1`` before U_h multiplies it (otherwise). ``preact`` doubles as the
  input-projection scratch, so there is no ``xproj``; ``rec``, ``rec_h``, ``rh``
  are scratch as in the forward. LSTM saves no new c: the backward recomputes
  it as ``f * c_tm1 + i * act(zc)``.
- ``keep`` and ``zero_output_for_mask`` are the forward's (Keras's mask), the
  same in a ``forward_train`` call and the ``backward`` that follows it.
  ``forward_train`` skips a masked row's step as the forward does (states
  carried, output repeated or zero) and saves for it the carried states in
  ``h_tm1_seq``/``c_tm1_seq`` and zeros in ``preact``, ``gates`` and
  ``hh_rec_seq``. The ``backward`` undoes Keras's masked recurrence
  (``reference._MaskRoute``): at a masked step the state gradients pass to the
  step before unchanged, no gradient reaches ``dx`` (zeros) or the weights, and
  the gradient w.r.t. the step's output goes to the last valid step's output
  (the one it repeats), or nowhere with ``zero_output_for_mask`` or before the
  first valid step; without ``return_sequences``, ``dy`` is that of the last
  step's output. ``dh_rec`` (SimpleRNN, LSTM: the recurrent product's
  gradient) and ``dcarry`` (the carried output's gradient), both (B, H), are
  scratch that only a masked call uses.
- ``backward`` reads the saved buffers (and ``x`` and the weights) unchanged,
  with the same dims and flags as the ``forward_train`` call that filled them.
  ``dy`` is the gradient w.r.t. ``y_out``, shaped like it ((B, T, H) in
  processing order, or (B, 1, H)); ``dh_n`` and ``dc_n`` (B, H) are the
  gradients w.r.t. the final states (zeros when the loss ignores them; with
  ``return_sequences`` false, y is the final h and both add).
- Written (overwritten, no need to zero): ``dx`` (B, T, C), ``dh0`` and ``dc0``
  (B, H), the gradients w.r.t. x and the initial states. ``dh_n``/``dc_n`` may
  alias ``dh0``/``dc0``.
- Accumulated with ``+=`` (the caller zeroes them once per batch): ``dkernel``
  (C, K*H), ``drecurrent_kernel`` (H, K*H), ``dbias`` (K*H,); for GRU
  ``dinput_bias`` and ``drecurrent_bias`` (3H,), the rows of Keras's (2, 3H)
  bias with ``reset_after``; without it Keras's bias is ``dinput_bias`` alone and
  ``drecurrent_bias`` is left untouched.
- Scratch, contents on entry irrelevant: ``dgates`` (B, T, K*H), first the
  activations' derivatives (one sweep before the time loop), then the gradient
  w.r.t. ``preact``; ``dhh_rec_seq`` (GRU, (B, T, H)), the gradient w.r.t. the
  candidate's recurrent product; ``dgates_t`` (B, K*H), one step of the gradient
  w.r.t. the recurrent product, contiguous for the per-step GEMM; ``dh_rec`` and
  ``dhh_t`` (GRU, (B, H)); ``dw`` (max(C, H) * K*H,), flat, the weight-gradient
  GEMMs' output before it is added.
- Per step the kernels do the recurrent product ``dgates_t @ recurrent_kernel.T``
  (GRU without ``reset_after``: one more, with ``recurrent_kernel_h.T``) and
  elementwise math; the weight gradients are sums over all B*T rows and are
  computed after the time loop as single GEMMs (``dkernel += x^T @ dgates``,
  ``drecurrent_kernel += h_tm1_seq^T @ dgates``) into ``dw``, then added.
- Activation derivatives come from ``_activations.apply_grad(code, pre, post)``
  (through ``apply_grad_block`` for the gates; the Cython twins are in
  ``src/_gates.pxd``); LSTM's cell activation is differentiated at c. The NumPy
  spec of every line is ``reference.<cell>_forward_train`` /
  ``reference.<cell>_backward``.
- The Cython ``forward_train`` computes its gates with the same vectorized
  blocks (``activate_block``) as its ``forward``, so its float32 outputs equal
  the Cython forward's; Numba's ``forward_train`` applies the scalar ``apply``,
  a few float32 ULPs from its gate blocks. Both backends split a large batch
  over threads in the training passes as in the forward.

Contract (training with recurrent dropout: passes ``"forward_train_rdrop"`` and
``"backward_rdrop"``; both backends, Numba in ``numba_rdrop.py`` and Cython in
``src/_rdrop.pyx``). Keras 3 with
``recurrent_dropout > 0`` runs its cells with ``implementation=1``: each of the K
gates has its own input mask ``dp[g]`` (B, C) and recurrent mask ``rdp[g]``
(B, H), inverted-dropout values (0 or 1/(1-rate)) fixed for the whole sequence;
gate g's pre-activation is ``(x_t * dp[g]) @ W_g + b_g + (h_tm1 * rdp[g]) @ U_g``
(GRU without ``reset_after``: the candidate's is ``(r * (h_tm1 * rdp[2])) @ U_h``),
and the state itself is carried unmasked::

    simple_rnn_forward_train_rdrop(y_out, h, h_tm1_seq, preact, gates, rec, x,
                                   kernel_g, recurrent_kernel_g, bias, dp, rdp,
                                   xm, pm, hm, recg, B, T, C, H, activation,
                                   go_backwards, return_sequences)
    simple_rnn_backward_rdrop(dx, dh0, dkernel, drecurrent_kernel, dbias, dgates,
                              dgates_t, dw, dy, dh_n, h_tm1_seq, preact, gates, x,
                              kernel_g, recurrent_kernel_g, dp, rdp, xm, pm, hm,
                              recg, hseq, B, T, C, H, activation, go_backwards,
                              return_sequences)
    lstm_forward_train_rdrop(y_out, h, c, h_tm1_seq, c_tm1_seq, preact, gates, rec,
                             x, kernel_g, recurrent_kernel_g, bias, dp, rdp, xm,
                             pm, hm, recg, B, T, C, H, activation,
                             recurrent_activation, go_backwards, return_sequences)
    lstm_backward_rdrop(dx, dh0, dc0, dkernel, drecurrent_kernel, dbias, dgates,
                        dgates_t, dw, dy, dh_n, dc_n, h_tm1_seq, c_tm1_seq, preact,
                        gates, x, kernel_g, recurrent_kernel_g, dp, rdp, xm, pm,
                        hm, recg, hseq, B, T, C, H, activation,
                        recurrent_activation, go_backwards, return_sequences)
    gru_forward_train_rdrop(y_out, h, h_tm1_seq, preact, gates, hh_rec_seq, rec,
                            rec_h, rh, x, kernel_g, recurrent_kernel_g, input_bias,
                            recurrent_bias, dp, rdp, xm, pm, hm, recg, B, T, C, H,
                            activation, recurrent_activation, go_backwards,
                            return_sequences, reset_after)
    gru_backward_rdrop(dx, dh0, dkernel, drecurrent_kernel, dinput_bias,
                       drecurrent_bias, dgates, dhh_rec_seq, dgates_t, dh_rec,
                       dhh_t, dw, dy, dh_n, h_tm1_seq, preact, gates, hh_rec_seq, x,
                       kernel_g, recurrent_kernel_g, dp, rdp, xm, pm, hm, recg,
                       hseq, B, T, C, H, activation, recurrent_activation,
                       go_backwards, return_sequences, reset_after)

- Same buffers, dims, flags and rules as the plain training passes (without a
  mask: no ``keep``, ``zero_output_for_mask``, ``dcarry``, nor SimpleRNN's
  and LSTM's ``dh_rec``), except:
  ``x`` is the input *before* dropout (the kernels apply ``dp``); the weights
  come as per-gate contiguous blocks, ``kernel_g`` (K, C, H) with
  ``kernel_g[g] = kernel[:, g*H:(g+1)*H]`` and ``recurrent_kernel_g`` (K, H, H);
  ``dp`` (K, B, C) and ``rdp`` (K, B, H) are the masks (all ones for "no input
  dropout"); ``hh_rec_seq`` without ``reset_after`` saves ``r * h_tm1 * rdp[2]``.
- Scratch: ``xm`` (B*T, C), ``pm`` and ``hseq`` (B*T, H), ``hm`` and ``recg``
  (B, H) (the Cython kernels' products address their column blocks in place
  and leave ``pm`` and ``recg`` unused). Gradients are w.r.t. the unmasked
  ``x``, initial state and weights (``dkernel`` and ``drecurrent_kernel`` in
  Keras layout, accumulated). Both backends split a large batch over threads
  as in the plain training passes.

Contract (the activations' backward, for Dense and Activation: cell
``"activation"``, pass ``"backward"``; Numba in ``numba_dense_backward.py``,
Cython in ``src/_dense.pyx``)::

    activation_backward(dz_out, dy, z, y, activation)

- ``dz_out`` (written) is the gradient w.r.t. ``z`` of ``y = act(z)`` given
  ``dy``; all four are (N, F), C-contiguous, one float dtype; ``dz_out`` may
  alias ``dy``. Softmax and log_softmax reduce over F (their row sums in
  float64 on both backends), the other codes are elementwise through
  ``apply_grad``. Dense's matrix products are single BLAS calls made by the
  layer (``rnnengine/layers/core.py``); the NumPy spec is
  ``reference.dense_backward``.
"""
from .. import config

CELLS = ("simple_rnn", "lstm", "gru", "dense", "activation")
PASSES = ("forward", "forward_train", "backward", "forward_train_rdrop", "backward_rdrop")


def _numba_table():
    """The Numba kernels, imported on first use: a process that runs only the
    Cython backend never imports Numba nor loads its on-disk cache (cold start)."""
    global _NUMBA
    if _NUMBA is None:
        from .numba_dense import _activation_inplace, _dense_forward
        from .numba_dense_backward import _activation_backward
        from .numba_gru import _gru_backward, _gru_forward, _gru_forward_train
        from .numba_lstm import _lstm_backward, _lstm_forward, _lstm_forward_train
        from .numba_rdrop import (_gru_backward_rdrop, _gru_forward_train_rdrop, _lstm_backward_rdrop,
                                  _lstm_forward_train_rdrop, _simple_rnn_backward_rdrop,
                                  _simple_rnn_forward_train_rdrop)
        from .numba_simple_rnn import _simple_rnn_backward, _simple_rnn_forward, _simple_rnn_forward_train

        _NUMBA = {
            ("simple_rnn", "forward"): _simple_rnn_forward,
            ("lstm", "forward"): _lstm_forward,
            ("gru", "forward"): _gru_forward,
            ("simple_rnn", "forward_train"): _simple_rnn_forward_train,
            ("lstm", "forward_train"): _lstm_forward_train,
            ("gru", "forward_train"): _gru_forward_train,
            ("simple_rnn", "backward"): _simple_rnn_backward,
            ("lstm", "backward"): _lstm_backward,
            ("gru", "backward"): _gru_backward,
            ("simple_rnn", "forward_train_rdrop"): _simple_rnn_forward_train_rdrop,
            ("lstm", "forward_train_rdrop"): _lstm_forward_train_rdrop,
            ("gru", "forward_train_rdrop"): _gru_forward_train_rdrop,
            ("simple_rnn", "backward_rdrop"): _simple_rnn_backward_rdrop,
            ("lstm", "backward_rdrop"): _lstm_backward_rdrop,
            ("gru", "backward_rdrop"): _gru_backward_rdrop,
            ("dense", "forward"): _dense_forward,
            ("activation", "forward"): _activation_inplace,
            ("activation", "backward"): _activation_backward,
        }
    return _NUMBA


_NUMBA = None


def _preload_cython_blas():
    """Load scipy.linalg.cython_blas, which the Cython kernels cimport, without
    scipy.linalg's package __init__ (about 0.45 s of cold start: it imports
    all of SciPy's linear algebra). The module is self-contained: it only holds
    the BLAS function pointers. Where the file is not found (another SciPy
    layout), the kernels' own import loads it the ordinary way."""
    import importlib.machinery
    import importlib.util
    import os
    import sys

    name = "scipy.linalg.cython_blas"
    if name in sys.modules:
        return
    try:
        import scipy
    except ImportError:
        return
    folder = os.path.join(os.path.dirname(scipy.__file__), "linalg")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(folder, "cython_blas" + suffix)
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception:  # leave it to the ordinary import
                del sys.modules[name]
            return


_preload_cython_blas()

from . import _isa

# The Cython build for this CPU (runtime dispatch: kernels/_isa.py); a bad
# RNNENGINE_ISA raises here, a missing build falls back to Numba below.
ISA = _isa.choose_isa()
try:
    if ISA is None:
        raise ImportError(
            f"no Cython kernel build for this CPU (built: {', '.join(_isa.built_isas()) or 'none'})")
    globals().update(_isa.load(ISA))
    from . import _cy_blas, _cy_dense, _cy_gru, _cy_lstm, _cy_plan, _cy_rdrop, _cy_simple_rnn

    _CYTHON = {
        ("simple_rnn", "forward"): _cy_simple_rnn.simple_rnn_forward,
        ("lstm", "forward"): _cy_lstm.lstm_forward,
        ("gru", "forward"): _cy_gru.gru_forward,
        ("simple_rnn", "forward_train"): _cy_simple_rnn.simple_rnn_forward_train,
        ("lstm", "forward_train"): _cy_lstm.lstm_forward_train,
        ("gru", "forward_train"): _cy_gru.gru_forward_train,
        ("simple_rnn", "backward"): _cy_simple_rnn.simple_rnn_backward,
        ("lstm", "backward"): _cy_lstm.lstm_backward,
        ("gru", "backward"): _cy_gru.gru_backward,
        ("simple_rnn", "forward_train_rdrop"): _cy_rdrop.simple_rnn_forward_train_rdrop,
        ("lstm", "forward_train_rdrop"): _cy_rdrop.lstm_forward_train_rdrop,
        ("gru", "forward_train_rdrop"): _cy_rdrop.gru_forward_train_rdrop,
        ("simple_rnn", "backward_rdrop"): _cy_rdrop.simple_rnn_backward_rdrop,
        ("lstm", "backward_rdrop"): _cy_rdrop.lstm_backward_rdrop,
        ("gru", "backward_rdrop"): _cy_rdrop.gru_backward_rdrop,
        ("dense", "forward"): _cy_dense.dense_forward,
        ("activation", "forward"): _cy_dense.activation_inplace,
        ("activation", "backward"): _cy_dense.activation_backward,
    }
    CYTHON_IMPORT_ERROR = None
    _CYTHON_MODULES = (_cy_blas, _cy_dense, _cy_gru, _cy_lstm, _cy_rdrop, _cy_simple_rnn, _cy_plan)
    bump_epoch = _cy_plan.bump_epoch
except ImportError as exc:  # source tree without a build: Numba still works
    _CYTHON = {}
    _CYTHON_MODULES = ()
    CYTHON_IMPORT_ERROR = exc

    def bump_epoch():
        """Weights or the backend changed (no fused plans without Cython)."""


def _apply_num_threads():
    for module in _CYTHON_MODULES:
        if hasattr(module, "set_num_threads"):
            module.set_num_threads(config.get_num_threads())


def _apply_deterministic():
    for module in _CYTHON_MODULES:
        if hasattr(module, "set_deterministic"):
            module.set_deterministic(config.get_deterministic())


def _set_min_work_to_split(n):
    """Multiply-adds from which a Cython call splits its batch over threads, in
    every kernel module; returns the previous value. The default (2**27, about
    2 ms of work on one core) keeps calls that a late thread would slow down on
    one thread (src/_gates.pxd); tests lower it to reach the split path."""
    previous = None
    for module in _CYTHON_MODULES:
        if hasattr(module, "set_min_work_to_split"):
            previous = module.get_min_work_to_split()
            module.set_min_work_to_split(n)
    return previous


def _set_split_thresholds(min_step, wake_work):
    """When a float32 call of at most 4 rows splits each step's units over two
    threads (src/_split.pxd: the caller and one helper), in every kernel
    module: from min_step recurrent-kernel weights (H x gate columns; default
    2**15, 128 KB, about 1 us a step to stream: below it the per-step meeting
    eats the gain), and waking a sleeping helper from wake_work multiply-adds
    (default 2**20, about 10 us of work). Returns the previous pair; tests
    lower both to reach the split path."""
    previous = None
    for module in _CYTHON_MODULES:
        if hasattr(module, "set_split_thresholds"):
            previous = module.get_split_thresholds()
            module.set_split_thresholds(min_step, wake_work)
    return previous


def _limit_blas_threads():
    """Run SciPy's bundled OpenBLAS (behind scipy.linalg.cython_blas, which both
    backends call) on one thread; rnnengine splits large batches itself."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # then BLAS keeps its own threads
        return
    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api == "blas" and "scipy_openblas-" in (lib.filepath or ""):
            lib.set_num_threads(1)


_apply_num_threads()
_apply_deterministic()
_limit_blas_threads()


def cython_available():
    return bool(_CYTHON)


def _auto_backend(cell, B):
    """Which backend ``auto`` runs for a batch of ``B`` rows.

    Measured (bench/README.md, "Backends"): compiled for the machine's CPU, both
    backends run the same loops at the same speed within noise, at every batch
    size (the large products are BLAS either way). Cython wins where it counts
    for services: it is compiled at install, so a fresh process's first call
    pays no JIT and no Numba cache load (about 0.6 s per kernel family).
    """
    if not _CYTHON:
        return "numba"
    return "cython"


def get_kernel(cell, pass_="forward", backend=None, B=1):
    """The kernel function for ``cell`` ("simple_rnn", "lstm", "gru"; "dense" and
    "activation" for Dense and Activation layers: "dense" forward only,
    "activation" forward and backward) and ``pass_`` ("forward",
    "forward_train", "backward", and the recurrent-dropout training passes
    "forward_train_rdrop", "backward_rdrop"), from ``backend`` (default:
    ``config.get_kernels()``).

    ``auto`` picks per batch size and falls back to Numba where the Cython
    modules are not built (a source tree without a build); a backend named
    explicitly that cannot run raises.
    """
    if cell not in CELLS:
        raise ValueError(f"Unknown cell {cell!r}: expected one of {CELLS}.")
    if pass_ not in PASSES:
        raise ValueError(f"Unknown kernel pass {pass_!r}: expected one of {PASSES}.")
    backend = config._check_backend(backend or config.get_kernels())
    if backend == "auto":
        backend = _auto_backend(cell, B)
        if backend == "cython" and (cell, pass_) not in _CYTHON:
            backend = "numba"
    if backend == "cython":
        if not _CYTHON:
            raise RuntimeError(
                "The Cython kernels are not built in this installation "
                f"({CYTHON_IMPORT_ERROR}); reinstall with `pip install .` or "
                "select the Numba backend with rnnengine.config.set_kernels('numba')."
            )
        table = _CYTHON
    else:
        table = _numba_table()
    try:
        return table[(cell, pass_)]
    except KeyError:
        hint = ""
        if cell in ("dense", "activation"):
            hint = (": Dense has a forward kernel only and Activation a forward and a backward "
                    "(Dense's backward is driven by rnnengine/layers/core.py: BLAS products and "
                    "the 'activation' backward kernel)")
        raise ValueError(f"No {pass_!r} kernel for {cell!r} in the {backend} backend{hint}.") from None
