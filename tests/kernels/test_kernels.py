"""Both kernel backends against the NumPy reference, across options and edge shapes."""
import numpy as np
import pytest

from rnnengine import kernels
from rnnengine.kernels import _activations, contract, reference
from tests.conftest import assert_close

CASES = [
    # (B, T, C, H)
    (3, 7, 5, 4),
    (1, 1, 3, 2),   # one step, batch 1
    (1, 20, 8, 1),  # one unit
    (1000, 3, 4, 5),  # large batch
    (2, 300, 3, 6),  # long sequence
]


def _weights(rng, dtype, C, H, K, gru_bias_rows=None):
    kernel = (rng.standard_normal((C, K * H)) * 0.5).astype(dtype)
    recurrent_kernel = (rng.standard_normal((H, K * H)) * 0.5 / np.sqrt(H)).astype(dtype)
    shape = (K * H,) if gru_bias_rows is None else (gru_bias_rows, K * H)
    bias = rng.standard_normal(shape).astype(dtype)
    for w in (kernel, recurrent_kernel, bias):
        w.setflags(write=False)  # kernels must accept read-only weights
    return kernel, recurrent_kernel, bias


def run_kernel(cell, backend, x, h0, c0, kernel, recurrent_kernel, bias, activation, recurrent_activation,
               go_backwards, return_sequences, reset_after=True, mask=None, zero_output_for_mask=False):
    """Call the forward kernel through the contract (kernels/contract.py) with
    fresh buffers; returns (y, h[, c])."""
    H = h0.shape[1]
    dtype = x.dtype
    fn = kernels.get_kernel(cell, "forward", backend)
    states = [h0.copy()] + ([c0.copy()] if cell == "lstm" else [])
    if cell == "gru":
        if reset_after:
            weights = (kernel, recurrent_kernel, np.ascontiguousarray(recurrent_kernel[:, 2 * H:]),
                       np.ascontiguousarray(bias[0]), np.ascontiguousarray(bias[1]))
        else:
            weights = (kernel, recurrent_kernel, np.ascontiguousarray(recurrent_kernel[:, 2 * H:]), bias,
                       np.zeros(3 * H, dtype))
    else:
        weights = (kernel, recurrent_kernel, bias)
    keep = contract.NO_MASK if mask is None else np.ascontiguousarray(mask, np.uint8)
    # Scratch (and y) filled with garbage: a kernel must not depend on it.
    args = contract.forward_args(cell, x, states, weights, _activations.ELEMENTWISE_CODES[activation],
                                 _activations.ELEMENTWISE_CODES[recurrent_activation], go_backwards,
                                 return_sequences, reset_after, keep, zero_output_for_mask, fill=np.nan)
    contract.check(cell, "forward", args)
    fn(*args)
    y = args[0]
    out = (y if return_sequences else y[:, 0],) + tuple(states)
    return out


def run_reference(cell, x, h0, c0, kernel, recurrent_kernel, bias, activation, recurrent_activation,
                  go_backwards, return_sequences, reset_after=True, mask=None, zero_output_for_mask=False):
    f64 = [np.asarray(a, np.float64) for a in (x, h0, c0, kernel, recurrent_kernel, bias)]
    x, h0, c0, kernel, recurrent_kernel, bias = f64
    masking = dict(mask=mask, zero_output_for_mask=zero_output_for_mask)
    if cell == "simple_rnn":
        return reference.simple_rnn_forward(x, h0, kernel, recurrent_kernel, bias, activation,
                                            go_backwards, return_sequences, **masking)
    if cell == "lstm":
        return reference.lstm_forward(x, h0, c0, kernel, recurrent_kernel, bias, activation,
                                      recurrent_activation, go_backwards, return_sequences, **masking)
    return reference.gru_forward(x, h0, kernel, recurrent_kernel, bias, activation, recurrent_activation,
                                 go_backwards, return_sequences, reset_after, **masking)


CELL_VARIANTS = [("simple_rnn", True), ("lstm", True), ("gru", True), ("gru", False)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,reset_after", CELL_VARIANTS)
@pytest.mark.parametrize("shape", CASES, ids=lambda s: "B{}T{}C{}H{}".format(*s))
@pytest.mark.parametrize("go_backwards,return_sequences", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_kernel_matches_reference(backend, rng, dtype, cell, reset_after, shape, go_backwards,
                                  return_sequences):
    B, T, C, H = shape
    K = {"simple_rnn": 1, "lstm": 4, "gru": 3}[cell]
    x = rng.standard_normal((B, T, C)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    c0 = rng.standard_normal((B, H)).astype(dtype)
    weights = _weights(rng, dtype, C, H, K, 2 if (cell == "gru" and reset_after) else None)
    got = run_kernel(cell, backend, x, h0, c0, *weights, "tanh", "sigmoid", go_backwards,
                     return_sequences, reset_after)
    want = run_reference(cell, x, h0, c0, *weights, "tanh", "sigmoid", go_backwards,
                         return_sequences, reset_after)
    for name, g, w in zip(("y", "h", "c"), got, want):
        assert g.dtype == dtype
        assert_close(g, w, dtype, f"{cell} {name}")


def _masks(rng, B, T):
    """Keras masks as they come: random holes, trailing padding (Embedding(mask_zero)
    of a padded batch), leading padding, a row with no valid step, a full row."""
    holes = rng.random((B, T)) > 0.3
    lengths = rng.integers(0, T + 1, B)
    trailing = np.arange(T)[None, :] < lengths[:, None]
    leading = trailing[:, ::-1].copy()
    mixed = holes.copy()
    mixed[0] = False
    if B > 1:
        mixed[-1] = True
    return {"holes": holes, "trailing": trailing, "leading": leading, "mixed": mixed}


MASK_SHAPES = [(1, 9, 3, 4), (3, 7, 5, 4), (64, 5, 3, 6)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,reset_after", CELL_VARIANTS)
@pytest.mark.parametrize("shape", MASK_SHAPES, ids=lambda s: "B{}T{}C{}H{}".format(*s))
@pytest.mark.parametrize("go_backwards,return_sequences", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
def test_masked_kernel_matches_reference(backend, rng, dtype, cell, reset_after, shape, go_backwards,
                                         return_sequences, zero_output_for_mask):
    """The forward kernels' keep argument is Keras's masked recurrence
    (reference.masked_forward): state carried, output repeated or zeroed."""
    B, T, C, H = shape
    K = {"simple_rnn": 1, "lstm": 4, "gru": 3}[cell]
    x = rng.standard_normal((B, T, C)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    c0 = rng.standard_normal((B, H)).astype(dtype)
    weights = _weights(rng, dtype, C, H, K, 2 if (cell == "gru" and reset_after) else None)
    for kind, mask in _masks(rng, B, T).items():
        got = run_kernel(cell, backend, x, h0, c0, *weights, "tanh", "sigmoid", go_backwards,
                         return_sequences, reset_after, mask, zero_output_for_mask)
        want = run_reference(cell, x, h0, c0, *weights, "tanh", "sigmoid", go_backwards,
                             return_sequences, reset_after, mask, zero_output_for_mask)
        for name, g, w in zip(("y", "h", "c"), got, want):
            assert_close(g, w, dtype, f"{cell} {kind} mask {name}")


def test_masked_rows_are_independent(backend, rng):
    """A masked batch gives each row what it gives alone (the batch-1 path runs
    valid runs of steps, the batched path skips masked rows), and an all-ones
    mask gives the unmasked result."""
    B, T, C, H = 4, 12, 3, 5
    x = rng.standard_normal((B, T, C))
    h0 = np.zeros((B, H))
    weights = _weights(rng, np.float64, C, H, 4)
    mask = _masks(rng, B, T)["holes"]
    whole = run_kernel("lstm", backend, x, h0, h0, *weights, "tanh", "sigmoid", 0, 1, mask=mask)
    for b in range(B):
        alone = run_kernel("lstm", backend, x[b:b + 1], h0[:1], h0[:1], *weights, "tanh", "sigmoid", 0, 1,
                           mask=mask[b:b + 1])
        for g, w in zip(whole, alone):
            np.testing.assert_allclose(g[b:b + 1], w, rtol=1e-12, atol=1e-12)
    ones = run_kernel("lstm", backend, x, h0, h0, *weights, "tanh", "sigmoid", 0, 1, mask=np.ones((B, T), bool))
    plain = run_kernel("lstm", backend, x, h0, h0, *weights, "tanh", "sigmoid", 0, 1)
    for g, w in zip(ones, plain):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


ACTIVATIONS = sorted(_activations.ELEMENTWISE_CODES)


ACTIVATION_CASES = [(cell, reset_after, slot, act)
                    for cell, reset_after in CELL_VARIANTS
                    for slot in (("activation",) if cell == "simple_rnn" else ("activation", "recurrent_activation"))
                    for act in ACTIVATIONS]


@pytest.mark.parametrize("cell,reset_after,slot,activation", ACTIVATION_CASES)
def test_every_activation(backend, rng, cell, reset_after, slot, activation):
    """Each activation code in each slot, float64, against the reference formulas."""
    B, T, C, H = 2, 4, 3, 4
    K = {"simple_rnn": 1, "lstm": 4, "gru": 3}[cell]
    x = rng.standard_normal((B, T, C)) * 0.5
    h0 = rng.standard_normal((B, H)) * 0.5
    c0 = rng.standard_normal((B, H)) * 0.5
    # Small weights keep unbounded activations (relu, exponential) in range.
    weights = [w * 0.3 for w in _weights(rng, np.float64, C, H, K, 2 if (cell == "gru" and reset_after) else None)]
    act, ract = (activation, "sigmoid") if slot == "activation" else ("tanh", activation)
    got = run_kernel(cell, backend, x, h0, c0, *weights, act, ract, 0, 1, reset_after)
    want = run_reference(cell, x, h0, c0, *weights, act, ract, 0, 1, reset_after)
    for name, g, w in zip(("y", "h", "c"), got, want):
        assert np.isfinite(w).all()
        assert_close(g, w, np.float64, f"{cell} {slot}={activation} {name}")


@pytest.mark.parametrize("cell,reset_after", CELL_VARIANTS)
def test_nan_propagates(backend, rng, cell, reset_after):
    B, T, C, H = 2, 4, 3, 5
    K = {"simple_rnn": 1, "lstm": 4, "gru": 3}[cell]
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    x[1, 2, 0] = np.nan
    h0 = np.zeros((B, H), np.float32)
    weights = _weights(rng, np.float32, C, H, K, 2 if (cell == "gru" and reset_after) else None)
    y = run_kernel(cell, backend, x, h0, h0, *weights, "tanh", "sigmoid", 0, 1, reset_after)[0]
    assert np.isfinite(y[0]).all() and np.isfinite(y[1, :2]).all()
    assert np.isnan(y[1, 2:]).all()


def _float32_sigmoid_block(backend, x):
    """The backend's float32 gate-block sigmoid (what the recurrent kernels run) on x."""
    a = x.copy()
    if backend == "numba":
        _activations.activate_block(a, _activations.SIGMOID)
    else:  # the Cython activation kernel runs _gates.pxd's activate_block, as the cells do
        kernels.get_kernel("activation", "forward", "cython")(a.reshape(1, -1), _activations.SIGMOID)
    return a


def test_float32_sigmoid_block_is_tensorflows(backend):
    """float32 sigmoid is TensorFlow's (Eigen's logistic): within 4 ULP of tf.math.sigmoid
    (bit-identical where no FMA is contracted), and exactly 1.0 / 0.0 where it is:
    1.0 from 16.6355324 on, 0 below -87.34 (TF flushes denormals) and at -inf."""
    from tests.keras_oracle import keras

    f32 = np.float32
    edges = [16.6355324, -104.0, -87.33654, -9.0, 0.0]
    near = [np.nextafter(f32(e), f32(d) * np.inf, dtype=f32) for e in edges for d in (-1, 1)]
    x = np.concatenate([np.linspace(-120, 120, 480_001, dtype=f32),
                        np.linspace(16.0, 17.0, 20_001, dtype=f32),
                        np.array(edges + near + [np.inf, -np.inf, np.nan, -0.0, 1e30, -1e30, 1e-40], f32)])
    want = np.asarray(keras().ops.sigmoid(x))
    got = _float32_sigmoid_block(backend, x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(got[ok] == 1.0, want[ok] == 1.0)
    np.testing.assert_array_equal(got[ok] == 0.0, want[ok] == 0.0)
    ulps = np.abs(got[ok].view(np.int32).astype(np.int64) - want[ok].view(np.int32).astype(np.int64))
    assert ulps.max() <= 4, f"{ulps.max()} ULP from TensorFlow at x = {x[ok][ulps.argmax()]}"
    assert (ulps == 0).mean() > 0.99
    assert got[x == f32(16.6355324)] == 1.0 and got[x == np.nextafter(f32(16.6355324), f32(0))] < 1.0
    np.testing.assert_allclose(got[np.abs(x) < 80], 1 / (1 + np.exp(-x[np.abs(x) < 80].astype(np.float64))),
                               rtol=5e-7, atol=0)  # exp-accurate in the tail


def test_numba_and_cython_agree_in_float64(rng):
    """Numba and Cython are two implementations of one contract: float64 to 1e-12."""
    if not kernels.cython_available():
        pytest.fail(f"Cython kernels are not built: {kernels.CYTHON_IMPORT_ERROR}")
    B, T, C, H = 16, 30, 12, 24
    x = rng.standard_normal((B, T, C))
    h0 = rng.standard_normal((B, H))
    weights = _weights(rng, np.float64, C, H, 4)
    a = run_kernel("lstm", "numba", x, h0, h0, *weights, "tanh", "sigmoid", 1, 1)
    b = run_kernel("lstm", "cython", x, h0, h0, *weights, "tanh", "sigmoid", 1, 1)
    for g, w in zip(a, b):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_unknown_backend_and_cell_raise():
    with pytest.raises(ValueError, match="backend"):
        kernels.get_kernel("lstm", "forward", "fortran")
    with pytest.raises(ValueError, match="cell"):
        kernels.get_kernel("transformer", "forward", "numba")


@pytest.mark.parametrize("deterministic", [False, True], ids=["default", "deterministic"])
@pytest.mark.parametrize("cell,reset_after", CELL_VARIANTS)
def test_batch_split_across_threads_equals_one_thread(split_small_calls, rng, cell, reset_after,
                                                      deterministic):
    """A large call splits its batch into per-thread row blocks (Cython): the
    same bits in deterministic mode (row-invariant products), and to float32
    rounding by default (a BLAS GEMM of nb rows may sum in another order than
    one of B rows: OpenBLAS's AVX2 kernels do)."""
    import rnnengine

    if not kernels.cython_available():
        pytest.fail(f"Cython kernels are not built: {kernels.CYTHON_IMPORT_ERROR}")
    B, T, C, H = 61, 50, 16, 96  # odd B: uneven blocks; large enough to split
    K = {"simple_rnn": 1, "lstm": 4, "gru": 3}[cell]
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    weights = _weights(rng, np.float32, C, H, K, 2 if (cell == "gru" and reset_after) else None)
    previous = rnnengine.config.set_num_threads(1)
    try:
        with rnnengine.deterministic(deterministic):
            serial = run_kernel(cell, "cython", x, h0, h0, *weights, "tanh", "sigmoid", 1, 1, reset_after)
            rnnengine.config.set_num_threads(3)
            split = run_kernel(cell, "cython", x, h0, h0, *weights, "tanh", "sigmoid", 1, 1, reset_after)
    finally:
        rnnengine.config.set_num_threads(previous)
    for a, b in zip(serial, split):
        if deterministic:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_num_threads_setting():
    import rnnengine

    with pytest.raises(ValueError, match="positive integer"):
        rnnengine.config.set_num_threads(0)
    previous = rnnengine.config.set_num_threads(2)
    assert rnnengine.config.get_num_threads() == 2
    assert all(m.get_num_threads() == 2 for m in kernels._CYTHON_MODULES if hasattr(m, "get_num_threads"))
    rnnengine.config.set_num_threads(previous)


def test_split_threshold_setting():
    """Calls split over threads only from 2**27 multiply-adds by default (a late
    worker thread costs more than a smaller call saves); settable for tests."""
    if not kernels.cython_available():
        pytest.fail(f"Cython kernels are not built: {kernels.CYTHON_IMPORT_ERROR}")
    modules = [m for m in kernels._CYTHON_MODULES if hasattr(m, "set_min_work_to_split")]
    assert len(modules) == 5  # simple_rnn, lstm, gru, the recurrent-dropout kernels and the fused plans
    assert {m.get_min_work_to_split() for m in modules} == {1 << 27}
    previous = kernels._set_min_work_to_split(1000)
    try:
        assert previous == 1 << 27
        assert {m.get_min_work_to_split() for m in modules} == {1000}
        with pytest.raises(ValueError, match=">= 0"):
            kernels._set_min_work_to_split(-1)
    finally:
        kernels._set_min_work_to_split(previous)
