"""The embedded default job: the founding document's model, run on shipped weights.

Builds ``SimpleRNN(50, tanh) -> Dense(10, softmax)`` exactly as the Keras code
of ``shared/000_ea13af7e5bf9e342.txt`` does, loads weights that real Keras
trained on scikit-learn's digits (``tools/make_demo_weights.py``), predicts
the held-out digits, checks the result against Keras's own predictions shipped
beside the weights, and prints latency for each kernel backend.
"""
import time
from importlib import resources

import numpy as np

from . import config, kernels
from .layers import Dense, SimpleRNN
from .models import Sequential

DEMO_WEIGHTS = "demo_digits_simple_rnn.npz"


def load_demo_data():
    with resources.files("rnnengine.data").joinpath(DEMO_WEIGHTS).open("rb") as f:
        data = dict(np.load(f))
    weights = [data[f"weight_{i}"] for i in range(int(data["n_weights"]))]
    return weights, data


def build_demo_model():
    """The document's model definition, with only the imports changed."""
    timesteps, input_dim, num_classes = 8, 8, 10
    model = Sequential()
    input_shape = (timesteps, input_dim)
    output_dim = num_classes
    model.add(SimpleRNN(units=50, activation="tanh", input_shape=input_shape))
    model.add(Dense(units=output_dim, activation="softmax"))
    return model


def _median_us(fn, min_time=0.5):
    for _ in range(20):
        fn()
    times = []
    end = time.perf_counter() + min_time
    while time.perf_counter() < end or len(times) < 50:
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e3


def main(print_fn=print):
    weights, data = load_demo_data()
    model = build_demo_model()
    model.set_weights(weights)
    model.summary(print_fn=print_fn)
    x_test, y_test, keras_probs = data["x_test"], data["y_test"], data["keras_probs"]

    backends = ["numba"] + (["cython"] if kernels.cython_available() else [])
    previous = config.get_kernels()
    try:
        for backend in backends:
            config.set_kernels(backend)
            probs = model.predict(x_test)
            accuracy = float((probs.argmax(1) == y_test).mean())
            diff = float(np.abs(probs - keras_probs).max())
            one = x_test[:1]
            out = np.empty((1, 10), np.float32)
            single = _median_us(lambda: model.predict(one, out=out))
            full = _median_us(lambda: model.predict_on_batch(x_test), min_time=0.5)
            print_fn(f"[{backend}] test accuracy {accuracy:.4f} (Keras: {float(data['keras_accuracy']):.4f}), "
                     f"max |rnnengine - Keras| = {diff:.2e}")
            print_fn(f"[{backend}] latency: one digit {single:.1f} us (median), "
                     f"{len(x_test)} digits in one batch {full:.1f} us")
            if diff > 1e-5:
                raise SystemExit(f"rnnengine disagrees with Keras by {diff:.2e}")
    finally:
        config.set_kernels(previous)
    if not kernels.cython_available():
        print_fn(f"(Cython kernels not built: {kernels.CYTHON_IMPORT_ERROR})")


if __name__ == "__main__":
    main()
