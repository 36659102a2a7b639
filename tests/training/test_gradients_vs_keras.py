"""Whole-model gradients against Keras and TensorFlow.

With ``SGD(learning_rate=1.0)`` one ``train_on_batch`` step leaves ``w - grad``, so
comparing weights after one step against Keras's own ``train_on_batch`` compares
every gradient of the model (through softmax + categorical cross-entropy, the
founding document's model, stacked and masked models, merges, wrappers), each
weight named in the failure message. One case also checks the step against
gradients taken directly with ``tf.GradientTape``. Float64 finite differences
check the whole chain (loss, masks, merges, Dense, the recurrent kernels) on
their own, with no Keras involved.
"""
import numpy as np
import pytest

import rnnengine
from rnnengine import layers as L
from rnnengine.models import Model, Sequential
from tests.keras_oracle import keras
from tests.training.helpers import check_weights, twin

B, T, C = 12, 7, 5


def _seq_case(cell, variant):
    def build(l, M, S):
        layers = [l.Input((T, C))]
        kw = {"reset_after": False} if variant == "reset_before" else {}
        if variant == "stack":
            layers += [getattr(l, cell)(6, return_sequences=True, **kw), l.LSTM(5, go_backwards=True)]
        elif variant == "seq_out":
            layers += [getattr(l, cell)(6, return_sequences=True, **kw)]
        else:
            layers += [getattr(l, cell)(6, go_backwards=variant == "backwards", **kw)]
        layers += [l.Dense(4, activation="softmax")]
        return S(layers)
    return build


SEQ_CASES = [("SimpleRNN", "plain"), ("LSTM", "plain"), ("GRU", "plain"), ("GRU", "reset_before"),
             ("LSTM", "backwards"), ("SimpleRNN", "stack"), ("GRU", "stack"), ("LSTM", "seq_out")]


def _targets(rng, shape, n_classes):
    return np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, shape)]


@pytest.mark.parametrize("cell,variant", SEQ_CASES, ids=[f"{c}-{v}" for c, v in SEQ_CASES])
def test_sgd_step_matches_keras_train_on_batch(rng, backend, cell, variant):
    km, rm = twin(_seq_case(cell, variant))
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    y = _targets(rng, (B, T) if variant == "seq_out" else (B,), 4)
    k = keras()
    km.compile(optimizer=k.optimizers.SGD(learning_rate=1.0), loss="categorical_crossentropy", metrics=["accuracy"])
    rm.compile(optimizer=rnnengine.optimizers.SGD(learning_rate=1.0), loss="categorical_crossentropy",
               metrics=["accuracy"])
    k_loss, k_acc = km.train_on_batch(x, y)
    r_loss, r_acc = rm.train_on_batch(x, y)
    assert abs(r_loss - k_loss) < 1e-5 * max(1.0, abs(k_loss))
    assert r_acc == pytest.approx(k_acc)
    check_weights(f"{cell}-{variant}", rm.get_weights(), km.get_weights())


MASKED_CASES = [(cell, gb, rs, zofm) for cell in ("SimpleRNN", "LSTM", "GRU", "GRU_reset_before")
                for gb, rs, zofm in ((0, 0, 0), (1, 1, 0), (0, 1, 1), (1, 0, 1))]


@pytest.mark.parametrize("cell,gb,rs,zofm", MASKED_CASES,
                         ids=[f"{c}-gb{g}-rs{r}-zofm{z}" for c, g, r, z in MASKED_CASES])
def test_masked_sgd_step_matches_keras(rng, backend, cell, gb, rs, zofm):
    """Embedding(mask_zero) into one recurrent layer: the training kernels' mask
    (keep) against Keras's masked recurrence, with trailing padding, leading
    and inner masked steps and an all-padding row, go_backwards and
    zero_output_for_mask."""
    def build(l, M, S):
        kw = dict(go_backwards=bool(gb), return_sequences=bool(rs), zero_output_for_mask=bool(zofm))
        if cell == "GRU_reset_before":
            rec = l.GRU(6, reset_after=False, **kw)
        else:
            rec = getattr(l, cell)(6, **kw)
        head = l.TimeDistributed(l.Dense(4, activation="softmax")) if rs else l.Dense(4, activation="softmax")
        return S([l.Input((T,), dtype="int32"), l.Embedding(9, C, mask_zero=True), rec, head])

    km, rm = twin(build)
    tokens = rng.integers(1, 9, (B, T))
    tokens[0, 4:] = 0
    tokens[1, :3] = 0
    tokens[2, 2] = 0
    tokens[2, 5] = 0
    tokens[3] = 0  # no valid step
    tokens[4, 1:] = 0
    y = _targets(rng, (B, T) if rs else (B,), 4)
    k = keras()
    km.compile(optimizer=k.optimizers.SGD(learning_rate=1.0), loss="categorical_crossentropy")
    rm.compile(optimizer=rnnengine.optimizers.SGD(learning_rate=1.0), loss="categorical_crossentropy")
    k_loss = km.train_on_batch(tokens, y)
    r_loss = rm.train_on_batch(tokens, y)
    assert abs(r_loss - k_loss) < 1e-5 * max(1.0, abs(k_loss))
    check_weights(f"masked {cell} gb={gb} rs={rs} zofm={zofm}", rm.get_weights(), km.get_weights())


def test_sgd_step_is_gradient_tape_gradient(rng):
    """The step equals -grad with grads from tf.GradientTape on Keras's forward (softmax + CCE)."""
    import tensorflow as tf

    km, rm = twin(_seq_case("LSTM", "stack"))
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    y = _targets(rng, (B,), 4)
    before = rm.get_weights()
    with tf.GradientTape() as tape:
        loss = keras().losses.CategoricalCrossentropy()(y, km(x, training=True))
    grads = tape.gradient(loss, km.trainable_variables)
    rm.compile(optimizer=rnnengine.optimizers.SGD(learning_rate=1.0), loss="categorical_crossentropy")
    r_loss = rm.train_on_batch(x, y)
    assert r_loss == pytest.approx(float(loss), rel=1e-6)
    names = [v.path for v in km.trainable_variables]
    for name, w0, w1, g in zip(names, before, rm.get_weights(), grads):
        np.testing.assert_allclose(w0 - w1, g.numpy(), rtol=1e-5, atol=1e-6, err_msg=f"d{name}")


def _graph(l, M, S):
    tokens = l.Input((T,), dtype="int32")
    e = l.Embedding(10, 4, mask_zero=True)(tokens)
    b = l.Bidirectional(l.LSTM(3, return_sequences=True))(e)
    g, h = l.GRU(4, return_sequences=True, return_state=True)(b)
    side = l.Input((4,))
    merged = l.Concatenate()([l.Add()([h, side]), l.Multiply()([h, side]), l.Maximum()([h, side]),
                              l.Average()([h, side]), l.Subtract()([h, side])])
    seq = l.TimeDistributed(l.Dense(3, activation="softmax"))(g)
    last = l.Dense(2, activation="sigmoid")(l.Dropout(0.0)(merged))
    return M([tokens, side], [seq, last])


def _graph_data(rng):
    tokens = rng.integers(1, 10, (B, T))
    tokens[0, 4:] = 0
    tokens[3, 2:] = 0
    tokens[5, :2] = 0  # masked steps at the start (go_backwards sees them last)
    tokens[7, 3] = 0   # and a hole in the middle
    side = rng.standard_normal((B, 4)).astype(np.float32)
    y_seq = _targets(rng, (B, T), 3)
    y_last = rng.integers(0, 2, (B, 2)).astype(np.float32)
    return [tokens, side], [y_seq, y_last]


def test_masked_graph_with_merges_and_wrappers_matches_keras(rng, backend):
    km, rm = twin(_graph)
    x, y = _graph_data(rng)
    k = keras()
    km.compile(optimizer=k.optimizers.SGD(learning_rate=1.0),
               loss=["categorical_crossentropy", "binary_crossentropy"], loss_weights=[1.0, 0.5])
    rm.compile(optimizer=rnnengine.optimizers.SGD(learning_rate=1.0),
               loss=["categorical_crossentropy", "binary_crossentropy"], loss_weights=[1.0, 0.5])
    k_logs = km.train_on_batch(x, y)
    r_logs = rm.train_on_batch(x, y)
    np.testing.assert_allclose(r_logs, k_logs, rtol=1e-5, atol=1e-6)
    check_weights("masked graph", rm.get_weights(), km.get_weights())


def test_sparse_labels_and_logits_outputs_match_keras(rng):
    """sparse CE on a saturated softmax (Keras reads the logits) and from_logits on a linear output."""
    def build(l, M, S):
        inp = l.Input((T, C))
        h = l.GRU(5)(inp)
        return M(inp, [l.Activation("softmax", name="probs")(l.Dense(4)(h)), l.Dense(3, name="logits")(h)])

    km, rm = twin(build)
    x = 30 * rng.standard_normal((B, T, C)).astype(np.float32)  # saturates: p -> 0 for some labels
    w = km.get_weights()
    w[-4] *= 40.0
    km.set_weights(w)
    rm.set_weights(w)
    y = [rng.integers(0, 4, (B, 1)), rng.integers(0, 3, (B,))]
    k = keras()
    km.compile(optimizer=k.optimizers.SGD(learning_rate=0.1),
               loss=["sparse_categorical_crossentropy", k.losses.SparseCategoricalCrossentropy(from_logits=True)],
               metrics=[["accuracy"], ["accuracy"]])
    rm.compile(optimizer=rnnengine.optimizers.SGD(learning_rate=0.1),
               loss=["sparse_categorical_crossentropy", rnnengine.losses.SparseCategoricalCrossentropy(from_logits=True)],
               metrics=[["accuracy"], ["accuracy"]])
    k_logs = km.train_on_batch(x, y, return_dict=True)
    r_logs = rm.train_on_batch(x, y, return_dict=True)
    assert k_logs["loss"] > 10  # the probability path would clip at -log(1e-7) = 16.1 per sample
    assert set(r_logs) == set(k_logs)
    for key in k_logs:
        assert r_logs[key] == pytest.approx(float(k_logs[key]), rel=1e-5, abs=1e-5), key
    check_weights("sparse/logits", rm.get_weights(), km.get_weights(), atol=1e-4)


def test_probability_path_clips_like_keras(rng):
    """A TimeDistributed softmax hides its logits from Keras: the loss clips at 1e-7."""
    def build(l, M, S):
        return S([l.Input((T, C)), l.SimpleRNN(4, return_sequences=True),
                  l.TimeDistributed(l.Dense(3, activation="softmax"))])

    km, rm = twin(build)
    w = [v * 30 for v in km.get_weights()]
    km.set_weights(w)
    rm.set_weights(w)
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    y = _targets(rng, (B, T), 3)
    k = keras()
    km.compile(optimizer=k.optimizers.SGD(learning_rate=0.01), loss="categorical_crossentropy")
    rm.compile(optimizer=rnnengine.optimizers.SGD(learning_rate=0.01), loss="categorical_crossentropy")
    k_loss, r_loss = km.train_on_batch(x, y), rm.train_on_batch(x, y)
    assert r_loss == pytest.approx(k_loss, rel=1e-5)
    check_weights("clipped CE", rm.get_weights(), km.get_weights(), atol=1e-5)


# ----------------------------------------------------------------------------
# float64 finite differences: no Keras

def _fd_model():
    tokens = L.Input((5,), dtype="int32")
    e = L.Embedding(7, 3, mask_zero=True, dtype="float64")(tokens)
    b = L.Bidirectional(L.GRU(3, return_sequences=True, reset_after=False, dtype="float64"),
                        merge_mode="mul", dtype="float64")(e)
    s = L.SimpleRNN(4, return_sequences=True, go_backwards=True, dtype="float64")(b)
    out, h, c = L.LSTM(3, return_state=True, dtype="float64")(s)
    side = L.Input((3,), dtype="float64")
    m = L.Concatenate(dtype="float64")([L.Add(dtype="float64")([out, side]), L.Maximum(dtype="float64")([h, c])])
    d = L.Dense(4, activation="tanh", dtype="float64")(L.RepeatVector(2, dtype="float64")(m))
    y = L.Dense(3, activation="softmax", dtype="float64")(L.Flatten(dtype="float64")(d))
    return Model([tokens, side], y)


def test_whole_model_gradient_matches_float64_finite_differences(rng):
    model = _fd_model()
    weights = [rng.standard_normal(w.shape) * 0.5 for w in model.get_weights()]
    model.set_weights(weights)
    tokens = rng.integers(1, 7, (4, 5))
    tokens[1, 3:] = 0
    tokens[2, :2] = 0
    side = rng.standard_normal((4, 3))
    y = np.eye(3)[rng.integers(0, 3, 4)]
    model.compile(optimizer=rnnengine.optimizers.SGD(learning_rate=1.0), loss="categorical_crossentropy")
    model.train_on_batch([tokens, side], y)
    grads = [w0 - w1 for w0, w1 in zip(weights, model.get_weights())]

    def loss(ws):
        model.set_weights(ws)
        return model.test_on_batch([tokens, side], y)

    eps = 1e-6
    checked = 0
    for i, w in enumerate(weights):
        flat = w.reshape(-1)
        picks = rng.choice(flat.size, size=min(flat.size, 6), replace=False)
        for j in picks:
            plus = [v.copy() for v in weights]
            minus = [v.copy() for v in weights]
            plus[i].reshape(-1)[j] += eps
            minus[i].reshape(-1)[j] -= eps
            numeric = (loss(plus) - loss(minus)) / (2 * eps)
            got = grads[i].reshape(-1)[j]
            assert abs(got - numeric) <= 1e-6 * max(1.0, abs(numeric)), \
                f"weight {i} {w.shape} entry {j}: backprop {got} vs finite difference {numeric}"
            checked += 1
    assert checked > 50
