"""Importing rnnengine and loading every kind of Keras file imports neither
TensorFlow nor Keras: checked in a fresh interpreter."""
import json
import os
import subprocess
import sys
from pathlib import Path

from .helpers import CASES, FIXTURES

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
import rnnengine
from rnnengine.io.inspect import inspect_main

files = json.loads(sys.argv[1])
for model_file, weights_file in files:
    model = rnnengine.load_keras(model_file)
    if weights_file:
        rnnengine.io.load_weights(model, weights_file)
inspect_main(files[0][0], out=lambda line: None)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "torch", "jax"))
print(json.dumps(heavy))
"""


def test_loading_imports_no_tensorflow_or_keras():
    files = []
    for case in CASES.values():
        for kind in ("keras", "h5"):
            weights = case["files"].get("weights") or case["files"].get("legacy_weights")
            files.append((str(FIXTURES / case["files"][kind]), str(FIXTURES / weights)))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(files)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
