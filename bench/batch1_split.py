"""Batch-1 calls on one thread vs split over two (src/_split.pxd), through the
public API: `model.predict_on_batch(x)` on a Sequential([Input, Cell(H)]),
with `rnnengine.config.set_num_threads(1)` and `(2)` alternating in short
stretches in one process, so both see the same machine. Medians and p90 in
µs, and how many of the split calls' steps the helper thread ran.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/batch1_split.py
"""
import argparse
import time

import numpy as np
from threadpoolctl import threadpool_info

import rnnengine
from rnnengine.kernels import _cy_blas
from rnnengine.layers import GRU, LSTM, Input, SimpleRNN
from rnnengine.models import Sequential

CASES = [  # (cell, T, C, H): L1 of ../shared/workloads.md, and larger cells
    (LSTM, 50, 32, 128), (GRU, 50, 32, 128), (SimpleRNN, 50, 32, 128),
    (LSTM, 50, 32, 256), (GRU, 50, 32, 256), (SimpleRNN, 50, 32, 256),
]


def _model(cls, T, C, H, rng):
    model = Sequential([Input(shape=(T, C)), cls(H)])
    model.set_weights([(rng.standard_normal(w.shape) * 0.1).astype(np.float32)
                       for w in model.get_weights()])
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40, help="stretches per setting")
    ap.add_argument("--calls", type=int, default=50, help="timed calls per stretch")
    opts = ap.parse_args()
    rng = np.random.default_rng(0)
    blas = [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpool_info()]
    print(f"threadpoolctl: {blas}")
    print("| cell | T | C | H | 1 thread median µs (p90) | 2 threads median µs (p90) | "
          "speed-up | helper's share of the steps |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for cls, T, C, H in CASES:
        model = _model(cls, T, C, H, rng)
        x = rng.standard_normal((1, T, C)).astype(np.float32)
        times = {1: [], 2: []}
        tickets = calls = 0
        for _ in range(opts.rounds):
            for n in (1, 2):
                rnnengine.config.set_num_threads(n)
                for _ in range(5):  # warm-up: plan, helper awake
                    model.predict_on_batch(x)
                before = _cy_blas.pool_helper_tickets()
                for _ in range(opts.calls):
                    t0 = time.perf_counter_ns()
                    model.predict_on_batch(x)
                    times[n].append(time.perf_counter_ns() - t0)
                if n == 2:
                    tickets += _cy_blas.pool_helper_tickets() - before
                    calls += opts.calls
        med = {n: np.median(v) / 1e3 for n, v in times.items()}
        p90 = {n: np.percentile(v, 90) / 1e3 for n, v in times.items()}
        # a split call has 2 chunks for each of its T + 1 stages
        share = tickets / (calls * 2 * (T + 1)) if calls else 0.0
        print(f"| {cls.__name__} | {T} | {C} | {H} | {med[1]:.1f} ({p90[1]:.1f}) | "
              f"{med[2]:.1f} ({p90[2]:.1f}) | {med[1] / med[2]:.2f}× | {share:.0%} |")


if __name__ == "__main__":
    main()
