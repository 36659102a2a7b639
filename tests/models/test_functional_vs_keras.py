"""Functional graphs written once and built twice, with Keras and with rnnengine.

Each builder takes a namespace (``keras.layers`` or ``rnnengine.layers``) and a
Model class, so the same code runs on both: the API is the test's subject as
much as the numbers. Weights go across with get_weights()/set_weights(), which
also checks that rnnengine orders layers exactly as Keras does.
"""
import numpy as np
import pytest

from rnnengine import layers as rl
from rnnengine.models import Model, Sequential
from tests.conftest import assert_close
from tests.keras_oracle import keras

T, C = 7, 5


def one_to_one(L, M):
    x = L.Input(shape=(C,))
    return M(x, L.Dense(3, activation="softmax")(L.Dense(8, activation="relu")(x))), [(C,)]


def one_to_many(L, M):
    x = L.Input(shape=(C,))
    seq = L.RepeatVector(6)(L.Dense(8, activation="tanh")(x))
    y = L.TimeDistributed(L.Dense(2))(L.LSTM(6, return_sequences=True)(seq))
    return M(x, y), [(C,)]


def many_to_one(L, M):
    x = L.Input(shape=(T, C))
    return M(x, L.Dense(1, activation="sigmoid")(L.GRU(6)(x))), [(T, C)]


def many_to_many_equal(L, M):
    x = L.Input(shape=(T, C))
    y = L.SimpleRNN(6, return_sequences=True)(x)
    return M(x, L.Dense(3, activation="softmax")(y)), [(T, C)]


def seq2seq_unequal(L, M):
    """Encoder LSTM's states start a decoder LSTM over a different length."""
    enc_in = L.Input(shape=(T, C))
    dec_in = L.Input(shape=(4, 3))
    _, h, c = L.LSTM(8, return_state=True)(enc_in)
    dec = L.LSTM(8, return_sequences=True)(dec_in, initial_state=[h, c])
    return M([enc_in, dec_in], L.Dense(3, activation="softmax")(dec)), [(T, C), (4, 3)]


def gru_seq2seq_states_out(L, M):
    enc_in = L.Input(shape=(T, C))
    dec_in = L.Input(shape=(3, C))
    _, h = L.GRU(6, return_state=True, reset_after=False)(enc_in)
    dec, dec_h = L.GRU(6, return_sequences=True, return_state=True, go_backwards=True)(dec_in, initial_state=[h])
    return M([enc_in, dec_in], [dec, dec_h]), [(T, C), (3, C)]


@pytest.fixture(params=["concat", "sum", "ave", "mul", None])
def merge_mode(request):
    return request.param


def make_bidirectional(mode):
    def bidirectional(L, M):
        x = L.Input(shape=(T, C))
        y = L.Bidirectional(L.LSTM(5, return_sequences=True), merge_mode=mode)(x)
        if mode is None:
            y = L.Concatenate()(y)
        z = L.Bidirectional(L.GRU(4), merge_mode="concat")(y)
        return M(x, z), [(T, C)]
    bidirectional.__name__ = f"bidirectional_{mode}"
    return bidirectional


def bidirectional_states(L, M):
    x = L.Input(shape=(T, C))
    out, fh, fc, bh, bc = L.Bidirectional(L.LSTM(4, return_state=True))(x)
    return M(x, [out, L.Add()([fh, bh]), L.Multiply()([fc, bc])]), [(T, C)]


def merges(L, M):
    a = L.Input(shape=(T, C))
    b = L.Input(shape=(T, C))
    ya = L.LSTM(6, return_sequences=True)(a)
    yb = L.GRU(6, return_sequences=True)(b)
    s = L.Average()([ya, yb, L.Add()([ya, yb])])
    m = L.Concatenate(axis=-1)([s, L.Subtract()([ya, yb]), L.Maximum()([ya, yb]), L.Minimum()([ya, yb])])
    y = L.Activation("softsign")(L.Flatten()(m))
    return M([a, b], L.Dense(2)(y)), [(T, C), (T, C)]


def shared_layer(L, M):
    a = L.Input(shape=(T, C))
    b = L.Input(shape=(T, C))
    shared = L.LSTM(4)
    return M([a, b], L.Concatenate()([shared(a), shared(b)])), [(T, C), (T, C)]


GRAPHS = [one_to_one, one_to_many, many_to_one, many_to_many_equal, seq2seq_unequal,
          gru_seq2seq_states_out, bidirectional_states, merges, shared_layer] + \
         [make_bidirectional(m) for m in ("concat", "sum", "ave", "mul", None)]


def _inputs(rng, shapes, n=6):
    return [rng.standard_normal((n,) + s).astype("float32") for s in shapes]


def _compare(kmodel, model, xs):
    want = kmodel(xs if len(xs) > 1 else xs[0])
    want = [np.asarray(w) for w in want] if isinstance(want, (list, tuple)) else [np.asarray(want)]
    got = model.predict(xs if len(xs) > 1 else xs[0])
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, (i, g.shape, w.shape)
        assert_close(g, w, np.float32, f"output {i}")


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda g: g.__name__)
def test_graph_matches_keras(backend, rng, graph):
    k = keras()
    kmodel, shapes = graph(k.layers, k.Model)
    model, _ = graph(rl, Model)
    weights = [rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in kmodel.get_weights()]
    kmodel.set_weights(weights)
    assert [l.name.split("_")[0] for l in model.layers] and len(model.layers) == len(kmodel.layers)
    assert [type(l).__name__ for l in model.layers] == [type(l).__name__ for l in kmodel.layers]
    model.set_weights(weights)
    _compare(kmodel, model, _inputs(rng, shapes))


# -- masks ---------------------------------------------------------------------------------

def _padded_tokens(rng, n=6, t=8, vocab=20):
    tokens = rng.integers(1, vocab, (n, t))
    for i, pad in enumerate([0, 2, 5, 7, 3, 1][:n]):
        tokens[i, t - pad:] = 0  # post-padding
    tokens[1, :2] = 0  # pre-padding too: zeros before the first valid step
    return tokens


def masked_embedding(L, M, cell="LSTM"):
    x = L.Input(shape=(8,))
    e = L.Embedding(20, 6, mask_zero=True)(x)
    y = getattr(L, cell)(5, return_sequences=True)(e)
    y = L.Dense(4, activation="tanh")(y)
    z = getattr(L, cell)(3, go_backwards=True)(y)
    return M(x, z)


def masked_bidirectional(L, M):
    x = L.Input(shape=(8,))
    e = L.Embedding(20, 6, mask_zero=True)(x)
    y = L.Bidirectional(L.GRU(4, return_sequences=True))(e)
    return M(x, [y, L.Bidirectional(L.SimpleRNN(3), merge_mode="sum")(y)])


def masking_layer(L, M):
    x = L.Input(shape=(8, 3))
    m = L.Masking(mask_value=0.0)(x)
    a = L.GRU(4, return_sequences=True)(m)
    b = L.LSTM(4, return_sequences=True)(m)
    return M(x, L.SimpleRNN(2)(L.Concatenate()([a, b])))


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM", "GRU"])
def test_mask_from_embedding_matches_keras(backend, rng, cell):
    k = keras()
    kmodel = masked_embedding(k.layers, k.Model, cell)
    model = masked_embedding(rl, Model, cell)
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in kmodel.get_weights()])
    kmodel.set_weights(model.get_weights())
    _compare(kmodel, model, [_padded_tokens(rng).astype("float32")])


@pytest.mark.parametrize("builder", [masked_bidirectional, masking_layer], ids=lambda b: b.__name__)
def test_masks_through_graphs_match_keras(backend, rng, builder):
    k = keras()
    kmodel, model = builder(k.layers, k.Model), builder(rl, Model)
    weights = [rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in kmodel.get_weights()]
    kmodel.set_weights(weights)
    model.set_weights(weights)
    if builder is masking_layer:
        x = rng.standard_normal((6, 8, 3)).astype("float32")
        x[0, 5:] = 0
        x[2, :3] = 0
        x[3, 2] = 0
        xs = [x]
    else:
        xs = [_padded_tokens(rng).astype("float32")]
    _compare(kmodel, model, xs)


def test_masked_sequential_matches_keras(backend, rng):
    k = keras()
    build = lambda L, S: S([L.Input(shape=(8,)), L.Embedding(20, 6, mask_zero=True),
                            L.LSTM(5, return_sequences=True), L.Dropout(0.2), L.GRU(3)])
    kmodel, model = build(k.layers, k.Sequential), build(rl, Sequential)
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in kmodel.get_weights()])
    kmodel.set_weights(model.get_weights())
    _compare(kmodel, model, [_padded_tokens(rng).astype("float32")])


# -- the graph API itself --------------------------------------------------------------

def test_graph_errors():
    a = rl.Input(shape=(T, C))
    b = rl.Input(shape=(T, C))
    y = rl.LSTM(3)(b)
    with pytest.raises(ValueError, match="Graph disconnected"):
        Model(a, y)
    with pytest.raises(ValueError, match="2 input"):
        Model([a, b], rl.Add()([rl.LSTM(3)(a), y])).predict(np.ones((2, T, C)))
    with pytest.raises(ValueError, match="same shape|matching shapes"):
        rl.Add()([rl.LSTM(3)(a), rl.LSTM(4)(a)])
    with pytest.raises(ValueError, match="indices must be in"):
        x = rl.Input(shape=(4,))
        Model(x, rl.Embedding(5, 2)(x)).predict(np.array([[1, 2, 3, 9]]))


def test_dict_inputs_and_summary(rng, capsys):
    a = rl.Input(shape=(T, C), name="left")
    b = rl.Input(shape=(T, C), name="right")
    model = Model([a, b], rl.Concatenate()([rl.GRU(2)(a), rl.GRU(2)(b)]))
    xa, xb = _inputs(rng, [(T, C), (T, C)])
    np.testing.assert_array_equal(model.predict({"left": xa, "right": xb}), model.predict([xa, xb]))
    model.summary()
    assert "Concatenate" in capsys.readouterr().out
