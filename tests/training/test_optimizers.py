"""Every optimizer against Keras 3's, step by step, and Adam's trajectory through a model.

The flat update (``Optimizer.apply`` on one parameter array with per-variable
segments) is compared with Keras's ``apply_gradients`` on the same variables
and gradients for three steps, each option (momentum, nesterov, amsgrad,
centered, clipnorm, clipvalue, global_clipnorm, weight_decay) included.
"""
import numpy as np
import pytest

import rnnengine
from rnnengine.training import optimizers
from tests.keras_oracle import keras
from tests.training.helpers import check_weights, twin

SHAPES = [(5, 3), (3,), (2, 4)]

CASES = [
    ("SGD", {}), ("SGD", {"momentum": 0.9}), ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("Adam", {}), ("Adam", {"amsgrad": True, "learning_rate": 0.01}), ("AdamW", {}),
    ("RMSprop", {}), ("RMSprop", {"momentum": 0.5, "centered": True}),
    ("Adagrad", {}), ("Adamax", {}), ("Nadam", {}), ("Adadelta", {"learning_rate": 1.0}),
    ("SGD", {"clipnorm": 0.5}), ("Adam", {"clipvalue": 0.1}), ("Adam", {"global_clipnorm": 0.3}),
    ("SGD", {"weight_decay": 0.1, "learning_rate": 0.1}),
]


def _ids(case):
    name, kw = case
    return name + "".join(f"-{k}={v}" for k, v in kw.items())


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_steps_match_keras(rng, case):
    name, kw = case
    k = keras()
    weights = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(3)]
    kvars = [k.Variable(w) for w in weights]
    kopt = getattr(k.optimizers, name)(**kw)
    ropt = getattr(rnnengine.optimizers, name)(**kw)
    sizes = [w.size for w in weights]
    bounds = np.cumsum([0] + sizes)
    segments = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    flat = np.concatenate([w.ravel() for w in weights])
    for step, g in enumerate(grads):
        kopt.apply_gradients(zip([k.ops.convert_to_tensor(x) for x in g], kvars))
        ropt.apply(flat, np.concatenate([x.ravel() for x in g]), segments)
        got = [flat[a:b].reshape(s) for (a, b), s in zip(segments, SHAPES)]
        check_weights(f"{_ids(case)} step {step + 1}", got, [v.numpy() for v in kvars], atol=2e-6, rtol=2e-6)
    assert ropt.iterations == int(kopt.iterations.numpy())


def test_adam_trajectory_through_a_model_matches_keras(rng):
    def build(l, M, S):
        return S([l.Input((6, 4)), l.GRU(8, return_sequences=True), l.LSTM(5), l.Dense(3, activation="softmax")])

    km, rm = twin(build)
    k = keras()
    km.compile(optimizer=k.optimizers.Adam(learning_rate=0.01), loss="categorical_crossentropy")
    rm.compile(optimizer="adam", loss="categorical_crossentropy")
    rm.optimizer.learning_rate = 0.01
    x = rng.standard_normal((10, 6, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 10)]
    for step in range(6):
        k_loss, r_loss = km.train_on_batch(x, y), rm.train_on_batch(x, y)
        assert r_loss == pytest.approx(k_loss, rel=1e-5), f"step {step}"
    check_weights("adam after 6 steps", rm.get_weights(), km.get_weights(), atol=1e-5, rtol=1e-4)


def test_learning_rate_is_float32_like_keras():
    assert optimizers.Adam().learning_rate == float(np.float32(0.001))
    opt = optimizers.SGD(learning_rate=lambda it: 0.1 / (1 + it))
    assert opt.learning_rate == pytest.approx(0.1)
    opt.iterations = 4
    assert opt.learning_rate == pytest.approx(0.02)


@pytest.mark.parametrize("ident", ["adam", "Adam", "SGD", "rmsprop", "adagrad", "adamw", "nadam", "adamax",
                                   "adadelta"])
def test_get_by_name(ident):
    assert type(optimizers.get(ident)).__name__.lower() == ident.lower()


def test_get_from_keras_object_and_config():
    k = keras()
    opt = optimizers.get(k.optimizers.SGD(learning_rate=0.5, momentum=0.25))
    assert isinstance(opt, optimizers.SGD) and opt.momentum == 0.25
    assert opt.learning_rate == pytest.approx(0.5)
    opt = optimizers.get({"class_name": "Adam", "config": {"learning_rate": 0.02, "beta_1": 0.8}})
    assert isinstance(opt, optimizers.Adam) and opt.beta_1 == 0.8


@pytest.mark.parametrize("bad", ["adamm", "lbfgs", 3, None])
def test_bad_optimizer_names_raise(bad):
    with pytest.raises(ValueError, match="Could not interpret optimizer identifier"):
        optimizers.get(bad)


def test_bad_optimizer_arguments_raise():
    with pytest.raises(ValueError, match="Only one of `clipnorm`, `clipvalue` and `global_clipnorm`"):
        optimizers.Adam(clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(NotImplementedError, match="use_ema"):
        optimizers.Adam(use_ema=True)
    with pytest.raises(TypeError, match="unrecognized keyword"):
        optimizers.SGD(momentun=0.9)
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.SGD(learning_rate="fast")
