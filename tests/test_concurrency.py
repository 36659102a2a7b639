"""Thread safety: one model, many threads; streams; ``set_weights`` under load.

What is checked, all with exact equality (``np.array_equal``) against serial calls:

- ``predict`` / ``predict_on_batch`` / ``predict(out=)`` from 8 threads x 500
  calls on ONE model, each call on its own random input (batch 1..40, so
  Keras's 32-row split, several workspaces and several per-thread call plans
  per thread, plan-cache evictions; some inputs float64/int to take the cast
  path), for a Sequential model (call plans, plan.py) and a functional Model
  (Bidirectional + merge: the workspace-pool path), under both backends;
- 8 streams stepped concurrently from 8 threads equal their serial replay;
- one stream stepped from two threads at once raises ``RuntimeError``, and so
  do reset/get_state/set_state during another thread's step (provoked
  deterministically with events), and hammering one stream from two
  threads never corrupts it: the successful steps are exactly a serial run;
- ``set_weights`` racing with ``predict``: every result is the all-old or the
  all-new result, never a mix, for both models.

Sizes: ``RNNENGINE_THREAD_CALLS`` (default 500) calls per thread.
Each test writes its figures to the terminal (threads x calls, mismatches).
"""
import os
import threading
import time
from collections import Counter

import numpy as np
import pytest

from rnnengine import layers
from rnnengine.models import Model, Sequential

from ._report import say  # noqa: F401 - a fixture

N_THREADS = 8
CALLS = int(os.environ.get("RNNENGINE_THREAD_CALLS", "500"))
C = 6


def _sequential():
    return Sequential([layers.Input(shape=(None, C)), layers.LSTM(16, return_sequences=True),
                       layers.GRU(8), layers.Dense(3, activation="softmax")])


def _functional():
    x = layers.Input(shape=(None, C))
    seq = layers.Bidirectional(layers.LSTM(8, return_sequences=True), merge_mode="concat")(x)
    a = layers.GRU(8, reset_after=False)(seq)
    b = layers.SimpleRNN(8)(x)
    merged = layers.Concatenate()([layers.Add()([a, b]), b])
    return Model(x, layers.Dense(3, activation="softmax")(merged))


MODELS = {"sequential": _sequential, "functional": _functional}


def _randomize(model, rng, scale=0.5):
    model.set_weights([(rng.standard_normal(w.shape) * scale).astype(w.dtype) for w in model.get_weights()])
    return model


def _inputs(rng, n):
    """n distinct inputs: batch 1..40, a few sequence lengths, mostly float32."""
    out = []
    for i in range(n):
        B, T = int(rng.integers(1, 41)), int(rng.choice([2, 5, 9]))
        x = rng.standard_normal((B, T, C))
        kind = i % 10
        if kind == 7:
            x = x.astype(np.float64)                       # cast to float32 inside
        elif kind == 8:
            x = np.round(x * 2).astype(np.int32)          # integer input, cast
        else:
            x = x.astype(np.float32)
        out.append(x)
    return out


def _call(model, x, i, outs=None):
    """The API used for call i: predict, predict_on_batch or predict(out=)."""
    mode = i % 3
    if mode == 0:
        return model.predict(x)
    if mode == 1:
        return model.predict_on_batch(x)
    out = np.empty((x.shape[0], 3), np.float32)
    return model.predict(x, out=out)


def _run_threads(target, n):
    barrier = threading.Barrier(n)
    errors = []

    def wrapped(k):
        try:
            barrier.wait()
            target(k)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append((k, repr(exc)))

    threads = [threading.Thread(target=wrapped, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("which", sorted(MODELS))
def test_concurrent_predict_equals_serial(backend, rng, which, say):
    model = _randomize(MODELS[which](), rng)
    inputs = _inputs(rng, N_THREADS * CALLS)
    expected = [_call(model, x, i) for i, x in enumerate(inputs)]
    mismatches = [0] * N_THREADS
    done = [0] * N_THREADS

    def work(k):
        # Thread k takes every N_THREADS-th input, in a thread-specific order.
        mine = list(range(k, len(inputs), N_THREADS))
        order = np.random.default_rng(k).permutation(len(mine))
        for j in order:
            i = mine[j]
            got = _call(model, inputs[i], i)
            if not np.array_equal(got, expected[i]):
                mismatches[k] += 1
            done[k] += 1

    _run_threads(work, N_THREADS)
    say(f"[concurrency] {which}/{backend}: {N_THREADS} threads x {CALLS} calls = {sum(done)} calls, "
          f"{sum(mismatches)} mismatches")
    assert sum(done) == N_THREADS * CALLS
    assert sum(mismatches) == 0, mismatches


# -- streams ---------------------------------------------------------------------------------------

def _stream_model(rng):
    return _randomize(Sequential([layers.Input(shape=(None, C)), layers.LSTM(12, return_sequences=True),
                                  layers.GRU(8, return_sequences=True), layers.SimpleRNN(6),
                                  layers.Dense(3)]), rng)


def _stream_script(rng, batch, steps):
    """Per step: (x_t, rows or None)."""
    script = []
    for _ in range(steps):
        if batch > 1 and rng.random() < 0.3:
            rows = np.sort(rng.choice(batch, size=int(rng.integers(1, batch + 1)), replace=False))
            script.append((rng.standard_normal((len(rows), C)).astype(np.float32), rows))
        else:
            script.append((rng.standard_normal((batch, C)).astype(np.float32), None))
    return script


def _play(stream, script):
    return [stream.step(x, rows=rows) for x, rows in script]


def test_streams_stepped_from_threads_equal_serial_replay(backend, rng, say):
    model = _stream_model(rng)
    steps = max(50, CALLS // 2)
    batches = [1 + k % 3 for k in range(N_THREADS)]
    scripts = [_stream_script(rng, b, steps) for b in batches]
    streams = [model.stream(batch_size=b) for b in batches]
    results = [None] * N_THREADS

    def work(k):
        results[k] = _play(streams[k], scripts[k])

    _run_threads(work, N_THREADS)
    mismatches = 0
    for k in range(N_THREADS):
        replay = _play(model.stream(batch_size=batches[k]), scripts[k])
        mismatches += sum(not np.array_equal(a, b) for a, b in zip(results[k], replay))
    say(f"[concurrency] streams/{backend}: {N_THREADS} streams x {steps} steps, {mismatches} mismatches")
    assert mismatches == 0


@pytest.mark.parametrize("second", ["step", "reset", "get_state", "set_state"])
def test_one_stream_stepped_from_two_threads_raises(rng, second):
    """Deterministic: thread A is held inside step() (its kernel loop) while B
    steps, resets, reads or restores the same stream: B gets RuntimeError and
    changes nothing (a reset or set_state landing mid-step would tear the state
    A is writing back; a get_state would read it half-stepped)."""
    model = _stream_model(rng)
    stream = model.stream(batch_size=1)
    snapshot = stream.get_state()
    inside, release = threading.Event(), threading.Event()
    real_run = stream._run

    def held_run(ws, rows):
        inside.set()
        assert release.wait(10)
        return real_run(ws, rows)

    stream._run = held_run  # instance attribute: step() looks it up on self
    x = rng.standard_normal(C).astype(np.float32)
    got = {}

    def first():
        got["a"] = stream.step(x)

    a = threading.Thread(target=first)
    a.start()
    try:
        assert inside.wait(10)
        calls = {"step": lambda: stream.step(x), "reset": stream.reset, "get_state": stream.get_state,
                 "set_state": lambda: stream.set_state(snapshot)}
        with pytest.raises(RuntimeError, match="single-owner"):
            calls[second]()
    finally:
        release.set()
        a.join()
    del stream._run
    # A's step completed normally and the failed attempt changed nothing.
    fresh = model.stream(batch_size=1)
    np.testing.assert_array_equal(got["a"], fresh.step(x))
    np.testing.assert_array_equal(stream.step(x), fresh.step(x))


def test_one_stream_hammered_from_two_threads_is_never_corrupted(backend, rng, say):
    """Two threads step one stream with the same input as fast as they can: each
    call either succeeds or raises RuntimeError, and the successful steps are
    exactly a serial run of that many steps (the state is never torn). How
    many attempts are refused depends on the scheduler: it is reported, not
    asserted (the deterministic check is the test above)."""
    model = _stream_model(rng)
    stream = model.stream(batch_size=2)
    x = rng.standard_normal((2, C)).astype(np.float32) * 0.3
    # Kernels loaded (a cold Numba cache compiles for seconds) before the race:
    # the refusal bound below is about a stream that stays busy, not about JIT.
    model.stream(batch_size=2).step(x)
    per_thread = max(100, CALLS)
    ok, refused = [[], []], [0, 0]

    def work(k):
        # Each thread keeps stepping until it has had per_thread successful steps.
        while len(ok[k]) < per_thread:
            try:
                ok[k].append(stream.step(x))
            except RuntimeError:
                refused[k] += 1
                assert refused[k] < 1_000_000, "the stream stayed busy"

    _run_threads(work, 2)
    n_ok = len(ok[0]) + len(ok[1])
    serial_stream = model.stream(batch_size=2)
    serial = [serial_stream.step(x) for _ in range(n_ok)]
    say(f"[concurrency] one stream, 2 threads x {per_thread} steps/{backend}: {n_ok} stepped, "
          f"{sum(refused)} attempts refused with RuntimeError")
    assert n_ok == 2 * per_thread
    # The outputs, as a multiset, are exactly the serial run's.
    assert Counter(y.tobytes() for y in ok[0] + ok[1]) == Counter(y.tobytes() for y in serial)
    for got, want in zip(stream.get_state(), serial_stream.get_state()):
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


# -- set_weights racing with predict ---------------------------------------------------------------

def _two_weight_sets(model, rng):
    old = [(rng.standard_normal(w.shape) * 0.5).astype(w.dtype) for w in model.get_weights()]
    new = [(rng.standard_normal(w.shape) * 0.5).astype(w.dtype) for w in model.get_weights()]
    return old, new


def _leaf_sizes(model):
    """Weights per unit that set_weights swaps atomically (a layer's ``_packed``
    tuple; a Bidirectional wrapper swaps its two inner layers one after the other)."""
    sizes = []
    for layer in model._weighted_layers():
        subs = [layer.forward_layer, layer.backward_layer] if hasattr(layer, "backward_layer") else [layer]
        sizes += [len(sub._weight_specs) for sub in subs]
    return sizes


@pytest.mark.parametrize("which", sorted(MODELS))
def test_set_weights_racing_with_predict_gives_old_or_new_never_a_mix(backend, rng, which, say):
    """4 readers predict while a writer flips the weights between two sets,
    waiting after each flip until the readers have finished a few calls.

    Each result is classified: the all-old result, the all-new result,
    "split" (predict runs 32 rows at a time, as Keras: each chunk all-old or
    all-new, but not the same), "torn" (a chunk is exactly the result of some
    mix: each atomically swapped unit -- a layer's ``_packed`` -- old or new),
    or "corrupt" (none of those: scratch memory shared or weights half-copied).
    A Sequential model's call plans bind the weights under the weights lock
    that ``set_weights`` holds, and a functional graph's call snapshots every
    layer's weights under it: no torn results for either. Split results
    (a predict of more than 32 rows runs one forward per 32-row batch, each
    with the weights of its moment) are reported for both."""
    model = MODELS[which]()
    old, new = _two_weight_sets(model, rng)
    xs = [rng.standard_normal((int(b), 5, C)).astype(np.float32) for b in (1, 3, 8, 33)]
    sizes = _leaf_sizes(model)
    mixes = {}
    for mask in range(2 ** len(sizes)):
        ws, start = [], 0
        for bit, n in enumerate(sizes):
            ws += (new if mask >> bit & 1 else old)[start:start + n]
            start += n
        ref = MODELS[which]()
        ref.set_weights(ws)
        mixes[mask] = [ref.predict(x) for x in xs]
    want_old, want_new = mixes.pop(0), mixes.pop(2 ** len(sizes) - 1)
    model.set_weights(old)
    stop = threading.Event()
    counts = {"old": 0, "new": 0, "split": 0, "torn": 0, "corrupt": 0}
    lock = threading.Lock()
    done = [0]
    flips = max(100, CALLS // 5)

    def reader(k):
        local = dict.fromkeys(counts, 0)
        i = k
        while not stop.is_set():
            if i - k > 10 ** 6:
                raise AssertionError("the writer never finished")
            j = i % len(xs)
            y = model.predict(xs[j])
            if np.array_equal(y, want_old[j]):
                local["old"] += 1
            elif np.array_equal(y, want_new[j]):
                local["new"] += 1
            else:
                # predict runs 32 rows at a time (Keras's default batch): "split"
                # when each chunk is all-old or all-new but they differ, "torn"
                # when every chunk is some mix, "corrupt" otherwise.
                kinds = []
                for a in range(0, len(y), 32):
                    part = y[a:a + 32]
                    if np.array_equal(part, want_old[j][a:a + 32]) or np.array_equal(part, want_new[j][a:a + 32]):
                        kinds.append("pure")
                    elif any(np.array_equal(part, m[j][a:a + 32]) for m in mixes.values()):
                        kinds.append("mix")
                    else:
                        kinds.append("bad")
                key = "corrupt" if "bad" in kinds else "torn" if "mix" in kinds else "split"
                local[key] += 1
            i += 1
            done[0] += 1  # a lost update only makes the writer wait longer
        with lock:
            for key, v in local.items():
                counts[key] += v

    def writer():
        try:
            for f in range(flips):
                model.set_weights(new if f % 2 == 0 else old)
                target, deadline = done[0] + 6, time.monotonic() + 30
                while done[0] < target and not stop.is_set():
                    assert time.monotonic() < deadline, "the readers stopped answering"
                    time.sleep(0.0002)
        finally:
            stop.set()

    errors = []

    def guarded(fn, *args):
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
            stop.set()

    threads = [threading.Thread(target=guarded, args=(reader, k)) for k in range(4)]
    threads.append(threading.Thread(target=guarded, args=(writer,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    total = sum(counts.values())
    say(f"[concurrency] set_weights race {which}/{backend}: {flips} flips, {total} predicts: {counts}")
    assert counts["corrupt"] == 0, counts
    assert counts["old"] and counts["new"], counts
    assert counts["torn"] == 0, counts  # plans and snapshots read the weights under the weights lock
    # After the race, the model computes exactly with the last weights set.
    last = new if flips % 2 == 1 else old
    ref = MODELS[which]()
    ref.set_weights(last)
    for x in xs:
        np.testing.assert_array_equal(model.predict(x), ref.predict(x))


def _masked_sequential():
    """A stack no call plan describes (Masking): the general path, as a graph."""
    return Sequential([layers.Input(shape=(None, C)), layers.Masking(0.0), layers.LSTM(16, return_sequences=True),
                       layers.GRU(8), layers.Dense(3, activation="softmax")])


# (model, how it is called): predict, or one step of a fresh stream.
ATOMIC_CASES = {"sequential": (_sequential, "predict"), "functional": (_functional, "predict"),
                "masked sequential": (_masked_sequential, "predict"), "stream": (_sequential, "step")}


@pytest.mark.parametrize("which", sorted(ATOMIC_CASES))
def test_set_weights_is_atomic_for_a_concurrent_predict(backend, rng, which):
    """Deterministic: the writer is held after the first layer's swap (up to 1 s)
    while another thread predicts. Sequential: the predict sees a changed weight,
    rebuilds its call plan under the weights lock, waits for the writer and runs
    all-new. Functional, masked (no call plan) and a stream's step: the call
    takes its snapshot of every layer's weights under the same lock, so it too
    waits and runs all-new."""
    make, how = ATOMIC_CASES[which]
    model = make()
    old, new = _two_weight_sets(model, rng)
    x = rng.standard_normal((4, 5, C)).astype(np.float32)

    def call():
        return model.predict(x) if how == "predict" else model.stream(batch_size=4).step(x[:, 0])

    model.set_weights(new)
    want_new = call()
    model.set_weights(old)
    want_old = call()
    assert not np.array_equal(want_old, want_new)
    second = model._weighted_layers()[1]
    swapped_first, predicted = threading.Event(), threading.Event()
    real = second.set_weights
    got = {}

    def held(weights):
        swapped_first.set()
        predicted.wait(1.0)  # a predict blocked on the weights lock never comes: go on
        return real(weights)

    def predict():
        got["y"] = call()
        predicted.set()

    second.set_weights = held
    try:
        _run_threads(lambda k: model.set_weights(new) if k == 0 else (swapped_first.wait(10), predict()), 2)
    finally:
        del second.set_weights
    y = got["y"]
    assert np.array_equal(y, want_old) or np.array_equal(y, want_new), "a mix of old and new weights"
    np.testing.assert_array_equal(call(), want_new)


def test_plan_is_rebuilt_after_two_set_weights_without_a_predict_between(backend, rng):
    """Single thread, no race: predict; set_weights(w2); set_weights(w3); predict
    must compute with w3. With threads this is the common case: a thread's plan
    is only checked when that thread next calls predict."""
    model = _sequential()
    x = rng.standard_normal((2, 5, C)).astype(np.float32)
    stale = 0
    for _ in range(20):
        w1, w2, w3 = (_randomize(_sequential(), rng).get_weights() for _ in range(3))
        model.set_weights(w1)
        model.predict(x)  # builds this thread's plan for x's shape
        model.set_weights(w2)
        model.set_weights(w3)
        ref = _sequential()
        ref.set_weights(w3)
        stale += not np.array_equal(model.predict(x), ref.predict(x))
    assert stale == 0, f"{stale}/20 predicts ran with the weights of two set_weights ago"


@pytest.mark.parametrize("declared", [True, False], ids=["Input", "no_input_shape"])
def test_first_predict_from_many_threads_builds_the_model_once(backend, rng, declared):
    """8 threads make the first call on an unbuilt Sequential at once.

    Deterministic: the first layer's build waits (up to 0.5 s) for a second
    thread to enter it too; with a build lock none can, and the wait times out."""
    stack = [layers.LSTM(8, return_sequences=True), layers.GRU(4), layers.Dense(2)]
    model = Sequential(([layers.Input(shape=(None, C))] if declared else []) + stack)
    first = stack[0]
    real_build = first._node_build
    entered, builds, both = [0], [0], threading.Event()

    def contended_build(shapes):
        entered[0] += 1
        if entered[0] >= 2:
            both.set()
        both.wait(0.5)
        builds[0] += 1
        return real_build(shapes)

    first._node_build = contended_build
    x = rng.standard_normal((3, 5, C)).astype(np.float32)
    results = [None] * N_THREADS
    try:
        def work(k):
            results[k] = model.predict(x)

        _run_threads(work, N_THREADS)
    finally:
        del first._node_build
    assert builds[0] == 1, f"the first layer was built {builds[0]} times"
    assert [len(layer._weight_specs) for layer in stack] == [3, 3, 2]
    final = model.predict(x)
    assert all(np.array_equal(r, final) for r in results)
