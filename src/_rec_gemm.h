/* The per-step recurrent product out = h @ W for float32 batches above
 * SMALL_BATCH (src/_blas.pxd), and every product in deterministic mode: a
 * register-tiled micro-kernel in plain C with GCC/Clang vector extensions, no
 * intrinsics, compiled once per ISA build (setup.py: SSE4.2, AVX2 + FMA,
 * AVX-512), so its vector width is the build's.
 *
 * Why not BLAS: a step of T2's LSTM is h (16, 256) @ W (256, 1024) per
 * thread. OpenBLAS packs all of W into its panel layout on every call, and at
 * 16 rows that copy is not paid back: 50 GFLOP/s against its 100 on large
 * GEMMs (measured here, SkylakeX kernels on Zen 5). This kernel reads W in
 * place (row-major, row stride ldw) and runs at 105-115 GFLOP/s for 8-128
 * rows (bench/step_kernel.py measures it against NumPy's sgemm).
 *
 * Shape: out[i, j] for a tile of MR rows x nv vectors of columns is held in
 * registers for the whole k loop (12 x 2 zmm; strips of 4 vectors where a
 * block has at most 6 rows); each k loads nv vectors of W's row k and
 * broadcasts one h value per row. The columns are the outer loop, so a K x 32
 * column strip of W (32 KB at K = 256) stays in L1 while every row block
 * passes over it. Row blocks are balanced (32 rows = 3 x 11, not 12 + 12 + 8).
 * A step can add two products and a bias in the same pass (x_t @ kernel and
 * h @ recurrent_kernel: rnnengine_sgemm_small2).
 *
 * The sums run in k order per element with fused multiply-adds, as a BLAS
 * kernel's do; results differ from BLAS's by float32 rounding only.
 *
 * The sums run in the same order in the column tail (the last N % VW
 * columns), so an element's value does not depend on which tile or tail it
 * falls in, nor on M: the kernel is row- and column-invariant.
 *
 * rnnengine_sgemm_small(2) return 0 and touch nothing where this build has no
 * such kernel (a compiler without vector extensions); the caller then falls
 * back to a plain loop (_rowinv_product in src/_blas.pxd).
 */
#ifndef RNNENGINE_REC_GEMM_H
#define RNNENGINE_REC_GEMM_H

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__SSE2__) || defined(__AVX__))
#define RNNENGINE_HAVE_REC_GEMM 1

/* Every ISA build has it (setup.py: baseline SSE4.2, AVX2 + FMA, AVX-512),
 * so that each computes one element the same way at any row count and any
 * column position (deterministic mode, and the batch-1 split's columns). */
#if defined(__AVX512F__)
#define RNN_VW 16      /* floats per vector: one zmm */
#define RNN_MR 12      /* 12 rows x 2 vectors = 24 of 32 registers */
#define RNN_MR_WIDE 6  /* up to 6 rows: strips of 4 vectors (24 registers) */
#elif defined(__AVX__)
#define RNN_VW 8       /* one ymm */
#define RNN_MR 6       /* 6 x 2 = 12 of 16 registers */
#define RNN_MR_WIDE 3
#else
#define RNN_VW 4       /* one xmm (no FMA: a product, then a sum, each rounded) */
#define RNN_MR 6
#define RNN_MR_WIDE 3
#endif

/* aligned(4): loads and stores at any float address (vmovups). */
typedef float rnn_vf __attribute__((vector_size(RNN_VW * 4), aligned(4)));

/* out[:mr, :nv*VW] = bias + a1[:mr, :K1] @ w1[:K1] + a2[:mr, :K2] @ w2[:K2]
 * (bias may be NULL); mr and nv (1, 2 or 4) are constants after inlining, so
 * the accumulators live in registers. */
static inline __attribute__((always_inline)) void
rnn_tile(float* out, int ldo, const float* bias,
         const float* a1, int lda1, const float* w1, int ldw1, int K1,
         const float* a2, int lda2, const float* w2, int ldw2, int K2,
         const int mr, const int nv)
{
    rnn_vf acc[RNN_MR][4];
    rnn_vf b[4];
    int i, k, v;
#pragma GCC unroll 4
    for (v = 0; v < nv; v++) {
        b[v] = bias ? *(const rnn_vf*)(bias + v * RNN_VW) : (rnn_vf){0};
    }
#pragma GCC unroll 12
    for (i = 0; i < mr; i++) {
#pragma GCC unroll 4
        for (v = 0; v < nv; v++)
            acc[i][v] = b[v];
    }
#define RNN_K_LOOP(A, LDA, W, LDW, KK)                                      \
    for (k = 0; k < KK; k++) {                                              \
        const float* wk = W + (long)k * LDW;                                \
        rnn_vf wv[4];                                                       \
        _Pragma("GCC unroll 4")                                             \
        for (v = 0; v < nv; v++)                                            \
            wv[v] = *(const rnn_vf*)(wk + v * RNN_VW);                      \
        _Pragma("GCC unroll 12")                                            \
        for (i = 0; i < mr; i++) {                                          \
            float s = A[(long)i * LDA + k];                                 \
            _Pragma("GCC unroll 4")                                         \
            for (v = 0; v < nv; v++)                                        \
                acc[i][v] += s * wv[v];                                     \
        }                                                                   \
    }
    RNN_K_LOOP(a1, lda1, w1, ldw1, K1)
    RNN_K_LOOP(a2, lda2, w2, ldw2, K2)
#undef RNN_K_LOOP
#pragma GCC unroll 12
    for (i = 0; i < mr; i++) {
#pragma GCC unroll 4
        for (v = 0; v < nv; v++)
            *(rnn_vf*)(out + (long)i * ldo + v * RNN_VW) = acc[i][v];
    }
}

#define RNN_TILE_NV(n)                                                        \
    switch (nv) {                                                             \
    case 4:                                                                   \
        rnn_tile(out, ldo, bias, a1, lda1, w1, ldw1, K1, a2, lda2, w2, ldw2,  \
                 K2, n, 4);                                                   \
        break;                                                                \
    case 2:                                                                   \
        rnn_tile(out, ldo, bias, a1, lda1, w1, ldw1, K1, a2, lda2, w2, ldw2,  \
                 K2, n, 2);                                                   \
        break;                                                                \
    default:                                                                  \
        rnn_tile(out, ldo, bias, a1, lda1, w1, ldw1, K1, a2, lda2, w2, ldw2,  \
                 K2, n, 1);                                                   \
    }
#define RNN_TILE_CASE(n) case n: RNN_TILE_NV(n) break;
#define RNN_TILE_CASE_NARROW(n)                                               \
    case n:                                                                   \
        if (nv == 2)                                                          \
            rnn_tile(out, ldo, bias, a1, lda1, w1, ldw1, K1, a2, lda2, w2,    \
                     ldw2, K2, n, 2);                                         \
        else                                                                  \
            rnn_tile(out, ldo, bias, a1, lda1, w1, ldw1, K1, a2, lda2, w2,    \
                     ldw2, K2, n, 1);                                         \
        break;

/* One tile of mr rows: nv = 4 only for mr <= RNN_MR_WIDE. */
static void
rnn_tile_rows(float* out, int ldo, const float* bias,
              const float* a1, int lda1, const float* w1, int ldw1, int K1,
              const float* a2, int lda2, const float* w2, int ldw2, int K2,
              int mr, int nv)
{
    switch (mr) {
        RNN_TILE_CASE(1) RNN_TILE_CASE(2) RNN_TILE_CASE(3)
#if RNN_MR_WIDE > 3
        RNN_TILE_CASE(4) RNN_TILE_CASE(5) RNN_TILE_CASE(6)
#else
        RNN_TILE_CASE_NARROW(4) RNN_TILE_CASE_NARROW(5) RNN_TILE_CASE_NARROW(6)
#endif
#if RNN_MR > 6
        RNN_TILE_CASE_NARROW(7) RNN_TILE_CASE_NARROW(8) RNN_TILE_CASE_NARROW(9)
        RNN_TILE_CASE_NARROW(10) RNN_TILE_CASE_NARROW(11) RNN_TILE_CASE_NARROW(12)
#endif
    }
}
#undef RNN_TILE_CASE
#undef RNN_TILE_CASE_NARROW
#undef RNN_TILE_NV

/* out[:M, :N] = bias + a1[:M, :K1] @ w1[:K1, :N] + a2[:M, :K2] @ w2[:K2, :N],
 * every matrix row-major with the given row strides; bias (N,) may be NULL.
 * Two sources so that a step can add x_t @ kernel and h @ recurrent_kernel in
 * one pass (src/_lstm.pyx): no (B, T, 4H) projection buffer written and read
 * back. */
static int
rnnengine_sgemm_small2(int M, int N, const float* bias,
                       int K1, const float* a1, int lda1, const float* w1, int ldw1,
                       int K2, const float* a2, int lda2, const float* w2, int ldw2,
                       float* out, int ldo)
{
    int blocks = (M + RNN_MR - 1) / RNN_MR;
    int widest = M <= RNN_MR_WIDE ? 4 : 2;
    int j = 0, q, r0, r1, i, k;
    while (j + RNN_VW <= N) {  /* column strips of 4 (few rows) or 2 vectors, then fewer */
        int nv = widest;
        while (j + nv * RNN_VW > N)
            nv /= 2;
        for (q = 0; q < blocks; q++) {
            r0 = (int)((long)q * M / blocks);
            r1 = (int)((long)(q + 1) * M / blocks);
            rnn_tile_rows(out + (long)r0 * ldo + j, ldo, bias ? bias + j : NULL,
                          a1 + (long)r0 * lda1, lda1, w1 + j, ldw1, K1,
                          a2 + (long)r0 * lda2, lda2, w2 + j, ldw2, K2,
                          r1 - r0, nv);
        }
        j += nv * RNN_VW;
    }
    if (j < N) {  /* the last N % VW columns */
        for (i = 0; i < M; i++) {
            float* o = out + (long)i * ldo;
            int jj;
            for (jj = j; jj < N; jj++)
                o[jj] = bias ? bias[jj] : 0;
            for (k = 0; k < K1; k++) {
                float s = a1[(long)i * lda1 + k];
                const float* wk = w1 + (long)k * ldw1;
                for (jj = j; jj < N; jj++)
                    o[jj] += s * wk[jj];
            }
            for (k = 0; k < K2; k++) {
                float s = a2[(long)i * lda2 + k];
                const float* wk = w2 + (long)k * ldw2;
                for (jj = j; jj < N; jj++)
                    o[jj] += s * wk[jj];
            }
        }
    }
    return 1;
}

#else /* no vector kernel in this build: the caller uses sgemm */
#define RNNENGINE_HAVE_REC_GEMM 0
static int
rnnengine_sgemm_small2(int M, int N, const float* bias,
                       int K1, const float* a1, int lda1, const float* w1, int ldw1,
                       int K2, const float* a2, int lda2, const float* w2, int ldw2,
                       float* out, int ldo)
{
    (void)M; (void)N; (void)bias; (void)K1; (void)a1; (void)lda1; (void)w1;
    (void)ldw1; (void)K2; (void)a2; (void)lda2; (void)w2; (void)ldw2;
    (void)out; (void)ldo;
    return 0;
}
#endif

/* out[:M, :N] = h[:M, :K] @ w[:K, :N]; 0 where there is no vector kernel. */
static int
rnnengine_sgemm_small(int M, int N, int K, const float* h, int ldh,
                      const float* w, int ldw, float* out, int ldo)
{
    return rnnengine_sgemm_small2(M, N, (const float*)0, 0, h, ldh, w, ldw,
                                  K, h, ldh, w, ldw, out, ldo);
}

#endif /* RNNENGINE_REC_GEMM_H */
