"""Losses and metrics against keras.losses / keras.metrics, and their gradients
against TensorFlow's (GradientTape on the Keras loss of the same arrays)."""
import numpy as np
import pytest

from rnnengine.training import losses, metrics
from tests.keras_oracle import keras


def _probs(rng, shape):
    z = rng.standard_normal(shape) * 3
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _data(rng, name, shape=(8, 5)):
    if name in ("categorical_crossentropy",):
        y = np.eye(shape[-1], dtype=np.float32)[rng.integers(0, shape[-1], shape[:-1])]
        p = _probs(rng, shape)
        p[0, 0], p[1] = 0.0, 1.0 / shape[-1]  # a zero probability (clipped) and a flat row
    elif name == "sparse_categorical_crossentropy":
        y = rng.integers(0, shape[-1], shape[:-1])
        p = _probs(rng, shape)
        p[0, :] = 0.0
        p[0, y[0]] = 1.0  # a certain, right answer: clipped at 1 - 1e-7
    elif name == "binary_crossentropy":
        y = rng.integers(0, 2, shape).astype(np.float32)
        p = rng.uniform(0, 1, shape).astype(np.float32)
        p[0, 0], p[0, 1] = 0.0, 1.0
    else:
        y = rng.standard_normal(shape).astype(np.float32)
        p = rng.standard_normal(shape).astype(np.float32)
    return y, p


NAMES = ["categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy",
         "mean_squared_error", "mean_absolute_error"]


# Regression losses have no logits form: they are not paired with from_logits=True.
LOSS_CASES = [(name, from_logits) for name in NAMES for from_logits in (False, True)
              if not (from_logits and name.startswith("mean"))]


@pytest.mark.parametrize("name,from_logits", LOSS_CASES)
def test_values_and_gradients_match_keras(rng, name, from_logits):
    import tensorflow as tf

    k = keras()
    y, p = _data(rng, name)
    if from_logits:
        p = (rng.standard_normal(p.shape) * 4).astype(np.float32)
    kw = {"from_logits": True} if from_logits else {}
    cls = type(losses.get(name))
    ours = cls(**kw)
    theirs = getattr(k.losses, cls.__name__)(**kw)
    sw = rng.uniform(0.5, 2.0, p.shape[0]).astype(np.float32)
    pt = tf.constant(p)
    with tf.GradientTape() as tape:
        tape.watch(pt)
        k_loss = theirs(y, pt, sample_weight=sw)
    k_grad = tape.gradient(k_loss, pt).numpy()
    np.testing.assert_allclose(getattr(losses, name)(y, p, **kw) if not from_logits else
                               ours.call(y, p), getattr(k.losses, name)(y, p, **kw), rtol=1e-6, atol=1e-6)
    values, grad, _ = ours._values_and_grad(y, p, None)
    loss, dvalues = losses.reduce_values(values, sw, None)
    assert float(loss) == pytest.approx(float(k_loss), rel=1e-6)
    assert float(ours(y, p, sample_weight=sw)) == pytest.approx(float(k_loss), rel=1e-6)
    np.testing.assert_allclose(grad * dvalues[..., None], k_grad, rtol=1e-5, atol=1e-7, err_msg=f"d{name}/dp")


def test_label_smoothing_and_sequences_match_keras(rng):
    k = keras()
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (3, 6))]
    p = _probs(rng, (3, 6, 4))
    got = losses.CategoricalCrossentropy(label_smoothing=0.2)(y, p)
    want = k.losses.CategoricalCrossentropy(label_smoothing=0.2)(y, p)
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    yb = rng.integers(0, 2, (3, 6, 1)).astype(np.float32)
    pb = rng.uniform(0.01, 0.99, (3, 6, 1)).astype(np.float32)
    assert float(losses.BinaryCrossentropy(label_smoothing=0.1)(yb, pb)) == pytest.approx(
        float(k.losses.BinaryCrossentropy(label_smoothing=0.1)(yb, pb)), rel=1e-6)
    # mse's squeeze_or_expand: y (N,) against y_pred (N, 1)
    yr, pr = rng.standard_normal(7).astype(np.float32), rng.standard_normal((7, 1)).astype(np.float32)
    assert float(losses.MeanSquaredError()(yr, pr)) == pytest.approx(float(k.losses.MeanSquaredError()(yr, pr)))


def test_masked_reduction_matches_keras_apply_mask(rng):
    from keras.src.losses.loss import reduce_weighted_values

    values = rng.uniform(0, 2, (4, 6)).astype(np.float32)
    mask = rng.uniform(size=(4, 6)) > 0.3
    for sw in (None, rng.uniform(0.5, 1.5, (4, 6)).astype(np.float32)):
        want = reduce_weighted_values(values, sample_weight=sw, mask=mask)
        got, _ = losses.reduce_values(values, sw, mask)
        assert float(got) == pytest.approx(float(want), rel=1e-6)


@pytest.mark.parametrize("name", ["mse", "mae", "MSE", "categorical_crossentropy", "CategoricalCrossentropy",
                                  "sparse_categorical_crossentropy", "binary_crossentropy",
                                  "mean_absolute_error"])
def test_get_by_name(name):
    assert isinstance(losses.get(name), losses.Loss)


def test_get_from_keras_loss_object():
    k = keras()
    loss = losses.get(k.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1))
    assert isinstance(loss, losses.CategoricalCrossentropy)
    assert loss.from_logits and loss.label_smoothing == pytest.approx(0.1)
    assert isinstance(losses.get(k.losses.mean_squared_error), losses.MeanSquaredError)


@pytest.mark.parametrize("bad", ["categorical_crossentropyy", "huber_loss_x", 42, lambda a, b: a])
def test_bad_loss_names_raise(bad):
    with pytest.raises(ValueError, match="Could not interpret loss identifier"):
        losses.get(bad)


def test_sparse_label_out_of_range_raises():
    with pytest.raises(ValueError, match="outside the valid range of \\[0, 3\\)"):
        losses.sparse_categorical_crossentropy(np.array([0, 3]), np.full((2, 3), 1 / 3, np.float32))


@pytest.mark.parametrize("cls,args", [("CategoricalAccuracy", {}), ("SparseCategoricalAccuracy", {}),
                                      ("BinaryAccuracy", {}), ("Accuracy", {}), ("MeanSquaredError", {}),
                                      ("TopKCategoricalAccuracy", {"k": 2})])
def test_metrics_match_keras(rng, cls, args):
    k = keras()
    ours, theirs = getattr(metrics, cls)(**args), getattr(k.metrics, cls)(**args)
    for _ in range(3):
        if cls == "SparseCategoricalAccuracy":
            y, p = rng.integers(0, 4, (6, 1)), _probs(rng, (6, 4))
        elif cls == "BinaryAccuracy":
            y, p = rng.integers(0, 2, (6, 3)).astype(np.float32), rng.uniform(size=(6, 3)).astype(np.float32)
        elif cls == "Accuracy":
            y, p = rng.integers(0, 3, (6, 2)), rng.integers(0, 3, (6, 2))
        elif cls == "MeanSquaredError":
            y, p = rng.standard_normal((6, 3)).astype(np.float32), rng.standard_normal((6, 3)).astype(np.float32)
        else:
            y, p = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 6)], _probs(rng, (6, 4))
        sw = rng.uniform(0.5, 1.5, 6).astype(np.float32)
        ours.update_state(y, p, sample_weight=sw)
        theirs.update_state(y, p, sample_weight=sw)
    assert ours.result() == pytest.approx(float(theirs.result()), rel=1e-5)


def test_accuracy_resolves_like_keras():
    assert isinstance(metrics.get("accuracy", np.zeros((4, 3)), (None, 3)), metrics.CategoricalAccuracy)
    assert isinstance(metrics.get("accuracy", np.zeros(4), (None, 3)), metrics.SparseCategoricalAccuracy)
    assert isinstance(metrics.get("acc", np.zeros((4, 1)), (None, 3)), metrics.SparseCategoricalAccuracy)
    assert isinstance(metrics.get("accuracy", np.zeros((4, 1)), (None, 1)), metrics.BinaryAccuracy)
    assert metrics.get("acc", np.zeros((4, 1)), (None, 1)).name == "acc"
    with pytest.raises(ValueError, match="Could not interpret metric identifier"):
        metrics.get("accuracyy")
