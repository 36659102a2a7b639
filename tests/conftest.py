"""Shared test fixtures: the kernel backend switch, tolerances, a printed seed."""
import os

import numpy as np
import pytest

import rnnengine
from rnnengine import kernels

SEED = int(os.environ.get("RNNENGINE_TEST_SEED", "1234"))

# Per-dtype tolerances (as sklearn's RTOL): float32 within ~1e-5 of Keras,
# float64 four orders tighter. The float64 bound is set by TensorFlow, not by
# us: its float64 erf (Keras's exact gelu) is off by up to ~5e-9 from libm's
# and scipy's; every other activation agrees with Keras to ~1e-15.
ATOL = {np.float32: 2e-5, np.float64: 1e-9}
RTOL = {np.float32: 2e-5, np.float64: 1e-9}

BACKENDS = ("numba", "cython")


def pytest_report_header(config):
    cy = "built" if kernels.cython_available() else f"NOT BUILT ({kernels.CYTHON_IMPORT_ERROR})"
    return [f"rnnengine test seed: {SEED} (set RNNENGINE_TEST_SEED to change)",
            f"rnnengine Cython kernels: {cy}"]


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


@pytest.fixture
def split_small_calls():
    """Let every Cython call split its batch over threads, whatever its size: the
    default threshold (src/_gates.pxd) keeps test-sized calls on one thread."""
    from rnnengine import kernels

    previous = kernels._set_min_work_to_split(0)
    yield
    if previous is not None:
        kernels._set_min_work_to_split(previous)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Run the test under each kernel backend; both must be present and correct."""
    if request.param == "cython" and not kernels.cython_available():
        pytest.fail(f"Cython kernels are not built: {kernels.CYTHON_IMPORT_ERROR}")
    previous = rnnengine.config.set_kernels(request.param)
    yield request.param
    rnnengine.config.set_kernels(previous)


def assert_close(actual, expected, dtype, name="output"):
    dtype = np.dtype(dtype).type
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=ATOL[dtype], err_msg=name)
