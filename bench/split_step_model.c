/* A C model of the batch-1 split (src/_split.pxd) on the real job runner
 * (src/_step_pool.h): an LSTM-sized step (h @ U for H = 128 units, 4 gates,
 * U 64-byte aligned, each chunk accumulating in its own buffer, h_tm1
 * prefetched) and a stand-in for the gates, T = 50 steps, run alone and split
 * over the caller and the helper, adaptive choice off. Prints µs a step, best
 * and mean over the calls, and the helper's share of the tickets.
 *
 *   gcc -O3 -march=native -fno-trapping-math -pthread -Isrc bench/split_step_model.c \
 *       -o /tmp/split_step_model && /tmp/split_step_model
 */
#include "_step_pool.h"
#include <stdio.h>

#define H 128
#define G (4 * H)
#define T 50
#define CALLS 3000

static float* U;
static float hs[2][H] __attribute__((aligned(64)));

static void chunk_fn(void* ctx, int stage, int c)
{
    (void)ctx;
    if (stage == 0)
        return;
    int s = stage - 1, u0 = c * H / 2, n = H / 2, g, k, j;
    const float* h = hs[s & 1];
    float* hn = hs[(s & 1) ^ 1];
    float z[4][H / 2] __attribute__((aligned(64)));
    for (j = 0; j < H; j += 16)
        __builtin_prefetch(h + j, 0, 3);
    for (g = 0; g < 4; g++) {
        float* o = z[g];
        for (j = 0; j < n; j++)
            o[j] = 0;
        for (k = 0; k < H; k += 4) {
            float h0 = h[k], h1 = h[k + 1], h2 = h[k + 2], h3 = h[k + 3];
            const float* w0 = U + (long)k * G + g * H + u0;
            const float *w1 = w0 + G, *w2 = w1 + G, *w3 = w2 + G;
            for (j = 0; j < n; j++)
                o[j] += h0 * w0[j] + h1 * w1[j] + h2 * w2[j] + h3 * w3[j];
        }
    }
    for (j = 0; j < n; j++) {  /* a bounded stand-in for the gates */
        float a = z[0][j] + z[1][j] + z[2][j] + z[3][j];
        hn[u0 + j] = 0.5f * a / (1.0f + (a > 0 ? a : -a));
    }
}

static void run(int split)
{
    double best = 1e30, sum = 0;
    long long tickets = rnn_pool_helper_tickets();
    int r, j, s, c;
    for (r = 0; r < CALLS; r++) {
        for (j = 0; j < H; j++)
            hs[0][j] = 0.1f;
        long long t0 = rnn_pool_now_ns();
        int how = split ? rnn_pool_acquire((const void*)chunk_fn, H, 1, T, 2, 0, 1) : 0;
        if (how == 1) {
            rnn_pool_run(chunk_fn, NULL, T + 1, 2);
        } else {
            for (s = 0; s <= T; s++)
                for (c = 0; c < 2; c++)
                    chunk_fn(NULL, s, c);
        }
        if (split)
            rnn_pool_release(how);
        double us = (rnn_pool_now_ns() - t0) / 1e3 / T;
        sum += us;
        if (us < best)
            best = us;
    }
    printf("%-6s best %.2f us a step, mean %.2f; helper ran %.0f%% of the tickets\n",
           split ? "split" : "alone", best, sum / CALLS,
           100.0 * (rnn_pool_helper_tickets() - tickets) / (CALLS * 2.0 * (T + 1)));
}

int main(void)
{
    int i, rep;
    if (posix_memalign((void**)&U, 64, sizeof(float) * H * G))
        return 1;
    for (i = 0; i < H * G; i++)
        U[i] = ((float)(i * 2654435761u % 1000) / 1000.0f - 0.5f) * 0.1f;
    rnn_pool_set_adaptive(0);
    for (rep = 0; rep < 3; rep++) {
        run(0);
        run(1);
    }
    return 0;
}
