"""An installed rnnengine never writes Numba's cache inside itself.

``@njit(cache=True)`` writes ``*.nbi``/``*.nbc`` beside each source file by
default. In ``site-packages/rnnengine/kernels/__pycache__`` pip does not know
them: after ``pip install -e .`` replaced the installed copy, the leftover
``site-packages/rnnengine/`` shadowed the editable package as a namespace
package. ``rnnengine/kernels/_numba_cache.py`` sends an installed package's
caches to the user cache directory; a source checkout keeps Numba's default.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numba.core.caching
import pytest
from numba.core import config as numba_config

import rnnengine
from rnnengine.kernels import _numba_cache

PACKAGE = Path(rnnengine.__file__).resolve().parent

# A tiny SimpleRNN through the Numba backend, checked against NumPy; prints
# where the forward kernel's cache lives.
SCRIPT = r"""
import sys
import numpy as np
import rnnengine
from rnnengine import layers
from rnnengine.models import Sequential

assert rnnengine.__file__.startswith(sys.argv[1]), rnnengine.__file__
assert rnnengine.config.get_kernels() == "numba", rnnengine.config.get_kernels()
T, C, H = 3, 2, 4
model = Sequential([layers.Input(shape=(T, C)), layers.SimpleRNN(H)])
rng = np.random.default_rng(0)
W, U, b = (rng.standard_normal(s).astype(np.float32) * 0.5 for s in ((C, H), (H, H), (H,)))
model.set_weights([W, U, b])
x = rng.standard_normal((2, T, C)).astype(np.float32)
y = model.predict(x, verbose=0)
h = np.zeros((2, H), np.float32)
for t in range(T):
    h = np.tanh(x[:, t] @ W + h @ U + b)
np.testing.assert_allclose(y, h, rtol=1e-5, atol=1e-5)
from rnnengine.kernels import numba_simple_rnn
print(numba_simple_rnn._simple_rnn_forward._cache.cache_path)
"""


def _copy_package(dest):
    """The package's .py files and its data folder: what a wheel without the
    compiled kernels would install."""
    def ignore(folder, names):
        inside_data = Path(folder).resolve().is_relative_to(PACKAGE / "data")
        keep = []
        for name in names:
            path = Path(folder, name)
            if name == "__pycache__":
                continue
            if path.is_dir() or name.endswith(".py") or (inside_data and not name.endswith((".nbi", ".nbc"))):
                keep.append(name)
        return [n for n in names if n not in keep]

    shutil.copytree(PACKAGE, dest, ignore=ignore)


def _numba_cache_files(root):
    return sorted(p for pattern in ("*.nbi", "*.nbc") for p in Path(root).rglob(pattern))


def test_installed_package_caches_numba_kernels_in_the_user_cache_dir(tmp_path):
    site = tmp_path / "lib" / "python3" / "site-packages"
    installed = site / "rnnengine"
    _copy_package(installed)
    assert (installed / "kernels" / "numba_simple_rnn.py").is_file()
    assert not list(installed.rglob("*.so")) and not _numba_cache_files(installed)
    xdg = tmp_path / "xdg-cache"

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NUMBA_CACHE_DIR", "NUMBA_CACHE_LOCATOR_CLASSES", "NUMBA_DISABLE_JIT",
                                "RNNENGINE_ISA"))}  # the copy has no kernel build to force
    env.update(PYTHONPATH=str(site), RNNENGINE_KERNELS="numba", XDG_CACHE_HOME=str(xdg),
               PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(installed)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    cache_path = Path(proc.stdout.strip().splitlines()[-1])
    assert cache_path.is_relative_to(xdg / "rnnengine" / "numba"), cache_path
    assert not _numba_cache_files(installed), _numba_cache_files(installed)
    written = _numba_cache_files(xdg)
    assert any(p.suffix == ".nbi" for p in written) and any(p.suffix == ".nbc" for p in written), written
    assert all(p.is_relative_to(xdg / "rnnengine" / "numba") for p in written), written
    assert any(p.name.startswith("numba_simple_rnn._simple_rnn_forward-") for p in written), written


def _a_function():
    return 1


def test_locator_is_first_and_leaves_other_cases_to_numba(tmp_path, monkeypatch):
    impl = getattr(numba.core.caching, "CacheImpl", None) or numba.core.caching._CacheImpl
    assert impl._locator_classes[0] is _numba_cache.RnnengineInstalledCacheLocator
    _numba_cache.install()  # idempotent
    assert sum(c is _numba_cache.RnnengineInstalledCacheLocator for c in impl._locator_classes) == 1

    locator = _numba_cache.RnnengineInstalledCacheLocator
    kernel_file = str(PACKAGE / "kernels" / "numba_simple_rnn.py")
    # A source checkout (this test run's editable install, or the tree itself).
    if _numba_cache._is_source_checkout():
        assert locator.from_function(_a_function, kernel_file) is None
    # Code outside the package.
    monkeypatch.setattr(_numba_cache, "_is_source_checkout", lambda package_dir=None: False)
    assert locator.from_function(_a_function, __file__) is None
    # An installed package: the user cache dir, else a temp dir.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    found = locator.from_function(_a_function, kernel_file)
    assert Path(found.get_cache_path()).is_relative_to(tmp_path / "xdg" / "rnnengine" / "numba")
    monkeypatch.setattr(_numba_cache, "user_cache_dir", lambda: os.devnull + "/not-a-folder")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    found = locator.from_function(_a_function, kernel_file)
    assert Path(found.get_cache_path()).is_relative_to(tmp_path / "tmp"), found.get_cache_path()
    # NUMBA_CACHE_DIR set by the user: Numba's own UserProvidedCacheLocator.
    monkeypatch.setattr(numba_config, "CACHE_DIR", str(tmp_path / "numba-cache-dir"))
    assert locator.from_function(_a_function, kernel_file) is None


@pytest.mark.parametrize("parent,marker,want", [
    ("site-packages", "setup.py", False),  # a stray setup.py in site-packages
    ("dist-packages", None, False),
    ("checkout", "pyproject.toml", True),
    ("checkout", "setup.py", True),
    ("somewhere", None, False),
])
def test_source_checkout_detection(tmp_path, parent, marker, want):
    package = tmp_path / parent / "rnnengine"
    package.mkdir(parents=True)
    if marker:
        (tmp_path / parent / marker).write_text("")
    assert _numba_cache._is_source_checkout(str(package)) is want
