"""``recurrent_dropout`` in training: Keras 3's masks, exact gradients.

Keras 3 with ``recurrent_dropout > 0`` runs LSTM and GRU cells with
``implementation=1``: one input mask and one ``h_tm1`` mask per gate (SimpleRNN:
one of each), fixed over the sequence. rnnengine draws its own masks (NumPy's
generator), so these tests inject the same masks on both sides: into rnnengine's
layer (``_draw_rdrop_masks``) and into Keras's cell (its cached
``_dropout_mask`` / ``_recurrent_dropout_mask``, which ``DropoutRNNCell`` reuses
while set). Then

- the float64 gradient matches central finite differences of the training-mode
  loss (no Keras involved), plain and masked sequences, every cell variant;
- one ``SGD(learning_rate=1)`` step equals minus the gradient TensorFlow's
  ``GradientTape`` takes through Keras's own layer with those masks.

Every test runs on both kernel backends (the ``backend`` fixture): the
``*_rdrop`` kernels exist in Numba (numba_rdrop.py) and Cython (src/_rdrop.pyx).
"""
import numpy as np
import pytest

import rnnengine
from rnnengine import layers as L
from rnnengine.models import Sequential
from tests.keras_oracle import keras

B, T, C = 5, 6, 3
H = 4
GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}

CASES = [("SimpleRNN", {}), ("LSTM", {}), ("GRU", {}), ("GRU", {"reset_after": False}),
         ("LSTM", {"go_backwards": True, "return_sequences": True}),
         ("GRU", {"return_sequences": True, "go_backwards": True}),
         ("SimpleRNN", {"return_sequences": True})]
IDS = [c + "-" + "-".join(f"{k}={v}" for k, v in kw.items()) for c, kw in CASES]


def _masks(rng, K, rate_x, rate_h, dtype):
    def one(shape, rate):
        if rate == 0:
            return np.ones(shape, dtype)
        keep = rng.random(shape) >= rate
        return (keep * (1.0 / (1.0 - rate))).astype(dtype)
    return one((K, B, C), rate_x), one((K, B, H), rate_h)


def _inject(layer, dp, rdp):
    """Make ``layer`` use the masks ``dp`` (K, B, C) and ``rdp`` (K, B, H) in training."""
    draw = layer._draw_rdrop_masks

    def fixed(buffers, C):
        draw(buffers, C)  # packs the per-gate weight blocks too
        np.copyto(buffers["rd_dp"], dp)
        np.copyto(buffers["rd_rdp"], rdp)

    layer._draw_rdrop_masks = fixed


def _fd_check(rng, model, x, y, tol=1e-6, mask=None):
    """Backprop (one SGD(1) step) vs central differences of the training-mode mse;
    ``mask`` (B, T): the loss's timestep mask, as Keras's masked mean applies it."""
    weights = [rng.standard_normal(w.shape) * 0.5 for w in model.get_weights()]
    model.set_weights(weights)
    model.compile(optimizer=rnnengine.optimizers.SGD(learning_rate=1.0), loss="mse")
    model.train_on_batch(x, y)
    grads = [w0 - w1 for w0, w1 in zip(weights, model.get_weights())]

    def loss(ws):
        model.set_weights(ws)
        values = np.mean((model(x, training=True) - y) ** 2, axis=-1)
        if mask is None:
            return float(np.mean(values))
        return float(np.sum(values * mask) / np.sum(mask))

    eps = 1e-6
    checked = 0
    for i, w in enumerate(weights):
        flat = w.reshape(-1)
        for j in rng.choice(flat.size, size=min(flat.size, 8), replace=False):
            plus = [v.copy() for v in weights]
            minus = [v.copy() for v in weights]
            plus[i].reshape(-1)[j] += eps
            minus[i].reshape(-1)[j] -= eps
            numeric = (loss(plus) - loss(minus)) / (2 * eps)
            got = grads[i].reshape(-1)[j]
            assert abs(got - numeric) <= tol * max(1.0, abs(numeric)), \
                f"weight {i} {w.shape} entry {j}: backprop {got} vs finite difference {numeric}"
            checked += 1
    return checked


@pytest.mark.parametrize("cell,kw", CASES, ids=IDS)
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_gradient_matches_float64_finite_differences(backend, rng, cell, kw, dropout):
    layer = getattr(L, cell)(H, dropout=dropout, recurrent_dropout=0.4, dtype="float64", **kw)
    model = Sequential([L.Input((T, C), dtype="float64"), layer, L.Dense(2, dtype="float64")])
    dp, rdp = _masks(rng, GATES[cell], dropout, 0.4, np.float64)
    _inject(layer, dp, rdp)
    x = rng.standard_normal((B, T, C))
    y = rng.standard_normal((B, T, 2) if kw.get("return_sequences") else (B, 2))
    assert _fd_check(rng, model, x, y) > 20


@pytest.mark.parametrize("cell,kw", [("SimpleRNN", {}), ("LSTM", {"return_sequences": True}),
                                     ("GRU", {"reset_after": False, "go_backwards": True})],
                         ids=["SimpleRNN", "LSTM-seq", "GRU-before-backwards"])
def test_masked_sequence_gradient_matches_finite_differences(backend, rng, cell, kw):
    """A Masking layer upstream: the step-by-step path with recurrent dropout."""
    layer = getattr(L, cell)(H, dropout=0.2, recurrent_dropout=0.5, dtype="float64", **kw)
    model = Sequential([L.Input((T, C), dtype="float64"), L.Masking(dtype="float64"), layer,
                        L.Dense(2, dtype="float64")])
    dp, rdp = _masks(rng, GATES[cell], 0.2, 0.5, np.float64)
    _inject(layer, dp, rdp)
    x = rng.standard_normal((B, T, C))
    x[1, 4:] = 0.0
    x[3, :2] = 0.0
    seq = kw.get("return_sequences", False)
    y = rng.standard_normal((B, T, 2) if seq else (B, 2))
    assert _fd_check(rng, model, x, y, mask=np.any(x != 0, axis=-1) if seq else None) > 20


def _keras_twin(cell, kw, dropout):
    k = keras()
    km = k.Sequential([k.Input((T, C)), getattr(k.layers, cell)(H, dropout=dropout, recurrent_dropout=0.4, **kw),
                       k.layers.Dense(2)])
    rm = Sequential([L.Input((T, C)), getattr(L, cell)(H, dropout=dropout, recurrent_dropout=0.4, **kw),
                     L.Dense(2)])
    rm.set_weights(km.get_weights())
    return km, rm


def _keras_inject(cell_obj, dp, rdp, dropout):
    import tensorflow as tf

    many = getattr(cell_obj, "dropout_mask_count", None) is not None
    as_t = [tf.constant(m) for m in dp]
    cell_obj._dropout_mask = (as_t if many else as_t[0]) if dropout > 0 else None
    as_t = [tf.constant(m) for m in rdp]
    cell_obj._recurrent_dropout_mask = as_t if many else as_t[0]


@pytest.mark.parametrize("cell,kw", CASES, ids=IDS)
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_sgd_step_is_gradient_tape_gradient_with_the_same_masks(backend, rng, cell, kw, dropout):
    import tensorflow as tf

    km, rm = _keras_twin(cell, kw, dropout)
    dp, rdp = _masks(rng, GATES[cell], dropout, 0.4, np.float32)
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    y = rng.standard_normal((B, T, 2) if kw.get("return_sequences") else (B, 2)).astype(np.float32)
    _keras_inject(km.layers[0].cell, dp, rdp, dropout)
    with tf.GradientTape() as tape:
        k_loss = keras().losses.MeanSquaredError()(y, km(x, training=True))
    grads = tape.gradient(k_loss, km.trainable_variables)
    _inject(rm.layers[0], dp, rdp)
    before = rm.get_weights()
    rm.compile(optimizer=rnnengine.optimizers.SGD(learning_rate=1.0), loss="mse")
    r_loss = rm.train_on_batch(x, y)
    assert r_loss == pytest.approx(float(k_loss), rel=1e-5)
    for v, w0, w1, g in zip(km.trainable_variables, before, rm.get_weights(), grads):
        np.testing.assert_allclose(w0 - w1, g.numpy(), rtol=1e-4, atol=1e-5, err_msg=f"d{v.path}")


def test_seeded_masks_repeat_and_inference_ignores_them(backend, rng):
    x = rng.standard_normal((8, T, C)).astype(np.float32)
    y = rng.standard_normal((8, 2)).astype(np.float32)

    def run():
        m = Sequential([L.Input((T, C)), L.LSTM(H, recurrent_dropout=0.5, dropout=0.2, seed=7), L.Dense(2)])
        m.set_weights([np.full(w.shape, 0.1, np.float32) for w in m.get_weights()])
        m.compile(optimizer=rnnengine.optimizers.SGD(0.1), loss="mse")
        losses = [m.train_on_batch(x, y) for _ in range(3)]
        return m, losses

    m1, l1 = run()
    m2, l2 = run()
    assert l1 == l2  # same seed, same masks
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    # evaluate and predict run without dropout: the same as without recurrent_dropout
    plain = Sequential([L.Input((T, C)), L.LSTM(H), L.Dense(2)])
    plain.set_weights(m1.get_weights())
    np.testing.assert_allclose(m1.predict(x, verbose=0), plain.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    plain.compile(optimizer="sgd", loss="mse")
    assert m1.evaluate(x, y, verbose=0) == pytest.approx(plain.evaluate(x, y, verbose=0), rel=1e-6)


def test_fit_trains_every_cell_with_recurrent_dropout(backend, rng):
    x = rng.standard_normal((32, T, C)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[(x[:, :, 0].sum(axis=1) > 0).astype(int) + (x[:, 0, 1] > 1)]
    for cell in ("SimpleRNN", "LSTM", "GRU"):
        rnnengine.training.set_random_seed(3)
        model = Sequential([L.Input((T, C)), getattr(L, cell)(8, recurrent_dropout=0.3, dropout=0.1),
                            L.Dense(3, activation="softmax")])
        model.compile(optimizer=rnnengine.optimizers.Adam(0.02), loss="categorical_crossentropy")
        first = model.evaluate(x, y, verbose=0)
        model.fit(x, y, epochs=10, batch_size=8, verbose=0)
        assert model.evaluate(x, y, verbose=0) < first, cell


def test_cython_backend_runs_the_rdrop_kernels(rng, monkeypatch):
    """With the Cython backend selected, recurrent-dropout training calls the
    Cython rdrop kernels and the Cython activation backward (no Numba fallback)."""
    from rnnengine import kernels

    if not kernels.cython_available():
        pytest.fail(f"Cython kernels are not built: {kernels.CYTHON_IMPORT_ERROR}")
    called = []
    get_kernel = kernels.get_kernel

    def spy(cell, pass_="forward", backend=None, B=1):
        fn = get_kernel(cell, pass_, backend, B)
        called.append((cell, pass_, fn))
        return fn

    monkeypatch.setattr(kernels, "get_kernel", spy)
    x = rng.standard_normal((8, T, C)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
    previous = rnnengine.config.set_kernels("cython")
    try:
        for cell in ("SimpleRNN", "LSTM", "GRU"):
            model = Sequential([L.Input((T, C)), getattr(L, cell)(H, recurrent_dropout=0.3, dropout=0.2),
                                L.Dense(3, activation="tanh"), L.Activation("softmax")])
            model.compile(optimizer="sgd", loss="mse")
            assert np.isfinite(model.train_on_batch(x, y))
    finally:
        rnnengine.config.set_kernels(previous)
    used = {(cell, pass_): fn for cell, pass_, fn in called}
    for cell in ("simple_rnn", "lstm", "gru"):
        for pass_ in ("forward_train_rdrop", "backward_rdrop"):
            assert used[(cell, pass_)] is kernels._CYTHON[(cell, pass_)], (cell, pass_)
    assert used[("activation", "backward")] is kernels._CYTHON[("activation", "backward")]
