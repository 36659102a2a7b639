"""Cold start: what a fresh process pays before its first prediction.

A service restarts, scales out, or runs one-shot jobs; each fresh process pays
the import and the first call. With the Cython kernels built, ``import
rnnengine``, loading a Keras file and the first ``predict`` must not import
Numba (its cache load costs about 0.6 s per kernel family), scipy.linalg's
package (about 0.45 s; the kernels need only its cython_blas module) or
scipy.special (about 0.2 s; the NumPy reference needs it for gelu only), nor
the training modules and numpy.random (about 20 ms; loaded on first use).
Timing is left to bench/ (``rnnengine bench`` reports cold start); this checks
what is imported, which does not drift with the machine's load.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnnengine import kernels

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "io" / "fixtures" / "k3_lstm_stack.keras"

SCRIPT = r"""
import json, sys
import numpy as np
import rnnengine
model = rnnengine.load_keras(sys.argv[1])
shape = [d or 5 for d in model.input_shape[1:]]
y = model.predict(np.ones([2] + shape, np.float32))
assert np.isfinite(y).all()
print(json.dumps(sorted(m for m in sys.modules
                      if m.split(".")[0] in ("numba", "scipy") or m.startswith(("rnnengine.training", "numpy.random")))))
"""


@pytest.mark.skipif(not kernels.cython_available(), reason="the cold-start path is the Cython build's")
def test_fresh_process_first_prediction_imports_no_jit_and_no_heavy_scipy():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RNNENGINE_KERNELS", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(FIXTURE)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not [m for m in imported if m.startswith("numba")], imported
    assert "scipy.linalg" not in imported, imported
    assert not [m for m in imported if m.startswith("scipy.special")], imported
    assert "scipy.linalg.cython_blas" in imported
    # Sequential's regularization hook only: not the losses, optimizers, fit loop or its RNG.
    assert [m for m in imported if m.startswith("rnnengine.training")] == [
        "rnnengine.training", "rnnengine.training.regularization"], imported
    assert not [m for m in imported if m.startswith("numpy.random")], imported


TRAIN_SCRIPT = r"""
import json, sys
import numpy as np
import rnnengine
from rnnengine import layers as L
from rnnengine.models import Sequential
x = np.random.default_rng(0).standard_normal((8, 5, 3)).astype(np.float32)
y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2, 0, 1]]
for cell in (L.SimpleRNN, L.LSTM, L.GRU):
    model = Sequential([L.Input((5, 3)), cell(4, recurrent_dropout=0.3, dropout=0.2),
                                         L.Dense(3, activation="relu"), L.Activation("softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    assert np.isfinite(model.train_on_batch(x, y))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "numba")))
"""


@pytest.mark.skipif(not kernels.cython_available(), reason="the Cython build's training path")
def test_fresh_process_training_on_cython_imports_no_numba():
    """Every training kernel, recurrent dropout's and the Dense/Activation
    activation backward included, exists in the Cython backend."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RNNENGINE_KERNELS", None)
    proc = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_training_modules_load_on_first_use():
    code = ("import sys, rnnengine\n"
            "assert 'rnnengine.training.losses' not in sys.modules\n"
            "from rnnengine import callbacks, losses, metrics, optimizers, training\n"
            "from rnnengine.training import set_random_seed\n"
            "import rnnengine.losses as L\n"
            "assert L is losses and losses.MeanSquaredError and optimizers.Adam\n"
            "assert training.losses is sys.modules['rnnengine.training.losses']\n"
            "assert callable(set_random_seed) and callbacks.History and metrics\n"
            "assert {'losses', 'training', 'callbacks'} <= set(dir(rnnengine))\n"
            "try:\n"
            "    rnnengine.no_such_thing\n"
            "except AttributeError as e:\n"
            "    assert 'no_such_thing' in str(e)\n"
            "else:\n"
            "    raise SystemExit('no AttributeError')\n")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
