"""Kernel dispatch, and the one contract every backend implements.

There are two backends with the same signatures: Numba (``numba_*.py``) and
Cython (``src/_*.pyx``, compiled into ``rnnengine/kernels/_cy_*``). A layer asks
``get_kernel(cell, pass_, backend, B)`` for a function and calls it with buffers
from its workspace.

Contract (forward), in llm.c's argument order: outputs, saved buffers, inputs,
weights, dims, flags::

    simple_rnn_forward(y_out, h, xproj, rec, x, kernel, recurrent_kernel, bias,
                       B, T, C, H, activation, go_backwards, return_sequences)
    lstm_forward(y_out, h, c, xproj, rec, x, kernel, recurrent_kernel, bias,
                 B, T, C, H, activation, recurrent_activation, go_backwards,
                 return_sequences)
    gru_forward(y_out, h, xproj, rec, rec_h, rh, x, kernel, recurrent_kernel,
                recurrent_kernel_h, input_bias, recurrent_bias, B, T, C, H,
                activation, recurrent_activation, go_backwards,
                return_sequences, reset_after)

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
"""
from .. import config
from .numba_gru import _gru_forward
from .numba_lstm import _lstm_forward
from .numba_simple_rnn import _simple_rnn_forward

CELLS = ("simple_rnn", "lstm", "gru")

_NUMBA = {
    ("simple_rnn", "forward"): _simple_rnn_forward,
    ("lstm", "forward"): _lstm_forward,
    ("gru", "forward"): _gru_forward,
}

try:
    from . import _cy_gru, _cy_lstm, _cy_simple_rnn

    _CYTHON = {
        ("simple_rnn", "forward"): _cy_simple_rnn.simple_rnn_forward,
        ("lstm", "forward"): _cy_lstm.lstm_forward,
        ("gru", "forward"): _cy_gru.gru_forward,
    }
    CYTHON_IMPORT_ERROR = None
except ImportError as exc:  # source tree without a build: Numba still works
    _CYTHON = {}
    CYTHON_IMPORT_ERROR = exc


def cython_available():
    return bool(_CYTHON)


def _auto_backend(cell, B):
    """Which backend ``auto`` runs for a batch of ``B`` rows.

    Measured with ``python bench/compare_backends.py`` (see bench/README.md):
    the Cython kernels call BLAS directly and pay less per step, which wins at
    small batch; both spend the same BLAS time at large batch.
    """
    if not _CYTHON:
        return "numba"
    return "cython"


def get_kernel(cell, pass_="forward", backend=None, B=1):
    """The kernel function for ``cell`` ("simple_rnn", "lstm", "gru") and
    ``pass_`` ("forward"), from ``backend`` (default: ``config.get_kernels()``).

    ``auto`` picks per batch size and falls back to Numba where the Cython
    modules are not built; a backend named explicitly that cannot run raises.
    """
    if cell not in CELLS:
        raise ValueError(f"Unknown cell {cell!r}: expected one of {CELLS}.")
    backend = config._check_backend(backend or config.get_kernels())
    if backend == "auto":
        backend = _auto_backend(cell, B)
    if backend == "cython":
        if not _CYTHON:
            raise RuntimeError(
                "The Cython kernels are not built in this installation "
                f"({CYTHON_IMPORT_ERROR}); reinstall with `pip install .` or "
                "select the Numba backend with rnnengine.config.set_kernels('numba')."
            )
        table = _CYTHON
    else:
        table = _NUMBA
    try:
        return table[(cell, pass_)]
    except KeyError:
        raise ValueError(f"No {pass_!r} kernel for {cell!r} in the {backend} backend.") from None
