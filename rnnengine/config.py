"""Process-wide settings: which kernel backend runs, threads, Numba's fastmath flags.

``RNNENGINE_KERNELS`` (``numba``, ``cython`` or ``auto``) sets the backend at
import; ``set_kernels`` changes it at run time. ``auto`` (the default) picks per
call shape, from measurements recorded in ``kernels/__init__.py``.

Plan caches: ``set_plan_cache_bytes(n)`` (models/plan.py).

Threads: ``set_num_threads(n)`` (default: ``RNNENGINE_NUM_THREADS``, else
``OMP_NUM_THREADS``, else the number of CPUs) is how many threads one call may
split a large batch over (Cython backend). BLAS calls inside the kernels run
on one thread: rnnengine limits SciPy's bundled OpenBLAS, which the kernels
call, to one thread when the kernels are imported (two thread pools spinning
on the same cores made large batches up to 25x slower); NumPy's own BLAS is
left alone.
"""
import os
import sys

# fastmath without "nnan"/"ninf": NaN and inf must propagate through a cell
# exactly as they do in Keras, so the compiler may not assume they are absent.
FASTMATH_FLAGS = {"nsz", "arcp", "contract", "afn", "reassoc"}
# The flags for a line that must be evaluated exactly as Keras writes it, one
# rounded operation at a time: no "reassoc" (LLVM rewrote GRU's
# z * h + (1 - z) * hh as hh + z * (h - hh), which cancels h when |hh| >> |h|
# and turns inf * 0 = NaN into inf) and no "contract" (TensorFlow rounds each
# product; an FMA would not). For small helpers only: LLVM inlines them with
# their own flags on each instruction (kernels/numba_gru.py, _gru_update).
FASTMATH_FLAGS_KERAS_ORDER = FASTMATH_FLAGS - {"reassoc", "contract"}

BACKENDS = ("auto", "numba", "cython")

def _default_threads():
    for var in ("RNNENGINE_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").split(",")[0].strip()
        if value:
            try:
                n = int(value)
            except ValueError:
                raise ValueError(f"{var}={value!r} is not a thread count.") from None
            if n >= 1:
                return n
    return os.cpu_count() or 1


_state = {"kernels": "auto", "threads": _default_threads(), "deterministic": False}


def _check_backend(name):
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(
            f"Unknown kernel backend {name!r}: expected one of {', '.join(BACKENDS)}."
        )
    return name.lower()


def set_kernels(name):
    """Select the kernel backend: ``"auto"``, ``"numba"`` or ``"cython"``.

    Returns the previous setting, so a caller can restore it.
    """
    previous = _state["kernels"]
    name = _check_backend(name)
    if name == "numba" and _state.get("deterministic"):
        raise RuntimeError("set_kernels('numba'): deterministic mode is on, and only the Cython "
                           "kernels are batch-invariant; turn it off first (set_deterministic(False)).")
    _state["kernels"] = name
    if "rnnengine.kernels" in sys.modules:  # fused plans bound to the old backend re-check
        sys.modules["rnnengine.kernels"].bump_epoch()
    return previous


def get_kernels():
    """The backend currently selected (``"auto"``, ``"numba"`` or ``"cython"``)."""
    return _state["kernels"]


_env = os.environ.get("RNNENGINE_KERNELS")
if _env:
    try:
        set_kernels(_env)
    except ValueError as exc:
        raise ValueError(f"RNNENGINE_KERNELS: {exc}") from None


def set_num_threads(n):
    """Threads one call may split a large batch over (Cython backend); returns the previous value."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, got {n!r}.")
    previous = _state["threads"]
    _state["threads"] = n
    from . import kernels

    kernels._apply_num_threads()
    return previous


def get_num_threads():
    """Threads one call may split a large batch over."""
    return _state["threads"]


def set_deterministic(flag=True):
    """Batch-invariant, thread-invariant numbers (the Cython kernels); returns the previous setting.

    On: every product a row's result depends on runs through kernels with one
    reduction order per output element (src/_rec_gemm.h), never a BLAS GEMM
    whose blocking depends on the row count, so a row's output is the same
    bits whatever batch it arrives in, whatever the thread count and whether
    a batch-1 call splits its units over two threads: predict, streams and
    training's forward pass; training's backward pass runs on one thread.
    Bit-identity holds within one ISA build (rnnengine.info()["isa"]): the
    builds differ by float32 rounding. Process-wide; see README, "Reproducible
    numbers", for its cost. Off (the default): the same call with the same
    thread count still gives the same bits every time.
    """
    if not isinstance(flag, (bool, int)):
        raise TypeError(f"set_deterministic: expected a bool, got {flag!r}.")
    from . import kernels

    if flag and (_state["kernels"] == "numba" or not kernels.cython_available()):
        why = ("the Numba backend is selected (set_kernels('cython') or 'auto')"
               if kernels.cython_available() else f"the Cython kernels are not built ({kernels.CYTHON_IMPORT_ERROR})")
        raise RuntimeError(f"set_deterministic(True): only the Cython kernels are batch-invariant, and {why}.")
    previous = _state["deterministic"]
    _state["deterministic"] = bool(flag)

    kernels._apply_deterministic()
    return previous


def get_deterministic():
    """Whether deterministic (batch-invariant) mode is on."""
    return _state["deterministic"]


class deterministic:
    """``with rnnengine.deterministic(): ...`` turns deterministic mode on (or
    ``deterministic(False)`` off) for the block, process-wide, and restores the
    previous setting after it."""

    def __init__(self, flag=True):
        self.flag = bool(flag)
        self._previous = []

    def __enter__(self):
        self._previous.append(set_deterministic(self.flag))
        return self

    def __exit__(self, *exc):
        set_deterministic(self._previous.pop())
        return False


_env_det = os.environ.get("RNNENGINE_DETERMINISTIC", "").strip().lower()
if _env_det in ("1", "true", "yes", "on"):
    _state["deterministic"] = True


def set_plan_cache_bytes(n):
    """The bytes every thread's and model's cached call plans may hold together
    (default 256 MiB); past it the least recently used are released, so idle
    pool threads do not keep the buffers of the long shapes they once ran.
    Returns the previous value."""
    from .models import plan

    return plan.set_plan_cache_bytes(n)


def get_plan_cache_bytes():
    from .models import plan

    return plan.get_plan_cache_bytes()
