"""The founding document's training code, run by Keras and by rnnengine on one split.

    python bench/train_digits.py [--epochs 25] [--seeds 0 1 2] [--cells SimpleRNN GRU]

scikit-learn's digits (8x8 images, each row a timestep: 8 steps of 8 features,
pixel values / 16), one-hot labels, split 64/16/20 into train / validation /
test with ``train_test_split(random_state=seed)``. For each cell the same code
(``Sequential``, the cell with 50 units, ``Dense(10, softmax)``,
``compile(optimizer='adam', loss='categorical_crossentropy',
metrics=['accuracy'])``, ``fit(..., epochs, batch_size=64,
validation_data=...)``, ``evaluate``) runs with Keras's imports and with
rnnengine's. Each framework initialises its own weights and shuffles with its
own random stream, so single runs differ by training noise, not by the math
(the step-by-step equality is tested in tests/training): each seed (split,
initialisation and shuffling) is run by both, and the mean over seeds is
compared. Prints test accuracy and ``fit`` wall time for every run, then the
means and the speed ratio.
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def load_digits_split(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)          # (1797, 8, 8): rows as timesteps
    y = np.eye(10, dtype=np.float32)[digits.target]
    X_tmp, X_test, y_tmp, y_test = train_test_split(X, y, test_size=0.2, random_state=seed,
                                                    stratify=digits.target)
    X_train, X_val, y_train, y_val = train_test_split(X_tmp, y_tmp, test_size=0.2, random_state=seed,
                                                      stratify=y_tmp.argmax(1))
    return X_train, y_train, X_val, y_val, X_test, y_test


def founding_document(Sequential, Cell, Dense, data, epochs, batch_size=64):
    """The document's code, verbatim but for the imports (passed in) and the cell."""
    X_train, y_train, X_val, y_val, X_test, y_test = data
    timesteps, input_dim = X_train.shape[1:]
    num_classes = y_train.shape[1]

    model = Sequential()
    input_shape = (timesteps, input_dim)
    output_dim = num_classes
    model.add(Cell(units=50, activation='tanh', input_shape=input_shape))
    model.add(Dense(units=output_dim, activation='softmax'))
    model.compile(optimizer='adam',
                  loss='categorical_crossentropy',
                  metrics=['accuracy'])

    start = time.perf_counter()
    model.fit(X_train, y_train, epochs=epochs, batch_size=batch_size, validation_data=(X_val, y_val),
              verbose=0)
    fit_s = time.perf_counter() - start
    loss, accuracy = model.evaluate(X_test, y_test, verbose=0)
    return loss, accuracy, fit_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cells", nargs="+", default=["SimpleRNN", "GRU"])
    args = parser.parse_args()

    import keras
    import rnnengine
    from rnnengine import layers as rl
    from rnnengine.models import Sequential as RSequential

    print(f"digits (8 steps x 8 features), splits 64/16/20 %; epochs={args.epochs}, batch_size=64; "
          f"keras {keras.__version__} (backend {keras.backend.backend()}), rnnengine {rnnengine.__version__} "
          f"(kernels {rnnengine.config.get_kernels()}); seeds {args.seeds}")
    print(f"{'cell':<10} {'seed':>4} {'framework':<10} {'test loss':>9} {'test acc':>9} {'fit time':>9}")
    for cell in args.cells:
        results = {"keras": [], "rnnengine": []}
        for seed in args.seeds:
            data = load_digits_split(seed)
            for name, Seq, Cell, Dense in (
                    ("keras", keras.Sequential, getattr(keras.layers, cell), keras.layers.Dense),
                    ("rnnengine", RSequential, getattr(rl, cell), rl.Dense)):
                keras.utils.set_random_seed(seed)
                rnnengine.training.set_random_seed(seed)
                loss, acc, fit_s = founding_document(Seq, Cell, Dense, data, args.epochs)
                results[name].append((acc, fit_s))
                print(f"{cell:<10} {seed:>4} {name:<10} {loss:9.4f} {acc:9.4f} {fit_s:8.2f}s", flush=True)
        (k_acc, k_s), (r_acc, r_s) = (np.mean(results["keras"], axis=0), np.mean(results["rnnengine"], axis=0))
        print(f"{cell:<10} mean test accuracy: keras {k_acc:.4f}, rnnengine {r_acc:.4f} "
              f"({100 * (r_acc - k_acc):+.1f} points); mean fit time: keras {k_s:.2f}s, rnnengine {r_s:.2f}s "
              f"({k_s / r_s:.1f}x faster)", flush=True)


if __name__ == "__main__":
    main()
