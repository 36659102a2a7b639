"""pytest-benchmark micro-benchmarks: each forward kernel, each backend, the standard workloads.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/ --benchmark-only

Kernels are called directly on preallocated buffers (the public API's cost on
top of them is what bench/compare.py measures). Not part of the test suite.
"""
import numpy as np
import pytest

from rnnengine import kernels
from rnnengine.kernels import activation_codes as codes
from rnnengine.kernels import contract

WORKLOADS = {"L1": (1, 50, 32, 128), "L2": (1, 20, 8, 32), "S1": (1, 1, 32, 128),
             "T1": (256, 100, 64, 256), "T2": (32, 100, 64, 256)}
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}


def _call(cell, backend, B, T, C, H):
    rng = np.random.default_rng(0)
    K = GATES[cell]
    f = np.float32
    x = rng.standard_normal((B, T, C)).astype(f)
    kernel = (rng.standard_normal((C, K * H)) * 0.1).astype(f)
    recurrent_kernel = (rng.standard_normal((H, K * H)) * 0.1).astype(f)
    bias = np.zeros(K * H, f)
    states = [np.zeros((B, H), f) for _ in contract.STATES[cell]]
    weights = (kernel, recurrent_kernel, bias)
    if cell == "gru":
        weights = (kernel, recurrent_kernel, np.ascontiguousarray(recurrent_kernel[:, 2 * H:]), bias, bias)
    args = contract.forward_args(cell, x, states, weights, codes.TANH, codes.SIGMOID)
    fn = kernels.get_kernel(cell, "forward", backend, B)
    return lambda: fn(*args)


@pytest.mark.parametrize("backend", ["numba", "cython"])
@pytest.mark.parametrize("cell", sorted(GATES))
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_forward(benchmark, workload, cell, backend):
    B, T, C, H = WORKLOADS[workload]
    benchmark.group = f"{workload} {cell}"
    benchmark.extra_info["GFLOP"] = 2 * B * T * (C + H) * GATES[cell] * H / 1e9
    benchmark(_call(cell, backend, B, T, C, H))
