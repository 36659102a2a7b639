"""Every Numba kernel caches to disk, releases the GIL and uses the config's fastmath flags."""
import importlib
import pkgutil

import pytest
from numba.core.registry import CPUDispatcher

import rnnengine.kernels
from rnnengine import config


def _dispatchers():
    found = []
    for info in pkgutil.iter_modules(rnnengine.kernels.__path__):
        if not info.name.startswith(("numba_", "_activations", "_numba_common")):
            continue
        module = importlib.import_module(f"rnnengine.kernels.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == module.__name__:
                found.append((f"{info.name}.{name}", obj))
    return found


DISPATCHERS = _dispatchers()

# Helpers that must be evaluated in Keras's order, without "reassoc"/"contract"
# (config.FASTMATH_FLAGS_KERAS_ORDER): with "reassoc" LLVM rewrote the GRU
# update z * h + (1 - z) * hh as hh + z * (h - hh), which cancels the state
# (tests/test_fuzz_api.py, test_gru_update_gate_at_one_...). Add a function here
# only for that reason, and keep it small: it is inlined by LLVM, not by Numba.
KERAS_ORDER = {"numba_gru._gru_update"}


def test_found_the_kernels():
    names = {n for n, _ in DISPATCHERS}
    for kernel in ("numba_lstm._lstm_forward", "numba_gru._gru_forward", "numba_simple_rnn._simple_rnn_forward"):
        assert kernel in names


@pytest.mark.parametrize("name,dispatcher", DISPATCHERS, ids=[n for n, _ in DISPATCHERS])
def test_dispatcher_options(name, dispatcher):
    options = dispatcher.targetoptions
    assert options.get("nogil") is True, name
    want = config.FASTMATH_FLAGS_KERAS_ORDER if name in KERAS_ORDER else config.FASTMATH_FLAGS
    assert options.get("fastmath") == want, name
    # Numba-level inlining would lower the helper with its caller's flags.
    assert name not in KERAS_ORDER or options.get("inline", "never") == "never", name
    # nnan/ninf would let the compiler assume NaN never occurs: NaN must propagate.
    assert not {"nnan", "ninf", "fast"} & set(options.get("fastmath"))
    assert type(dispatcher._cache).__name__ != "NullCache", f"{name} lacks cache=True"
    # Python's error model adds a ZeroDivisionError branch to every float division,
    # which stops LLVM from vectorizing the loop; kernels never raise anyway.
    assert options.get("error_model") == "numpy", name


def test_keras_order_flags():
    assert config.FASTMATH_FLAGS_KERAS_ORDER == config.FASTMATH_FLAGS - {"reassoc", "contract"}
    assert KERAS_ORDER <= {n for n, _ in DISPATCHERS}
