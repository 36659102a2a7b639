"""Process-wide settings: which kernel backend runs, Numba's fastmath flags.

``RNNENGINE_KERNELS`` (``numba``, ``cython`` or ``auto``) sets the backend at
import; ``set_kernels`` changes it at run time. ``auto`` (the default) picks per
call shape, from measurements recorded in ``kernels/__init__.py``.
"""
import os

# fastmath without "nnan"/"ninf": NaN and inf must propagate through a cell
# exactly as they do in Keras, so the compiler may not assume they are absent.
FASTMATH_FLAGS = {"nsz", "arcp", "contract", "afn", "reassoc"}

BACKENDS = ("auto", "numba", "cython")

_state = {"kernels": "auto"}


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
    _state["kernels"] = _check_backend(name)
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
