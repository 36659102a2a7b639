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


def test_found_the_kernels():
    names = {n for n, _ in DISPATCHERS}
    for kernel in ("numba_lstm._lstm_forward", "numba_gru._gru_forward", "numba_simple_rnn._simple_rnn_forward"):
        assert kernel in names


@pytest.mark.parametrize("name,dispatcher", DISPATCHERS, ids=[n for n, _ in DISPATCHERS])
def test_dispatcher_options(name, dispatcher):
    options = dispatcher.targetoptions
    assert options.get("nogil") is True, name
    assert options.get("fastmath") == config.FASTMATH_FLAGS, name
    # nnan/ninf would let the compiler assume NaN never occurs: NaN must propagate.
    assert not {"nnan", "ninf", "fast"} & set(options.get("fastmath"))
    assert type(dispatcher._cache).__name__ != "NullCache", f"{name} lacks cache=True"
    # Python's error model adds a ZeroDivisionError branch to every float division,
    # which stops LLVM from vectorizing the loop; kernels never raise anyway.
    assert options.get("error_model") == "numpy", name
