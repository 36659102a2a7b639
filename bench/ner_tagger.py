"""A masked NER tagger (Embedding(mask_zero) -> 2x Bidirectional(LSTM(64)) ->
Dense per step, batch 1 x 50 with 15 padded steps): rnnengine against Keras 3
in one process, medians.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/ner_tagger.py

The model issue 14 quoted as the slowest against Keras (2.0x) before masked,
Embedding and Bidirectional stacks ran on the fused plan.
"""
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _stack(m):
    return [m.Embedding(5000, 100, mask_zero=True), m.Bidirectional(m.LSTM(64, return_sequences=True)),
            m.Bidirectional(m.LSTM(64, return_sequences=True)), m.Dense(9, activation="softmax")]


def _median_us(fn, n):
    fn()
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e6


def main():
    import keras
    import tensorflow as tf

    from rnnengine import layers
    from rnnengine.models import Sequential

    ours = Sequential([layers.Input(shape=(None,))] + _stack(layers))
    theirs = keras.Sequential([keras.Input((None,), dtype="int64")] + _stack(keras.layers))
    rng = np.random.default_rng(0)
    ours.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.1 for w in ours.get_weights()])
    theirs.set_weights(ours.get_weights())
    x = rng.integers(1, 5000, (1, 50))
    x[0, 35:] = 0
    graph = tf.function(lambda t: theirs(t, training=False))
    diff = np.abs(ours.predict(x) - np.asarray(theirs(x))).max()
    a = _median_us(lambda: ours.predict(x), 300)
    b = _median_us(lambda: theirs.predict_on_batch(x), 50)
    c = _median_us(lambda: graph(x), 100)
    plans = getattr(getattr(ours._local, "plans", None), "plans", {})
    route = next(iter(plans.values())).route if plans else "general path"
    print(f"max |rnnengine - keras| = {diff:.1e}; route: {route}")
    print(f"rnnengine {a:.0f} us; keras predict_on_batch {b:.0f} us ({b / a:.1f}x); "
          f"keras tf.function {c:.0f} us ({c / a:.1f}x)")


if __name__ == "__main__":
    main()
