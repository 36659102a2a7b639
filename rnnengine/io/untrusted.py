"""``load_keras_untrusted``: ``load_keras`` with the file read in a child process.

A corrupt HDF5 file can hang inside libhdf5 itself (HDFGroup/hdf5#1707), where
no Python-level timeout reaches, or crash it. Here a fresh interpreter reads
the file (every libhdf5 call happens there) and hands back what it read, the
model's spec and weights, pickled to a temporary file; it is killed after
``timeout`` seconds. The model is then assembled in this process, from Python
objects only. This isolates hangs and crashes, it is not a sandbox: the child
runs with this process's rights.
"""
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import ModelFormatError


def load_keras_untrusted(path, timeout=60.0):
    """``load_keras(path)``, reading the file in a child process killed after
    ``timeout`` seconds. Raises as ``load_keras`` does, and ``ModelFormatError``
    when the reading takes longer than ``timeout`` or the child dies."""
    from . import assemble

    path = os.fspath(path)
    package_root = str(Path(__file__).resolve().parents[2])  # the child imports this very rnnengine
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.pickle")
        try:
            proc = subprocess.run([sys.executable, "-c", "from rnnengine.io.untrusted import _child; _child()",
                                   path, result], env=env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ModelFormatError(f"{path}: reading it took more than {timeout} s, the limit for an untrusted "
                                   "file (a corrupt HDF5 file can hang libhdf5)") from None
        if proc.returncode != 0 or not os.path.exists(result):
            detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            raise ModelFormatError(f"{path}: the process reading it died (exit status {proc.returncode}: "
                                   f"{detail[0][:300]})")
        with open(result, "rb") as f:
            status, payload = pickle.load(f)  # written by _child below, not by the file
    if status == "error":
        raise payload
    return assemble.build_model(*payload)


def _child():
    """In the child: read ``argv[1]``, pickle ("ok", (spec, weights, path)) or ("error", exception) to ``argv[2]``."""
    from .loader import read_model_file

    path, result = sys.argv[1:3]
    try:
        mf = read_model_file(path)
        data = pickle.dumps(("ok", (mf.spec, mf.weights, mf.path)))
    except Exception as exc:  # noqa: BLE001 - re-raised in the parent, as load_keras would raise it
        try:
            data = pickle.dumps(("error", exc))
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its text, then
            data = pickle.dumps(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
    with open(result, "wb") as f:
        f.write(data)
