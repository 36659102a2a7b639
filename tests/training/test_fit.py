"""fit / evaluate semantics against Keras, callbacks, dropout in training, and errors."""
import os
import warnings

import numpy as np
import pytest

import rnnengine
from rnnengine import callbacks, layers as L
from rnnengine.models import Sequential
from tests.keras_oracle import keras
from tests.training.helpers import check_weights, twin


def _seq(l, M, S):
    return S([l.Input((6, 3)), l.LSTM(7), l.Dense(4, activation="softmax")])


def _data(rng, n=50):
    x = rng.standard_normal((n, 6, 3)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, n)]
    return x, y


def test_fit_without_shuffle_matches_keras_history_and_weights(rng):
    """Batching (a partial last batch), validation_split (the last 25%), epoch means."""
    km, rm = twin(_seq)
    x, y = _data(rng)
    k = keras()
    km.compile(optimizer=k.optimizers.SGD(learning_rate=0.3), loss="categorical_crossentropy", metrics=["accuracy"])
    rm.compile(optimizer=rnnengine.optimizers.SGD(learning_rate=0.3), loss="categorical_crossentropy",
               metrics=["accuracy"])
    kh = km.fit(x, y, batch_size=16, epochs=3, shuffle=False, validation_split=0.25, verbose=0)
    rh = rm.fit(x, y, batch_size=16, epochs=3, shuffle=False, validation_split=0.25, verbose=0)
    assert list(rh.history) == list(kh.history)
    for key in kh.history:
        np.testing.assert_allclose(rh.history[key], kh.history[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert rh.epoch == kh.epoch == [0, 1, 2]
    check_weights("after fit", rm.get_weights(), km.get_weights())
    k_eval = km.evaluate(x, y, batch_size=7, verbose=0)
    r_eval = rm.evaluate(x, y, batch_size=7, verbose=0)
    np.testing.assert_allclose(r_eval, k_eval, rtol=1e-5)
    assert rm.evaluate(x, y, verbose=0, return_dict=True).keys() == {"loss", "accuracy"}
    assert rm.metrics_names == ["loss", "accuracy"]


def test_fit_with_validation_data_and_initial_epoch(rng):
    km, rm = twin(_seq)
    x, y = _data(rng)
    k = keras()
    km.compile(optimizer=k.optimizers.Adam(), loss="categorical_crossentropy")
    rm.compile(optimizer="adam", loss="categorical_crossentropy")
    kh = km.fit(x[:40], y[:40], batch_size=8, epochs=3, initial_epoch=1, shuffle=False,
                validation_data=(x[40:], y[40:]), verbose=0)
    rh = rm.fit(x[:40], y[:40], batch_size=8, epochs=3, initial_epoch=1, shuffle=False,
                validation_data=(x[40:], y[40:]), verbose=0)
    assert rh.epoch == kh.epoch == [1, 2]
    for key in kh.history:
        np.testing.assert_allclose(rh.history[key], kh.history[key], rtol=1e-5, err_msg=key)
    assert rm.evaluate(x, y, verbose=0) == pytest.approx(km.evaluate(x, y, verbose=0), rel=1e-5)


def test_shuffle_is_seeded_and_changes_the_order(rng):
    x, y = _data(rng, 64)
    runs = []
    for seed in (1, 1, 2):
        model = Sequential([L.Input((6, 3)), L.SimpleRNN(5), L.Dense(4, activation="softmax")])
        model.set_weights([np.full(w.shape, 0.1, np.float32) for w in model.get_weights()])
        model.compile(optimizer="sgd", loss="categorical_crossentropy")
        rnnengine.training.set_random_seed(seed)
        runs.append(model.fit(x, y, batch_size=8, epochs=2, verbose=0).history["loss"])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_progress_bar_output(rng, capsys):
    x, y = _data(rng, 20)
    model = Sequential([L.Input((6, 3)), L.GRU(4), L.Dense(4, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=8, epochs=2, validation_split=0.2)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert "2/2" in out and "accuracy:" in out and "val_loss:" in out
    model.fit(x, y, batch_size=8, epochs=1, verbose=2)
    assert "accuracy:" in capsys.readouterr().out
    model.evaluate(x, y, verbose=0)
    assert capsys.readouterr().out == ""


def test_early_stopping_and_checkpoint(rng, tmp_path):
    x, y = _data(rng, 40)
    model = Sequential([L.Input((6, 3)), L.SimpleRNN(5), L.Dense(4, activation="softmax")])
    model.compile(optimizer=rnnengine.optimizers.SGD(learning_rate=50.0), loss="categorical_crossentropy")
    seen = []
    stop = callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    ckpt = callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch:02d}.weights.h5"), monitor="loss",
                                     save_weights_only=True, save_best_only=True)
    log = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs["loss"]))
    history = model.fit(x, y, epochs=30, batch_size=8, callbacks=[stop, ckpt, log], verbose=0, shuffle=False)
    assert len(history.epoch) < 30, "a learning rate this large must diverge and stop early"
    assert len(seen) == len(history.epoch)
    best = int(np.argmin(seen))
    saved = sorted(os.listdir(tmp_path))
    assert saved[-1] == f"m-{best + 1:02d}.weights.h5"
    # restore_best_weights: the model holds the best epoch's weights, which the checkpoint saved
    restored = model.get_weights()
    model.load_weights(str(tmp_path / saved[-1]))
    check_weights("restored best", restored, model.get_weights(), atol=0, rtol=0)


def test_model_checkpoint_full_model_loads_in_keras(rng, tmp_path):
    x, y = _data(rng, 16)
    model = Sequential([L.Input((6, 3)), L.GRU(4), L.Dense(4, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.ModelCheckpoint(str(tmp_path / "m.keras"),
                                                                              monitor="loss")])
    loaded = keras().saving.load_model(str(tmp_path / "m.keras"))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x), atol=1e-5)


def test_dropout_is_keras_inverted_dropout_and_seeded(rng):
    layer = L.Dropout(0.25, seed=3)
    model = Sequential([L.Input((200, 50)), layer])
    x = np.ones((4, 200, 50), np.float32)
    np.testing.assert_array_equal(model.predict(x), x)  # identity at inference
    y = model(x, training=True)
    kept = y != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    again = Sequential([L.Input((200, 50)), L.Dropout(0.25, seed=3)])(x, training=True)
    np.testing.assert_array_equal(again, y)
    noise = Sequential([L.Input((200, 50)), L.Dropout(0.5, noise_shape=(None, 1, 50), seed=1)])(x, training=True)
    assert (noise == noise[:, :1]).all()  # one mask for every timestep


def test_training_with_dropout_layers_converges_and_masks_gradients(rng):
    x, y = _data(rng, 64)
    model = Sequential([L.Input((6, 3)), L.LSTM(16, dropout=0.2, seed=1), L.Dropout(0.3, seed=2),
                        L.Dense(4, activation="softmax")])
    model.compile(optimizer=rnnengine.optimizers.Adam(0.02), loss="categorical_crossentropy")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < first
    # An input feature that dropout always removes gets no gradient on its kernel row.
    model = Sequential([L.Input((6, 3)), L.SimpleRNN(4, dropout=0.999999, seed=0), L.Dense(4, activation="softmax")])
    model.compile(optimizer=rnnengine.optimizers.SGD(1.0), loss="categorical_crossentropy")
    before = model.get_weights()
    model.train_on_batch(x, y)
    np.testing.assert_array_equal(model.get_weights()[0], before[0])


def test_recurrent_dropout_trains(rng):
    # Keras 3's recurrent dropout (tests/training/test_recurrent_dropout.py checks its gradients).
    x, y = _data(rng, 8)
    model = Sequential([L.Input((6, 3)), L.GRU(4, recurrent_dropout=0.2, name="my_gru"),
                        L.Dense(4, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    assert np.isfinite(model.evaluate(x, y, verbose=0))  # inference mode: identity, as in Keras
    history = model.fit(x, y, verbose=0, epochs=2)
    assert np.all(np.isfinite(history.history["loss"]))


def test_training_under_cython_backend_runs_cython_kernels(rng, monkeypatch):
    """The Cython backend trains on its own kernels: no fallback, no warning."""
    from rnnengine import kernels

    if not kernels.cython_available():
        pytest.fail(f"Cython kernels are not built: {kernels.CYTHON_IMPORT_ERROR}")
    x, y = _data(rng, 8)
    called = []
    get_kernel = kernels.get_kernel

    def spy(cell, pass_="forward", backend=None, B=1):
        fn = get_kernel(cell, pass_, backend, B)
        called.append((cell, pass_, fn))
        return fn

    monkeypatch.setattr(kernels, "get_kernel", spy)
    previous = rnnengine.config.set_kernels("cython")
    try:
        model = Sequential([L.Input((6, 3)), L.LSTM(4), L.Dense(4, activation="softmax")])
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loss = model.train_on_batch(x, y)
        assert np.isfinite(loss)
    finally:
        rnnengine.config.set_kernels(previous)
    used = {(cell, pass_): fn for cell, pass_, fn in called if cell == "lstm"}
    for pass_ in ("forward_train", "backward"):
        assert used[("lstm", pass_)] is kernels._CYTHON[("lstm", pass_)], pass_


def test_stateful_training_carries_state_between_batches(rng):
    x, y = _data(rng, 8)
    model = Sequential([L.Input((6, 3), batch_size=4), L.SimpleRNN(5, stateful=True),
                        L.Dense(4, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    state = model.layers[0].states[0]
    assert np.abs(state).sum() > 0
    model.reset_states()
    assert np.abs(model.layers[0].states[0]).sum() == 0


def test_frozen_layer_is_not_updated(rng):
    x, y = _data(rng, 8)
    model = Sequential([L.Input((6, 3)), L.LSTM(5, trainable=False), L.Dense(4, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    before = model.get_weights()
    model.fit(x, y, epochs=2, verbose=0)
    after = model.get_weights()
    for b, a in zip(before[:3], after[:3]):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(before[3], after[3])


def test_set_weights_between_steps_is_picked_up(rng):
    x, y = _data(rng, 8)
    km, rm = twin(_seq)
    rm.compile(optimizer=rnnengine.optimizers.SGD(0.5), loss="categorical_crossentropy")
    km.compile(optimizer=keras().optimizers.SGD(0.5), loss="categorical_crossentropy")
    rm.train_on_batch(x, y)
    fresh = [w * 0.5 for w in km.get_weights()]
    km.set_weights(fresh)
    rm.set_weights(fresh)
    assert rm.train_on_batch(x, y) == pytest.approx(km.train_on_batch(x, y), rel=1e-5)
    check_weights("after set_weights", rm.get_weights(), km.get_weights())


# ----------------------------------------------------------------------------
# Errors

def test_fit_before_compile_raises(rng):
    x, y = _data(rng, 8)
    model = Sequential([L.Input((6, 3)), L.LSTM(4), L.Dense(4)])
    for call in (lambda: model.fit(x, y), lambda: model.evaluate(x, y), lambda: model.train_on_batch(x, y)):
        with pytest.raises(RuntimeError, match="You must call `compile\\(\\)`"):
            call()


def test_compile_without_loss_then_fit_raises(rng):
    x, y = _data(rng, 8)
    model = Sequential([L.Input((6, 3)), L.LSTM(4), L.Dense(4)])
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="No loss to compute"):
        model.fit(x, y)


@pytest.mark.parametrize("kwargs,match", [({"optimizer": "adamx", "loss": "mse"}, "optimizer identifier"),
                                          ({"optimizer": "adam", "loss": "msee"}, "loss identifier"),
                                          ({"optimizer": "adam", "loss": "mse", "metrics": ["acuracy"]},
                                           "metric identifier")])
def test_bad_names_raise_value_error(rng, kwargs, match):
    x, y = _data(rng, 8)
    model = Sequential([L.Input((6, 3)), L.LSTM(4), L.Dense(4)])
    with pytest.raises(ValueError, match=match):
        model.compile(**kwargs)
        model.fit(x, y, verbose=0)


@pytest.mark.parametrize("loss,y_shape,match", [
    ("categorical_crossentropy", (8, 5), r"Target y has shape \(8, 5\), but the output \"dense_out\" .* \(None, 4\)"),
    ("categorical_crossentropy", (8,), r"one-hot"),
    ("sparse_categorical_crossentropy", (8, 4), r"integer class indices"),
    ("mse", (8, 3), r"Target y has shape \(8, 3\)"),
    ("mse", (7, 4), r"'x' sizes: 8; 'y' sizes: 7"),
])
def test_target_shape_mismatch_names_the_shapes(rng, loss, y_shape, match):
    x = rng.standard_normal((8, 6, 3)).astype(np.float32)
    model = Sequential([L.Input((6, 3)), L.LSTM(4), L.Dense(4, name="dense_out")])
    model.compile(optimizer="adam", loss=loss)
    with pytest.raises(ValueError, match=match):
        model.fit(x, np.zeros(y_shape, np.float32), verbose=0)


def test_bad_fit_arguments_raise(rng):
    x, y = _data(rng, 8)
    model = Sequential([L.Input((6, 3)), L.LSTM(4), L.Dense(4, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    with pytest.raises(ValueError, match="not sufficient to split"):
        model.fit(x, y, validation_split=0.99, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(x, y, validation_data=x, verbose=0)
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 3"):
        model.fit(x[..., :2], y, verbose=0)
    with pytest.raises(ValueError, match="y=None"):
        model.fit(x, None, verbose=0)


def test_regularizers_without_a_gradient_are_refused_at_compile():
    # A plain function has no grad(): inference takes it, training refuses it by name.
    model = Sequential([L.Input((6, 3)), L.LSTM(4, kernel_regularizer=lambda w: 0.01 * (w ** 2).sum(),
                                                 name="lstm_fn"), L.Dense(4)])
    with pytest.raises(NotImplementedError, match='"lstm_fn.*kernel_regularizer'):
        model.compile(optimizer="adam", loss="mse")
    model = Sequential([L.Input((6, 3)), L.LSTM(4, kernel_regularizer="l2"), L.Dense(4)])
    model.compile(optimizer="adam", loss="mse")  # rnnengine.regularizers train


def test_sample_and_class_weights_match_keras(rng):
    km, rm = twin(_seq)
    x, y = _data(rng, 40)
    sw = rng.uniform(0.2, 2.0, 40).astype(np.float32)
    k = keras()
    km.compile(optimizer=k.optimizers.SGD(0.2), loss="categorical_crossentropy", weighted_metrics=["accuracy"])
    rm.compile(optimizer=rnnengine.optimizers.SGD(0.2), loss="categorical_crossentropy",
               weighted_metrics=["accuracy"])
    kh = km.fit(x, y, sample_weight=sw, batch_size=16, epochs=2, shuffle=False, verbose=0)
    rh = rm.fit(x, y, sample_weight=sw, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for key in kh.history:
        np.testing.assert_allclose(rh.history[key], kh.history[key], rtol=1e-5, err_msg=key)
    cw = {0: 1.0, 1: 2.0, 2: 0.5, 3: 1.5}
    kh = km.fit(x, y, class_weight=cw, batch_size=16, epochs=1, shuffle=False, verbose=0)
    rh = rm.fit(x, y, class_weight=cw, batch_size=16, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(rh.history["loss"], kh.history["loss"], rtol=1e-5)
    check_weights("weighted fit", rm.get_weights(), km.get_weights())


def test_training_reuses_its_buffers_across_batches(rng):
    """One training workspace per batch shape, built once; a steady-state step
    allocates only small temporaries (the loss's per-batch arrays), never a workspace."""
    import tracemalloc

    x, y = _data(rng, 64)
    model = Sequential([L.Input((6, 3)), L.LSTM(64, return_sequences=True), L.GRU(64),
                        L.Dense(4, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    key = (32, ((6, 3), x.dtype.str))
    ws = model._train_pool._free[key][0]
    workspace_bytes = ws.nbytes
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert model._train_pool._free[key] == [ws]
    tracemalloc.start()
    model.train_on_batch(x[:32], y[:32])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < workspace_bytes / 4, (peak, workspace_bytes)
