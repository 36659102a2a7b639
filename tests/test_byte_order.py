"""Inputs of any byte order, alignment and strides give the native answer on
every route, the fused plan included; an ``out=`` that is not native-endian,
C-contiguous and of the model's dtype is refused.

The fused plan used to check an input by its type number alone, which '>f4'
shares with '<f4': the first call of a shape (the general path, which
converts) was right, and from the second on the plan read the swapped bytes
as they were. Every case here therefore calls twice."""
import numpy as np
import pytest

from rnnengine import layers
from rnnengine.models import Model, Sequential


def _swapped(x):
    """x with the other byte order, the same numbers."""
    return x.astype(x.dtype.newbyteorder())


def _unaligned(x):
    """x's numbers in an array whose data is one byte off alignment."""
    raw = np.empty(x.nbytes + 1, np.uint8)[1:]
    out = raw.view(x.dtype).reshape(x.shape)
    out[...] = x
    assert not out.flags.aligned
    return out


def _lstm_model(dtype="float32"):
    return Sequential([layers.Input(shape=(6, 4)), layers.LSTM(5, dtype=dtype), layers.Dense(3, dtype=dtype)])


VARIANTS = {"swapped": _swapped, "unaligned": _unaligned,
            "strided": lambda x: np.repeat(x, 2, axis=-1)[..., ::2],
            "fortran": np.asfortranarray}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_predict_route_reads_the_numbers(backend, rng, variant, dtype):
    model = _lstm_model(dtype)
    x = rng.standard_normal((3, 6, 4)).astype(dtype)
    routes = {"predict": lambda a: model.predict(a, verbose=0), "predict_on_batch": model.predict_on_batch,
              "call": lambda a: np.asarray(model(a)),
              "batch_size=2": lambda a: model.predict(a, batch_size=2, verbose=0),
              "batch_size=3": lambda a: model.predict(a, batch_size=3, verbose=0)}
    want = {name: route(x) for name, route in routes.items()}
    odd = VARIANTS[variant](x)
    for _ in range(3):  # the first call builds the plan; the later ones run it
        for name, route in routes.items():
            np.testing.assert_array_equal(route(odd), want[name], err_msg=name)


def test_other_dtypes_and_byte_orders_are_cast(backend, rng):
    model = _lstm_model()
    x = rng.integers(-3, 3, (2, 6, 4))
    want = model.predict(x.astype(np.float32), verbose=0)
    for dt in (">f8", "<f8", ">i4", "<i2", ">u2", ">f2"):
        xs = np.abs(x).astype(dt) if dt[1] == "u" else x.astype(dt)
        ref = model.predict(xs.astype(np.float32), verbose=0)
        for _ in range(2):
            np.testing.assert_array_equal(model.predict(xs, verbose=0), ref, err_msg=dt)
    np.testing.assert_array_equal(model.predict(x.astype(">f4"), verbose=0), want)


def test_functional_inputs_and_embedding_ids(backend, rng):
    ids = layers.Input(shape=(7,), dtype="int64")
    feats = layers.Input(shape=(7, 3))
    emb = layers.Embedding(20, 4, mask_zero=True)(ids)
    merged = layers.Concatenate()([emb, feats])
    model = Model([ids, feats], layers.Dense(2)(layers.GRU(5)(merged)))
    i = rng.integers(0, 20, (2, 7))
    f = rng.standard_normal((2, 7, 3)).astype(np.float32)
    want = model.predict([i, f], verbose=0)
    for _ in range(3):
        np.testing.assert_array_equal(model.predict([i.astype(">i8"), _swapped(f)], verbose=0), want)
        np.testing.assert_array_equal(model.predict([_unaligned(i), f], verbose=0), want)


def test_stream_steps_read_the_numbers(backend, rng):
    model = _lstm_model()
    frames = rng.standard_normal((6, 4, 4)).astype(np.float32)  # 6 steps of 4 rows
    want_stream = model.stream(batch_size=4)
    want = [want_stream.step(f) for f in frames]
    for variant in ("swapped", "unaligned"):
        stream = model.stream(batch_size=4)
        for f, w in zip(frames, want):
            np.testing.assert_array_equal(stream.step(VARIANTS[variant](f)), w)
    # rows= as a byte-swapped index array, and one row as (features,)
    stream = model.stream(batch_size=4)
    ref = model.stream(batch_size=4)
    for f in frames:
        np.testing.assert_array_equal(stream.step(_swapped(f[:2]), rows=np.array([3, 1], ">i8")),
                                      ref.step(f[:2], rows=[3, 1]))
        np.testing.assert_array_equal(stream.step(_swapped(f[0]), rows=[2]), ref.step(f[0], rows=[2]))


@pytest.mark.parametrize("bad, match", [
    (lambda s: np.empty(s, ">f4"), "dtype"),
    (lambda s: np.empty(s, np.float64), "dtype"),
    (lambda s: np.empty(s[::-1], np.float32).T, "C-contiguous"),
    (lambda s: np.empty((2 * s[0], s[1]), np.float32)[::2], "C-contiguous"),
    (lambda s: np.empty(s, np.float32)[::-1], "C-contiguous"),
])
def test_out_must_be_native_contiguous_and_of_the_model_dtype(backend, rng, bad, match):
    model = _lstm_model()
    x = rng.standard_normal((3, 6, 4)).astype(np.float32)
    model.predict(x, verbose=0)  # the plan exists: the check must hold on the fast path too
    for _ in range(2):
        out = bad((3, 3))
        with pytest.raises(ValueError, match=match):
            model.predict(x, out=out, verbose=0)
        with pytest.raises(ValueError, match=match):
            model.predict_on_batch(x, out=out)


def test_stream_out_must_be_native(backend, rng):
    model = _lstm_model()
    stream = model.stream(batch_size=2)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    stream.step(x)
    with pytest.raises(ValueError, match="dtype"):
        stream.step(x, out=np.empty((2, 3), ">f4"))
    state = stream.get_state()
    ok = np.empty((2, 3), np.float32)
    stream.set_state(state)
    got = stream.step(x, out=ok)
    assert got is ok
