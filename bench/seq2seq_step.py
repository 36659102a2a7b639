"""A seq2seq decoder step at batch 1: Model([x_t, h, c], [Dense(LSTM(x_t, initial_state=[h, c])), h', c']),
LSTM(128) + Dense(64, softmax), one timestep, medians over 2000 calls.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/seq2seq_step.py

Three inputs and three outputs: before plans took functional graphs this ran node by node.
"""
import time

import numpy as np

from rnnengine import layers
from rnnengine.models import Model


def main():
    rng = np.random.default_rng(0)
    x_t, h, c = layers.Input(shape=(None, 64)), layers.Input(shape=(128,)), layers.Input(shape=(128,))
    y, h2, c2 = layers.LSTM(128, return_sequences=True, return_state=True)(x_t, initial_state=[h, c])
    model = Model([x_t, h, c], [layers.Dense(64, activation="softmax")(y), h2, c2])
    inputs = [rng.standard_normal((1, 1, 64)).astype(np.float32), np.zeros((1, 128), np.float32),
              np.zeros((1, 128), np.float32)]
    for _ in range(50):
        model.predict(inputs)
    times = []
    for _ in range(2000):
        t = time.perf_counter()
        model.predict(inputs)
        times.append(time.perf_counter() - t)
    plans = getattr(getattr(model._local, "plans", None), "plans", {})
    route = next(iter(plans.values())).route if plans else "general path"
    print(f"decoder step, batch 1: {np.median(times) * 1e6:.1f} us ({route})")


if __name__ == "__main__":
    main()
