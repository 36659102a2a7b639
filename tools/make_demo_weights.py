"""Train the founding document's example model in real Keras and ship its weights.

The model is ``SimpleRNN(50, tanh) -> Dense(10, softmax)`` from
``shared/000_ea13af7e5bf9e342.txt``, trained on scikit-learn's digits (8x8
images, each row a timestep). Writes ``rnnengine/data/demo_digits_simple_rnn.npz``
with the weights (Keras ``get_weights()`` order), a held-out test split and
Keras's own predictions on it, which the demo and the tests compare against.

Run: ``python tools/make_demo_weights.py`` (needs tensorflow-cpu and scikit-learn).
"""
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

OUT = Path(__file__).resolve().parents[1] / "rnnengine" / "data" / "demo_digits_simple_rnn.npz"


def main():
    keras.utils.set_random_seed(0)
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")  # (1797, 8, 8): 8 timesteps of 8 features
    y = keras.utils.to_categorical(digits.target, 10)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0,
                                                        stratify=digits.target)
    model = keras.Sequential([keras.Input(shape=(8, 8)),
                              keras.layers.SimpleRNN(units=50, activation="tanh"),
                              keras.layers.Dense(units=10, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=25, batch_size=64, validation_split=0.1, verbose=0)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    probs = np.asarray(model(x_test))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    weights = model.get_weights()
    np.savez_compressed(
        OUT,
        **{f"weight_{i}": w for i, w in enumerate(weights)},
        n_weights=len(weights),
        x_test=x_test,
        y_test=y_test.argmax(1),
        keras_probs=probs,
        keras_accuracy=accuracy,
        keras_version=keras.__version__,
    )
    print(f"wrote {OUT}: Keras {keras.__version__} test accuracy {accuracy:.4f}, loss {loss:.4f}")


if __name__ == "__main__":
    main()
