"""Concurrent predict calls on one model return exactly what serial calls return."""
import threading

import numpy as np

from rnnengine import layers
from rnnengine.models import Sequential


def test_threads_share_a_model_without_sharing_buffers(backend, rng):
    model = Sequential([layers.Input(shape=(None, 6)), layers.LSTM(16, return_sequences=True),
                        layers.GRU(8), layers.Dense(3, activation="softmax")])
    inputs = [rng.standard_normal((int(rng.integers(1, 9)), int(rng.integers(2, 12)), 6)).astype(np.float32)
              for _ in range(64)]
    expected = [model.predict(x) for x in inputs]
    results = [[None] * len(inputs) for _ in range(4)]

    def work(slot):
        for i in range(len(inputs)):
            j = (i * 7 + slot * 13) % len(inputs)
            results[slot][j] = model.predict(inputs[j])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for slot in results:
        for got, want in zip(slot, expected):
            np.testing.assert_array_equal(got, want)
