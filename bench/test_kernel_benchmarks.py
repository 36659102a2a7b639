"""pytest-benchmark micro-benchmarks: each forward kernel, each backend, the standard workloads.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/ --benchmark-only

Kernels are called directly on preallocated buffers (the public API's cost on
top of them is what bench/compare.py measures). Not part of the test suite.
"""
import numpy as np
import pytest

from rnnengine import kernels
from rnnengine.kernels import activation_codes as codes

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
    y, h, c = np.zeros((B, 1, H), f), np.zeros((B, H), f), np.zeros((B, H), f)
    xproj, rec = np.zeros((B, T, K * H), f), np.zeros((B, K * H), f)
    fn = kernels.get_kernel(cell, "forward", backend, B)
    if cell == "simple_rnn":
        return lambda: fn(y, h, xproj, rec, x, kernel, recurrent_kernel, bias, B, T, C, H, codes.TANH, 0, 0)
    if cell == "lstm":
        return lambda: fn(y, h, c, xproj, rec, x, kernel, recurrent_kernel, bias, B, T, C, H, codes.TANH,
                          codes.SIGMOID, 0, 0)
    rh, rec_h = np.zeros((B, H), f), np.zeros((B, H), f)
    kernel_h = np.ascontiguousarray(recurrent_kernel[:, 2 * H:])
    return lambda: fn(y, h, xproj, rec, rec_h, rh, x, kernel, recurrent_kernel, kernel_h, bias, bias, B, T, C,
                      H, codes.TANH, codes.SIGMOID, 0, 0, 1)


@pytest.mark.parametrize("backend", ["numba", "cython"])
@pytest.mark.parametrize("cell", sorted(GATES))
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_forward(benchmark, workload, cell, backend):
    B, T, C, H = WORKLOADS[workload]
    benchmark.group = f"{workload} {cell}"
    benchmark.extra_info["GFLOP"] = 2 * B * T * (C + H) * GATES[cell] * H / 1e9
    benchmark(_call(cell, backend, B, T, C, H))
