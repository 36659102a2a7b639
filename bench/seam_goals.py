"""The routes outside the plain fused path, each against that path, in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/seam_goals.py [--quick] [--json PATH]

Each line is a ratio of medians (interleaved rounds, so drift hits both sides):
masked / unmasked batch-1 predict (Embedding(mask_zero) -> LSTM(64) -> Dense,
T=50, with and without 30% trailing padding, and the same with
Bidirectional); batch-1 LSTM(32) with T cycling over 32 lengths / fixed T=50;
``stream(64).step(rows=8 sessions)`` and a list of 8 frames / a full
``stream(8).step``; and the RSS that 4 idle threads keep after 8 long shapes
each. The goals (issue 14): <= 1.25, <= 1.5, <= 3, <= 3, <= 300 MB.
"""
import argparse
import gc
import json
import statistics
import sys
import threading
import time

import numpy as np

import rnnengine
from rnnengine import layers
from rnnengine.models import Sequential


def _median_us(fn, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def ratio(a, b, rounds, n):
    """Median of a, median of b (us), interleaved over rounds; warmed first."""
    for _ in range(20):
        a(), b()
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(_median_us(a, n))
        tb.append(_median_us(b, n))
    return statistics.median(ta), statistics.median(tb)


def tagger(mask_zero, bidirectional=False, seed=0):
    rec = layers.LSTM(64)
    stack = [layers.Embedding(1000, 32, mask_zero=mask_zero, input_shape=(50,)),
             layers.Bidirectional(rec) if bidirectional else rec, layers.Dense(8)]
    model = Sequential(stack)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.1 for w in model.get_weights()])
    return model


def masked_lines(rounds, n):
    rng = np.random.default_rng(1)
    full = rng.integers(1, 1000, (1, 50))
    padded = full.copy()
    padded[:, 35:] = 0  # 30% trailing padding
    out = {}
    for bi in (False, True):
        masked, plain = tagger(True, bi), tagger(False, bi)
        plain.set_weights(masked.get_weights())
        name = "Bidirectional" if bi else "LSTM"
        for label, x in (("full", full), ("30% padding", padded)):
            ym, yp = ratio(lambda: masked.predict(x, verbose=0), lambda: plain.predict(full, verbose=0),
                           rounds, n)
            out[f"masked {name}, {label}"] = (ym, yp, 1.25)
    return out


def cycling_line(rounds, n):
    model = Sequential([layers.LSTM(32, input_shape=(None, 16)), layers.Dense(4)])
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1, T, 16)).astype(np.float32) for T in np.linspace(20, 82, 32).astype(int)]
    fixed = rng.standard_normal((1, 50, 16)).astype(np.float32)
    it = iter(range(10 ** 9))

    def cycle():
        model.predict(xs[next(it) % 32], verbose=0)

    a, b = ratio(cycle, lambda: model.predict(fixed, verbose=0), rounds, n)
    return {"T cycling over 32 lengths": (a, b, 1.5)}


def stream_lines(rounds, n):
    model = Sequential([layers.LSTM(64, input_shape=(None, 32)), layers.Dense(8)])
    rng = np.random.default_rng(3)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.1 for w in model.get_weights()])
    many, eight = model.stream(batch_size=64), model.stream(batch_size=8)
    x8 = rng.standard_normal((8, 32)).astype(np.float32)
    frames = list(x8)
    rows = np.arange(0, 64, 8)
    out = {}
    a, b = ratio(lambda: many.step(x8, rows=rows), lambda: eight.step(x8), rounds, n)
    out["stream rows=8 of 64"] = (a, b, 3.0)
    a, b = ratio(lambda: eight.step(frames), lambda: eight.step(x8), rounds, n)
    out["stream list of 8 frames"] = (a, b, 3.0)
    return out


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


def rss_line(quick):
    model = Sequential([layers.LSTM(256, input_shape=(None, 32)), layers.Dense(8)])
    lengths = np.linspace(4000, 11000, 8).astype(int)
    if quick:
        lengths = lengths // 4
    gc.collect()
    before = _rss_mb()
    go = threading.Barrier(5)

    def worker(k):
        rng = np.random.default_rng(k)
        for T in lengths:
            model.predict(rng.standard_normal((1, T + k, 32)).astype(np.float32), verbose=0)
        go.wait()  # stay alive (idle) while the RSS is read
        go.wait()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    go.wait()
    gc.collect()
    kept = _rss_mb() - before
    go.wait()
    for t in threads:
        t.join()
    return {"RSS kept by 4 idle threads (MB)": (kept, None, 300.0)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds, shorter RSS shapes")
    p.add_argument("--json", help="write the lines here")
    args = p.parse_args(argv)
    rounds, n = (3, 50) if args.quick else (7, 200)
    lines = {}
    lines.update(masked_lines(rounds, n))
    lines.update(cycling_line(rounds, n))
    lines.update(stream_lines(rounds, n))
    lines.update(rss_line(args.quick))
    try:
        from threadpoolctl import threadpool_info
        blas = [(i.get("internal_api"), i.get("architecture")) for i in threadpool_info()]
    except ImportError:
        blas = []
    print(f"rnnengine {rnnengine.__version__}, kernels {rnnengine.config.get_kernels()}, BLAS {blas}")
    for name, (a, b, goal) in lines.items():
        if b is None:
            print(f"{name:40s} {a:9.1f}{'':28s} goal <= {goal:g}")
        else:
            print(f"{name:40s} {a:9.1f} us vs {b:8.1f} us = {a / b:5.2f}x   goal <= {goal:g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: list(v) for k, v in lines.items()}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
