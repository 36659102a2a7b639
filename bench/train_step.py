"""One training step, Numba against Cython kernels.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_step.py \
        [--cells SimpleRNN GRU LSTM] [--batch 64] [--steps 8] [--features 8] \
        [--units 50] [--repeats 200] [--rounds 3]

Model: Input((steps, features)) -> <cell>(units) -> Dense(10, softmax), SGD,
categorical cross-entropy, float32, one fixed batch. For each cell and backend
(rnnengine.config.set_kernels, in one process) it warms up (Numba's JIT or cache
load), then times ``train_on_batch`` ``--repeats`` times with perf_counter_ns,
``--rounds`` times alternating the backends, and prints the median of each
round's median, and the same for the recurrent layer's two kernels alone
(forward_train + backward, the part that differs between the backends: the
rest of the step, the Dense layer, loss and optimizer, is shared).
"""
import argparse
import statistics
import time

import numpy as np

import rnnengine
from rnnengine import kernels, layers as L
from rnnengine.models import Sequential

BACKENDS = ("numba", "cython")


def _median_ns(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times)


def _kernel_timer(cell, backend, model, x):
    """forward_train + backward of the recurrent layer on fresh buffers, as the layer calls them."""
    layer = model.layers[0]
    name = {"SimpleRNN": "simple_rnn", "LSTM": "lstm", "GRU": "gru"}[cell]
    fwd = kernels.get_kernel(name, "forward_train", backend)
    bwd = kernels.get_kernel(name, "backward", backend)
    B, T, C = x.shape
    H = layer.units
    K = {"simple_rnn": 1, "lstm": 4, "gru": 3}[name]
    G = K * H
    f32 = np.float32
    w = [np.ascontiguousarray(v, f32) for v in layer.get_weights()]
    kernel, rk = w[0], w[1]
    z = lambda *s: np.zeros(s, f32)  # noqa: E731
    y, h, c = z(B, 1, H), z(B, H), z(B, H)
    h_tm1, c_tm1, preact, gates, rec = z(B, T, H), z(B, T, H), z(B, T, G), z(B, T, G), z(B, G)
    dx, dh0, dc0, dk, drk, db, db2 = z(B, T, C), z(B, H), z(B, H), z(C, G), z(H, G), z(G), z(G)
    dgates, dgt, dw = z(B, T, G), z(B, G), z(max(C, H) * G)
    dh_rec, dcarry, keep = z(B, H), z(B, H), np.zeros((0, 0), np.uint8)  # no mask
    dy, dhn, dcn = np.ones((B, 1, H), f32), z(B, H), z(B, H)
    a, ra = 1, 2  # tanh, sigmoid
    if name == "simple_rnn":
        bias = w[2]

        def step():
            h.fill(0)
            fwd(y, h, h_tm1, preact, gates, rec, x, keep, kernel, rk, bias, B, T, C, H, a, 0, 0, 0)
            bwd(dx, dh0, dk, drk, db, dgates, dgt, dh_rec, dcarry, dw, dy, dhn, h_tm1, preact, gates, x, keep,
                kernel, rk, B, T, C, H, a, 0, 0, 0)
    elif name == "lstm":
        bias = w[2]

        def step():
            h.fill(0)
            c.fill(0)
            fwd(y, h, c, h_tm1, c_tm1, preact, gates, rec, x, keep, kernel, rk, bias, B, T, C, H, a, ra, 0, 0, 0)
            bwd(dx, dh0, dc0, dk, drk, db, dgates, dgt, dh_rec, dcarry, dw, dy, dhn, dcn, h_tm1, c_tm1, preact,
                gates, x, keep, kernel, rk, B, T, C, H, a, ra, 0, 0, 0)
    else:
        ib, rb = np.ascontiguousarray(w[2][0]), np.ascontiguousarray(w[2][1])  # reset_after
        rkh = np.ascontiguousarray(rk[:, 2 * H:])
        hh_rec, rec_h, rh, dhh_rec, dhh_t = z(B, T, H), z(B, H), z(B, H), z(B, T, H), z(B, H)

        def step():
            h.fill(0)
            fwd(y, h, h_tm1, preact, gates, hh_rec, rec, rec_h, rh, x, keep, kernel, rk, rkh, ib, rb, B, T, C, H,
                a, ra, 0, 0, 1, 0)
            bwd(dx, dh0, dk, drk, db, db2, dgates, dhh_rec, dgt, dh_rec, dhh_t, dcarry, dw, dy, dhn, h_tm1,
                preact, gates, hh_rec, x, keep, kernel, rk, rkh, B, T, C, H, a, ra, 0, 0, 1, 0)
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", nargs="+", default=["SimpleRNN", "GRU", "LSTM"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--units", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not kernels.cython_available():
        raise SystemExit(f"the Cython kernels are not built: {kernels.CYTHON_IMPORT_ERROR}")
    rng = np.random.default_rng(0)
    B, T, C = args.batch, args.steps, args.features
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, B)]
    print(f"train_on_batch, batch ({B}, {T}, {C}), units {args.units}, float32, "
          f"threads {rnnengine.config.get_num_threads()}; median of {args.rounds} rounds' medians "
          f"of {args.repeats} calls")
    print(f"{'cell':10s} {'backend':8s} {'step (us)':>10s} {'kernels (us)':>13s}")
    for cell in args.cells:
        model = Sequential([L.Input((T, C)), getattr(L, cell)(args.units), L.Dense(10, activation="softmax")])
        model.compile(optimizer=rnnengine.optimizers.SGD(learning_rate=1e-3), loss="categorical_crossentropy")
        steps, kern = {b: [] for b in BACKENDS}, {b: [] for b in BACKENDS}
        timers = {b: _kernel_timer(cell, b, model, x) for b in BACKENDS}
        for b in BACKENDS:  # warm up: JIT / cache load, plans, workspaces
            rnnengine.config.set_kernels(b)
            for _ in range(5):
                model.train_on_batch(x, y)
                timers[b]()
        for _ in range(args.rounds):
            for b in BACKENDS:
                rnnengine.config.set_kernels(b)
                steps[b].append(_median_ns(lambda: model.train_on_batch(x, y), args.repeats))
                kern[b].append(_median_ns(timers[b], args.repeats))
        for b in BACKENDS:
            print(f"{cell:10s} {b:8s} {statistics.median(steps[b]) / 1e3:10.1f} "
                  f"{statistics.median(kern[b]) / 1e3:13.1f}")


if __name__ == "__main__":
    main()
