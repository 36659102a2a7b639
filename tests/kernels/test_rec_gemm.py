"""The float32 step kernel of src/_rec_gemm.h (register-tiled h @ W, and the
fused bias + x_t @ kernel + h @ recurrent_kernel of a SimpleRNN or LSTM step) against
float64 NumPy, over the shapes that reach every code path: row blocks of 1-12
rows, column strips of 4, 2 and 1 vectors, the scalar column tail, K = 0, and
rows that are not contiguous (a step's x_t rows are T * C apart in x).
Also the row-major GEMM hook of _blas.pxd (_cy_blas.gemm). "cython" in every
name: tools/boundscheck_kernels.sh runs them on the bounds-checked build too."""
import numpy as np
import pytest

from rnnengine import kernels
from tests.kernels.test_kernels import run_kernel


@pytest.fixture(scope="module")
def cy_blas():
    if not kernels.cython_available():
        pytest.fail(f"Cython kernels are not built: {kernels.CYTHON_IMPORT_ERROR}")
    from rnnengine.kernels import _cy_blas
    return _cy_blas


def _tol(k):
    # float32 sums of k products of O(1) terms, against float64
    return 2e-6 * (k + 1) ** 0.5 * 4


@pytest.mark.parametrize("m", [1, 4, 5, 6, 7, 12, 13, 25, 32, 64])
@pytest.mark.parametrize("n", [1, 7, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 100, 512])
def test_cython_fused_step_product_matches_numpy(cy_blas, m, n):
    rng = np.random.default_rng(m * 1000 + n)
    k1, k2, T = 9, 21, 3
    x = rng.standard_normal((m, T, k1)).astype(np.float32)
    a1 = x[:, 1, :]  # rows T * k1 apart, as x_t in a (B, T, C) input
    a2 = rng.standard_normal((m, k2)).astype(np.float32)
    w1 = rng.standard_normal((k1, n + 5)).astype(np.float32)  # wider: row stride > n
    w2 = rng.standard_normal((k2, n + 3)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    out = np.full((m, n), np.nan, np.float32)
    if not cy_blas.fused_step_product(out, bias, a1, w1, a2, w2):
        pytest.skip("this build has no vector step kernel (no AVX2+FMA): sgemm serves")
    want = (bias.astype(np.float64) + a1.astype(np.float64) @ w1[:, :n].astype(np.float64)
            + a2.astype(np.float64) @ w2[:, :n].astype(np.float64))
    np.testing.assert_allclose(out, want, rtol=0, atol=_tol(k1 + k2))


@pytest.mark.parametrize("k1,k2", [(0, 5), (5, 0), (0, 0)])
def test_cython_fused_step_product_without_a_source_or_bias(cy_blas, k1, k2):
    rng = np.random.default_rng(k1 * 10 + k2)
    m, n = 9, 40
    a1 = rng.standard_normal((m, k1)).astype(np.float32)
    a2 = rng.standard_normal((m, k2)).astype(np.float32)
    w1 = rng.standard_normal((k1, n)).astype(np.float32)
    w2 = rng.standard_normal((k2, n)).astype(np.float32)
    out = np.full((m, n), np.nan, np.float32)
    if not cy_blas.fused_step_product(out, np.zeros(0, np.float32), a1, w1, a2, w2):
        pytest.skip("this build has no vector step kernel (no AVX2+FMA): sgemm serves")
    want = a1.astype(np.float64) @ w1 + a2.astype(np.float64) @ w2
    np.testing.assert_allclose(out, want, rtol=0, atol=_tol(k1 + k2))


def test_cython_fused_step_product_rejects_mismatched_shapes(cy_blas):
    f32 = np.float32
    with pytest.raises(ValueError, match="shapes"):
        cy_blas.fused_step_product(np.zeros((4, 8), f32), np.zeros(8, f32), np.zeros((4, 3), f32),
                                   np.zeros((2, 8), f32), np.zeros((4, 2), f32), np.zeros((2, 8), f32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m,n,k", [(1, 7, 5), (6, 33, 17), (40, 9, 3)])
def test_cython_gemm_hook_is_row_major(cy_blas, dtype, ta, tb, m, n, k):
    rng = np.random.default_rng(m + n + k)
    A = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    C = rng.standard_normal((m, n)).astype(dtype)
    want = 0.5 * (A.T if ta else A).astype(np.float64) @ (B.T if tb else B) + 2.0 * C
    cy_blas.gemm(ta, tb, 0.5, A, B, 2.0, C)
    np.testing.assert_allclose(C, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("cell,G", [("simple_rnn", 1), ("lstm", 4)])
@pytest.mark.parametrize("B", [5, 13, 33])
@pytest.mark.parametrize("gb,rs", [(False, False), (True, True)])
def test_cython_fused_step_matches_numba_in_float64(cell, G, B, gb, rs):
    """float32 SimpleRNN and LSTM above SMALL_BATCH rows run the fused tiled step
    under Cython; H = 40 gives 40 and 160 gate columns: strips of 2 vectors,
    then one, then a tail."""
    if not kernels.cython_available():
        pytest.fail(f"Cython kernels are not built: {kernels.CYTHON_IMPORT_ERROR}")
    rng = np.random.default_rng(B)
    T, C, H = 7, 24, 40
    p = dict(x=rng.standard_normal((B, T, C)), h0=rng.standard_normal((B, H)) * 0.5,
             c0=rng.standard_normal((B, H)) * 0.5, kernel=rng.standard_normal((C, G * H)) * 0.2,
             recurrent_kernel=rng.standard_normal((H, G * H)) * 0.2,
             bias=rng.standard_normal(G * H) * 0.2)
    f32 = {k: v.astype(np.float32) for k, v in p.items()}
    got = run_kernel(cell, "cython", f32["x"], f32["h0"], f32["c0"], f32["kernel"],
                     f32["recurrent_kernel"], f32["bias"], "tanh", "sigmoid", gb, rs)
    want = run_kernel(cell, "numba", p["x"], p["h0"], p["c0"], p["kernel"],
                      p["recurrent_kernel"], p["bias"], "tanh", "sigmoid", gb, rs)
    assert len(got) == (3 if cell == "lstm" else 2)
    for name, a, b in zip(("y", "h", "c"), got, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5, err_msg=name)
