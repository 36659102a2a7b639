"""Regularizers and constraints against real Keras 3.

- ``rnnengine.regularizers`` / ``rnnengine.constraints``: defaults, ``get`` by
  name / dict / object, ``get_config``, and values equal to Keras's own objects;
- one ``SGD(learning_rate=1)`` ``train_on_batch`` step with a regularizer on each
  weight kind of each layer (and ``activity_regularizer``): the reported loss
  (compiled loss + penalties) and every weight after the step match Keras's;
- constraints applied after the update match Keras's weights after the step;
- ``evaluate`` reports the penalties too; frozen weights' regularizers do not count.
"""
import warnings

import numpy as np
import pytest

import rnnengine
from rnnengine import constraints as RC
from rnnengine import layers as L
from rnnengine import regularizers as RR
from rnnengine.models import Model, Sequential
from tests.keras_oracle import keras
from tests.training.helpers import check_weights

B, T, C = 6, 5, 3


# ----------------------------------------------------------------------------
# The modules against Keras's objects

def test_regularizer_defaults_names_and_configs_match_keras():
    k = keras()
    for name in ("l1", "l2", "l1l2", "L1", "L2", "L1L2"):
        assert RR.get(name).get_config() == k.regularizers.get(name).get_config(), name
    assert RR.L1().l1 == pytest.approx(0.01) and RR.L1().get_config() == k.regularizers.L1().get_config()
    assert RR.L2().get_config() == {"l2": 0.01}
    assert RR.L1L2().get_config() == {"l1": 0.0, "l2": 0.0}
    for bad in ("l1_l2", "orthogonal_regularizer", "nope"):  # Keras 3.15 refuses 'l1_l2' too
        with pytest.raises(ValueError, match="Could not interpret regularizer"):
            RR.get(bad)
    reg = RR.L1L2(l1=0.02, l2=0.5)
    assert RR.get(reg) is reg
    assert RR.get(RR.L2) == RR.L2()
    assert RR.get(RR.serialize(reg)) == reg
    assert RR.get(k.regularizers.serialize(k.regularizers.L1L2(0.02, 0.5))) == reg
    with pytest.raises(ValueError, match="non-negative"):
        RR.L2(-1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regularizer_values_and_gradients_match_keras(rng, dtype):
    import tensorflow as tf

    k = keras()
    x = rng.standard_normal((4, 6)).astype(dtype)
    x[0, 0] = 0.0  # abs' gradient at 0 is 0, as TensorFlow's
    for ours, theirs in ((RR.L1(0.03), k.regularizers.L1(0.03)), (RR.L2(0.2), k.regularizers.L2(0.2)),
                         (RR.L1L2(0.01, 0.04), k.regularizers.L1L2(0.01, 0.04)),
                         (RR.L1L2(l2=0.3), k.regularizers.L1L2(l2=0.3))):
        v = tf.Variable(x)
        with tf.GradientTape() as tape:
            want = theirs(v)
        np.testing.assert_allclose(ours(x), want.numpy(), rtol=1e-6 if dtype == np.float32 else 1e-12)
        np.testing.assert_allclose(ours.grad(x), tape.gradient(want, v).numpy(), rtol=1e-6, atol=0)


def test_constraint_names_configs_and_values_match_keras(rng):
    k = keras()
    for name in ("max_norm", "non_neg", "unit_norm", "min_max_norm", "MaxNorm"):
        assert RC.get(name).get_config() == k.constraints.get(name).get_config(), name
    with pytest.raises(ValueError, match="Could not interpret constraint"):
        RC.get("maxnorm")
    w = rng.standard_normal((5, 8)).astype(np.float32)
    b = rng.standard_normal((8,)).astype(np.float32)
    g = rng.standard_normal((2, 9)).astype(np.float32)  # GRU's (2, 3H) bias
    cases = [(RC.MaxNorm(), k.constraints.MaxNorm()), (RC.MaxNorm(0.7, axis=1), k.constraints.MaxNorm(0.7, axis=1)),
             (RC.NonNeg(), k.constraints.NonNeg()), (RC.UnitNorm(), k.constraints.UnitNorm()),
             (RC.UnitNorm(axis=[0, 1]), k.constraints.UnitNorm(axis=[0, 1])),
             (RC.MinMaxNorm(0.5, 1.2, rate=0.6), k.constraints.MinMaxNorm(0.5, 1.2, rate=0.6)),
             (RC.MinMaxNorm(axis=1), k.constraints.MinMaxNorm(axis=1))]
    for ours, theirs in cases:
        assert RC.get(RC.serialize(ours)) == ours
        assert ours.get_config() == theirs.get_config()
        for a in (w, b, g):
            if isinstance(ours.get_config().get("axis"), (int, list)) and a.ndim == 1 and ours.get_config()["axis"] != 0:
                continue
            np.testing.assert_allclose(ours(a), np.asarray(theirs(a)), rtol=1e-6, atol=1e-7, err_msg=repr(ours))


# ----------------------------------------------------------------------------
# One training step against Keras

def _step_vs_keras(rng, build, x, y, loss="mse", optimizer=("SGD", {"learning_rate": 1.0}), steps=1):
    k = keras()
    km = build(k.layers, k.regularizers, k.constraints, k.Model, k.Sequential)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # SimpleRNN's activity_regularizer: ignored, as in Keras
        rm = build(L, RR, RC, Model, Sequential)
    rm.set_weights(km.get_weights())
    name, kw = optimizer
    km.compile(optimizer=getattr(k.optimizers, name)(**kw), loss=loss)
    rm.compile(optimizer=getattr(rnnengine.optimizers, name)(**kw), loss=loss)
    k_eval, r_eval = km.evaluate(x, y, verbose=0), rm.evaluate(x, y, verbose=0)
    assert r_eval == pytest.approx(k_eval, rel=1e-5), "evaluate"
    for _ in range(steps):
        k_loss, r_loss = km.train_on_batch(x, y), rm.train_on_batch(x, y)
        assert r_loss == pytest.approx(k_loss, rel=1e-5), "train_on_batch loss"
    check_weights("after the step", rm.get_weights(), km.get_weights(), atol=1e-5, rtol=1e-5)
    return km, rm


RNN_CELLS = [("SimpleRNN", {}), ("LSTM", {}), ("GRU", {}), ("GRU", {"reset_after": False})]
RNN_IDS = ["SimpleRNN", "LSTM", "GRU", "GRU-reset_before"]
RNN_ATTRS = ["kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer"]


def _reg(regs, i):
    """A different regularizer per case: L1, L2, L1L2 in turn."""
    return [lambda: regs.L1(0.05), lambda: regs.L2(0.07), lambda: regs.L1L2(0.03, 0.04)][i % 3]()


@pytest.mark.parametrize("attr", RNN_ATTRS)
@pytest.mark.parametrize("cell,kw", RNN_CELLS, ids=RNN_IDS)
def test_rnn_regularizer_step_matches_keras(rng, cell, kw, attr):
    i = RNN_ATTRS.index(attr) + RNN_IDS.index(next(n for n, c in zip(RNN_IDS, RNN_CELLS) if c == (cell, kw)))
    seq = attr == "activity_regularizer" and cell == "LSTM"  # the activity penalty on a (B, T, H) output

    def build(l, regs, cons, M, S):
        layers = [l.Input((T, C)), getattr(l, cell)(4, return_sequences=seq, **{attr: _reg(regs, i)}, **kw)]
        if seq:
            layers.append(l.Flatten())
        return S(layers + [l.Dense(2)])

    x = rng.standard_normal((B, T, C)).astype(np.float32)
    _step_vs_keras(rng, build, x, rng.standard_normal((B, 2)).astype(np.float32))


@pytest.mark.parametrize("attr", ["kernel_regularizer", "bias_regularizer", "activity_regularizer"])
def test_dense_regularizer_step_matches_keras_through_softmax(rng, attr):
    # activity_regularizer on the softmax output: the loss still reads the
    # probabilities (rnnengine then skips the logits shortcut)
    def build(l, regs, cons, M, S):
        return S([l.Input((T, C)), l.GRU(4), l.Dense(3, activation="softmax", **{attr: regs.L1L2(0.02, 0.05)})])

    x = rng.standard_normal((B, T, C)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, B)]
    _step_vs_keras(rng, build, x, y, loss="categorical_crossentropy")


def test_embedding_and_timedistributed_regularizers_match_keras(rng):
    def build(l, regs, cons, M, S):
        return S([l.Input((T,), dtype="int32"),
                  l.Embedding(9, 3, embeddings_regularizer=regs.L2(0.1), activity_regularizer=regs.L1(0.02),
                              embeddings_constraint=cons.MaxNorm(0.8, axis=1)),
                  l.LSTM(4, return_sequences=True, kernel_regularizer=regs.L2(0.05)),
                  l.TimeDistributed(l.Dense(2, kernel_regularizer=regs.L1(0.03), bias_constraint=cons.NonNeg())),
                  l.Flatten(), l.Dense(2)])

    x = rng.integers(0, 9, (B, T))
    _step_vs_keras(rng, build, x, rng.standard_normal((B, 2)).astype(np.float32), steps=2)


def test_everything_at_once_with_adam_and_fit_loss(rng):
    def build(l, regs, cons, M, S):
        return S([l.Input((T, C)),
                  l.Bidirectional(l.LSTM(3, return_sequences=True, kernel_regularizer=regs.L1(0.01),
                                         recurrent_regularizer=regs.L2(0.02), bias_constraint=cons.NonNeg())),
                  l.SimpleRNN(4, bias_regularizer=regs.L1L2(0.01, 0.01), activity_regularizer=regs.L2(0.03),
                              kernel_constraint=cons.MaxNorm(1.0), recurrent_constraint=cons.UnitNorm()),
                  l.Dense(2, kernel_regularizer="l2", activity_regularizer="l1")])

    x = rng.standard_normal((B, T, C)).astype(np.float32)
    y = rng.standard_normal((B, 2)).astype(np.float32)
    km, rm = _step_vs_keras(rng, build, x, y, optimizer=("Adam", {"learning_rate": 0.05}), steps=3)
    k_hist = km.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0).history["loss"]
    r_hist = rm.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(r_hist, k_hist, rtol=1e-5)


def test_functional_activity_regularizer_counts_every_returned_state(rng):
    # Keras regularizes each output a layer returns: y, h and c of an LSTM with return_state
    def build(l, regs, cons, M, S):
        inp = l.Input((T, C))
        y, h, c = l.LSTM(4, return_state=True, activity_regularizer=regs.L2(0.1))(inp)
        out = l.Dense(2)(l.Concatenate()([y, c]))
        return M(inp, out)

    x = rng.standard_normal((B, T, C)).astype(np.float32)
    _step_vs_keras(rng, build, x, rng.standard_normal((B, 2)).astype(np.float32))


def test_frozen_layers_regularizers_do_not_count(rng):
    def build(l, regs, cons, M, S):
        frozen = l.LSTM(4, kernel_regularizer=regs.L2(0.5), kernel_constraint=cons.NonNeg(), trainable=False)
        return S([l.Input((T, C)), frozen, l.Dense(2, kernel_regularizer=regs.L2(0.1))])

    x = rng.standard_normal((B, T, C)).astype(np.float32)
    _step_vs_keras(rng, build, x, rng.standard_normal((B, 2)).astype(np.float32))


CONSTRAINT_CASES = [("kernel_constraint", lambda c: c.MaxNorm(0.3)), ("recurrent_constraint", lambda c: c.UnitNorm()),
                    ("bias_constraint", lambda c: c.NonNeg()),
                    ("kernel_constraint", lambda c: c.MinMaxNorm(0.2, 0.4, rate=0.5, axis=1))]


@pytest.mark.parametrize("cell,kw", RNN_CELLS, ids=RNN_IDS)
@pytest.mark.parametrize("case", range(len(CONSTRAINT_CASES)))
def test_constraints_after_the_update_match_keras(rng, cell, kw, case):
    attr, make = CONSTRAINT_CASES[case]

    def build(l, regs, cons, M, S):
        return S([l.Input((T, C)), getattr(l, cell)(4, **{attr: make(cons)}, **kw),
                  l.Dense(2, kernel_constraint=cons.MaxNorm(0.5), bias_constraint=make(cons) if case == 2 else None)])

    x = rng.standard_normal((B, T, C)).astype(np.float32)
    km, rm = _step_vs_keras(rng, build, x, rng.standard_normal((B, 2)).astype(np.float32), steps=2)
    if attr == "bias_constraint":
        assert (rm.layers[0].get_weights()[2] >= 0).all()


def test_get_config_round_trips_regularizers_and_constraints():
    layers = [L.LSTM(3, kernel_regularizer="l1", recurrent_regularizer=RR.L2(0.3), bias_regularizer=RR.L1L2(0.1, 0.2),
                     activity_regularizer="l2", kernel_constraint="non_neg", recurrent_constraint=RC.MaxNorm(3, 1),
                     bias_constraint=RC.MinMaxNorm(0.1, 0.9, 0.5)),
              L.Dense(2, kernel_regularizer=RR.L2(0.5), activity_regularizer=RR.L1(0.2),
                      bias_constraint=RC.UnitNorm()),
              L.Embedding(5, 2, embeddings_regularizer="l2", embeddings_constraint="unit_norm",
                          activity_regularizer="l1")]
    for layer in layers:
        config = layer.get_config()
        clone = type(layer).from_config(config)
        for key, value in config.items():
            if key.endswith(("_regularizer", "_constraint")):
                assert getattr(clone, key) == getattr(layer, key), key
                assert value is None or value["module"] in ("keras.regularizers", "keras.constraints"), key
        assert clone.get_config() == config


def test_simple_rnn_ignores_activity_regularizer_as_keras_does(rng):
    """Keras 3.15's SimpleRNN never hands activity_regularizer to its base layer."""
    k = keras()
    km = k.Sequential([k.Input((T, C)), k.layers.SimpleRNN(4, activity_regularizer="l2")])
    assert km.layers[0].activity_regularizer is None
    assert km.layers[0].get_config()["activity_regularizer"] is None
    with pytest.warns(UserWarning, match="SimpleRNN: activity_regularizer is ignored"):
        layer = L.SimpleRNN(4, activity_regularizer="l2")
    assert layer.activity_regularizer is None and layer.get_config()["activity_regularizer"] is None
