"""The batch-1 split (src/_split.pxd, src/_step_pool.h): a float32 call of at
most 4 rows cuts each step's units into two chunks, run by the caller and a
helper thread. Checked against the float64 NumPy reference and against the
same call on one thread, for every cell and option the split handles; the
decision (when it splits) and the helper's participation are checked too.

Named *_cython so that CI's bounds-checked build runs these as well.
"""
import os
import threading
import time

import numpy as np
import pytest

from rnnengine import config, kernels
from rnnengine.kernels import activation_codes as ac
from rnnengine.kernels import contract, reference

pytestmark = pytest.mark.skipif(not kernels.cython_available(), reason="Cython kernels not built")

if kernels.cython_available():
    from rnnengine.kernels import _cy_blas, _cy_gru, _cy_lstm, _cy_simple_rnn

CELLS = ("simple_rnn", "lstm", "gru")
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}


@pytest.fixture
def split_everything():
    """Two threads, and every eligible call split whatever its weights' size."""
    previous_threads = config.set_num_threads(2)
    previous = kernels._set_split_thresholds(0, 0)
    _cy_blas.pool_set_adaptive(False)
    yield
    _cy_blas.pool_set_adaptive(True)
    kernels._set_split_thresholds(*previous)
    config.set_num_threads(previous_threads)


def _weights(rng, cell, C, H):
    G = GATES[cell] * H
    kernel = (rng.standard_normal((C, G)) * 0.3).astype(np.float32)
    recurrent_kernel = (rng.standard_normal((H, G)) * 0.3 / np.sqrt(H / 16)).astype(np.float32)
    if cell == "gru":
        bias = (rng.standard_normal((2, G)) * 0.2).astype(np.float32)
    else:
        bias = (rng.standard_normal(G) * 0.2).astype(np.float32)
    return kernel, recurrent_kernel, bias


def _run(cell, x, h0, c0, kernel, recurrent_kernel, bias, activation, recurrent_activation,
         go_backwards, return_sequences, mask=None):
    """The Cython forward kernel on copies of the state: (y, h[, c])."""
    H = recurrent_kernel.shape[0]
    states = [h0.copy()] + ([c0.copy()] if cell == "lstm" else [])
    if cell == "gru":
        weights = (kernel, recurrent_kernel, np.ascontiguousarray(recurrent_kernel[:, 2 * H:]),
                   np.ascontiguousarray(bias[0]), np.ascontiguousarray(bias[1]))
    else:
        weights = (kernel, recurrent_kernel, bias)
    keep = contract.NO_MASK if mask is None else mask.astype(np.uint8)
    args = contract.forward_args(cell, x, states, weights, getattr(ac, activation.upper()),
                                 getattr(ac, recurrent_activation.upper()), go_backwards, return_sequences,
                                 keep=keep, fill=np.nan)
    _split_module(cell).__dict__[f"{cell}_forward"](*args)
    return (args[0],) + tuple(states)


def _reference(cell, x, h0, c0, kernel, recurrent_kernel, bias, activation,
               recurrent_activation, go_backwards, return_sequences, mask=None):
    f64 = [a.astype(np.float64) for a in (x, h0, c0, kernel, recurrent_kernel, bias)]
    x, h0, c0, kernel, recurrent_kernel, bias = f64
    masking = dict(mask=mask)
    if cell == "simple_rnn":
        y, h = reference.simple_rnn_forward(x, h0, kernel, recurrent_kernel, bias, activation,
                                            go_backwards, return_sequences, **masking)
        return y if return_sequences else y[:, None], h
    if cell == "lstm":
        y, h, c = reference.lstm_forward(x, h0, c0, kernel, recurrent_kernel, bias, activation,
                                         recurrent_activation, go_backwards, return_sequences, **masking)
        return y if return_sequences else y[:, None], h, c
    y, h = reference.gru_forward(x, h0, kernel, recurrent_kernel, bias, activation,
                                 recurrent_activation, go_backwards, return_sequences, True, **masking)
    return y if return_sequences else y[:, None], h


def _split_module(cell):
    return {"simple_rnn": _cy_simple_rnn, "lstm": _cy_lstm, "gru": _cy_gru}[cell]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,T,C,H", [(1, 6, 5, 32), (2, 5, 3, 48), (3, 4, 7, 100), (4, 9, 2, 64),
                                     (1, 17, 8, 130)])
@pytest.mark.parametrize("go_backwards,return_sequences", [(False, False), (True, True),
                                                           (False, True)])
def test_split_matches_reference_and_one_thread_cython(cell, B, T, C, H, go_backwards,
                                                       return_sequences, rng, split_everything):
    assert _split_module(cell).split_chunks(B, T, H) == 2
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    h0 = (rng.standard_normal((B, H)) * 0.5).astype(np.float32)
    c0 = (rng.standard_normal((B, H)) * 0.5).astype(np.float32)
    weights = _weights(rng, cell, C, H)
    activation, recurrent_activation = ("tanh", "sigmoid") if H != 48 else ("relu", "hard_sigmoid")
    args = (x, h0, c0, *weights, activation, recurrent_activation, go_backwards,
            return_sequences)
    calls = _cy_blas.pool_split_calls()
    split = _run(cell, *args)
    assert _cy_blas.pool_split_calls() == calls + 1 or not _cy_blas.pool_available()
    expected = _reference(cell, *args)
    config.set_num_threads(1)
    assert _split_module(cell).split_chunks(B, T, H) == 1
    alone = _run(cell, *args)
    for name, got, one, want in zip(("y", "h", "c"), split, alone, expected):
        assert np.isfinite(got).all(), name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5, err_msg=name)
        np.testing.assert_allclose(got, one, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("go_backwards,return_sequences", [(False, False), (True, True), (False, True)])
def test_masked_batch1_runs_split_cython(cell, go_backwards, return_sequences, rng, split_everything):
    """A masked batch-1 call runs its valid runs of steps through the split (one
    split call per run), Keras-exact; a masked batch of 2 does not split."""
    B, T, C, H = 1, 20, 5, 64
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    h0 = (rng.standard_normal((B, H)) * 0.5).astype(np.float32)
    weights = _weights(rng, cell, C, H)
    mask = np.ones((B, T), bool)
    mask[0, 5:7] = False  # a hole
    mask[0, 15:] = False  # trailing padding
    mask[0, 0] = False  # a leading masked step (Keras: output zeros, state h0)
    args = (x, h0, h0, *weights, "tanh", "sigmoid", go_backwards, return_sequences)
    calls = _cy_blas.pool_split_calls()
    got = _run(cell, *args, mask=mask)
    runs = 2  # [1, 5) and [7, 15), in either direction (each of at least SPLIT_MIN_STEPS)
    assert _cy_blas.pool_split_calls() == calls + runs or not _cy_blas.pool_available()
    want = _reference(cell, *args, mask=mask)
    for name, g, w in zip(("y", "h", "c"), got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=2e-5, err_msg=name)
    calls = _cy_blas.pool_split_calls()
    two = _run(cell, np.concatenate([x, x]), np.concatenate([h0, h0]), np.concatenate([h0, h0]), *weights,
               "tanh", "sigmoid", go_backwards, return_sequences, mask=np.concatenate([mask, mask]))
    assert _cy_blas.pool_split_calls() == calls
    for g, w in zip(two, got):
        np.testing.assert_allclose(g[:1], w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_split_decision_cython(cell, split_everything):
    module = _split_module(cell)
    assert module.split_chunks(1, 50, 128) == 2
    assert module.split_chunks(4, 50, 128) == 2
    assert module.split_chunks(5, 50, 128) == 1  # above 4 rows: the batch's own paths
    assert module.split_chunks(1, 3, 128) == 1  # too few steps to pay for packing
    assert module.split_chunks(1, 50, 31) == 1  # too few units for two chunks
    assert module.split_chunks(4, 50, 512) == 2
    assert module.split_chunks(4, 50, 513) == 1  # state larger than the split's buffers
    assert module.split_chunks(1, 50, 2049) == 1
    kernels._set_split_thresholds(128 * 128 * GATES[cell] + 1, 0)
    assert module.split_chunks(1, 50, 128) == 1  # below the weights threshold
    config.set_num_threads(1)
    kernels._set_split_thresholds(0, 0)
    assert module.split_chunks(1, 50, 128) == 1  # one thread allowed


def test_default_threshold_splits_standard_batch1_lstm_and_gru_cython():
    previous = config.set_num_threads(2)
    try:
        # L1's LSTM-128 (128 KB+ of recurrent weights) splits; L2's 32 units do not.
        assert _cy_lstm.split_chunks(1, 50, 128) == 2
        assert _cy_gru.split_chunks(1, 50, 128) == 2
        assert _cy_lstm.split_chunks(1, 20, 32) == 1
        assert _cy_simple_rnn.split_chunks(1, 50, 128) == 1
    finally:
        config.set_num_threads(previous)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs")
def test_helper_thread_takes_part_cython(rng, split_everything):
    if not _cy_blas.pool_available():
        pytest.skip("no POSIX threads in this build")
    x = rng.standard_normal((1, 200, 16)).astype(np.float32)
    h0 = np.zeros((1, 128), np.float32)
    weights = _weights(rng, "lstm", 16, 128)
    args = (x, h0, h0, *weights, "tanh", "sigmoid", False, False)
    expected = _run("lstm", *args)
    before = _cy_blas.pool_helper_tickets()
    deadline = time.monotonic() + 10
    while _cy_blas.pool_helper_tickets() == before and time.monotonic() < deadline:
        got = _run("lstm", *args)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
    assert _cy_blas.pool_helper_tickets() > before


def test_concurrent_split_calls_stay_correct_cython(rng, split_everything):
    """Two Python threads at once: one owns the split, the other runs alone
    (or both alone); every result is the one-thread result, bit for bit."""
    cases = []
    for cell in ("lstm", "gru"):
        x = rng.standard_normal((2, 30, 8)).astype(np.float32)
        h0 = (rng.standard_normal((2, 64)) * 0.5).astype(np.float32)
        args = (x, h0, h0, *_weights(rng, cell, 8, 64), "tanh", "sigmoid", True, True)
        cases.append((cell, args, _run(cell, *args)))
    errors = []

    def work(cell, args, expected):
        try:
            for _ in range(200):
                for a, b in zip(_run(cell, *args), expected):
                    np.testing.assert_array_equal(a, b)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=case) for case in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_split_works_in_a_forked_child_cython(rng, split_everything):
    """The helper thread does not survive fork: a child starts its own."""
    x = rng.standard_normal((1, 40, 8)).astype(np.float32)
    h0 = np.zeros((1, 64), np.float32)
    args = (x, h0, h0, *_weights(rng, "gru", 8, 64), "tanh", "sigmoid", False, False)
    expected = _run("gru", *args)
    pid = os.fork()
    if pid == 0:  # child: exit status says whether every call matched
        status = 1
        try:
            ok = all(np.array_equal(a, b) for _ in range(50)
                     for a, b in zip(_run("gru", *args), expected))
            status = 0 if ok else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_pool_times_both_ways_and_stays_correct_cython(rng, split_everything):
    """Adaptive (the default): the pool runs some calls of a kind split and
    some alone, times both, and every answer is the same."""
    if not _cy_blas.pool_available():
        pytest.skip("no POSIX threads in this build")
    _cy_blas.pool_set_adaptive(True)
    H = 80  # a kind of call no other test makes
    x = rng.standard_normal((1, 12, 4)).astype(np.float32)
    h0 = (rng.standard_normal((1, H)) * 0.5).astype(np.float32)
    args = (x, h0, h0, *_weights(rng, "lstm", 4, H), "tanh", "sigmoid", False, True)
    expected = _run("lstm", *args)
    for _ in range(40):
        got = _run("lstm", *args)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    rows = [r for r in _cy_blas.pool_tuning() if r["H"] == H and r["B"] == 1]
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["calls"] >= 40
    assert row["timed_split"] >= 3 and row["timed_alone"] >= 3, row
    assert row["us_per_step_alone"] > 0 and row["us_per_step_split"] > 0, row


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("aligned", [True, False])
def test_split_reads_aligned_weights_in_place_and_packs_others_cython(cell, aligned, rng,
                                                                      split_everything):
    """Both ways a chunk reads its columns: in place (64-byte aligned kernel,
    H a multiple of 16: a layer's own weights) and packed (anything else)."""
    from rnnengine._validation import aligned_empty
    H, C = 64, 6
    x = rng.standard_normal((2, 9, C)).astype(np.float32)
    h0 = (rng.standard_normal((2, H)) * 0.5).astype(np.float32)
    kernel, recurrent_kernel, bias = _weights(rng, cell, C, H)
    buf = aligned_empty((recurrent_kernel.size + 16,), np.float32)
    offset = 0 if aligned else 1  # one float past a cache line: every row mid line
    rk = buf[offset:offset + recurrent_kernel.size].reshape(recurrent_kernel.shape)
    rk[...] = recurrent_kernel
    assert (rk.ctypes.data % 64 == 0) == aligned
    args = (x, h0, h0, kernel, rk, bias, "tanh", "sigmoid", False, True)
    calls = _cy_blas.pool_split_calls()
    got = _run(cell, *args)
    assert _cy_blas.pool_split_calls() == calls + 1 or not _cy_blas.pool_available()
    for name, a, b in zip(("y", "h", "c"), got, _reference(cell, *args)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5, err_msg=name)


def test_layer_weights_are_cache_line_aligned():
    from rnnengine._validation import aligned_empty
    from rnnengine.layers import LSTM, Input
    from rnnengine.models import Sequential
    for shape, dtype in (((3, 5), np.float32), ((7,), np.float64), ((0, 4), np.float32)):
        a = aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
        assert a.size == 0 or a.ctypes.data % 64 == 0
    model = Sequential([Input(shape=(4, 3)), LSTM(20)])
    layer = model.layers[-1]
    assert all(w.ctypes.data % 64 == 0 for w in layer._values)
    model.set_weights([w + 1 for w in model.get_weights()])
    assert all(w.ctypes.data % 64 == 0 for w in layer._values)
