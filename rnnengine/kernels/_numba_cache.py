"""Where rnnengine's own Numba kernels keep their on-disk cache (``cache=True``).

Numba's default writes the cache (``*.nbi``/``*.nbc``) into the
``__pycache__`` beside each source file. For an installed package that is
inside ``site-packages/rnnengine/``, where pip does not know the files: a later
``pip uninstall`` or ``pip install -e .`` leaves them, and the leftover
``site-packages/rnnengine/`` directory then shadows the editable package as a
namespace package (``cannot import name ... from 'rnnengine.kernels' (unknown
location)``).

So, for source files inside this package only, and only where the package is
installed (not a source checkout), the locator below puts the cache in a user
cache directory: ``$XDG_CACHE_HOME/rnnengine/numba`` (else the platform's,
``~/.cache/rnnengine/numba`` on Linux), or a per-user temp directory where that
is not writable. Each source folder gets its own subfolder (Numba's hashed
``<folder>_<sha1>`` naming), so two installs (two virtual environments) never
share entries; entries are keyed on the source's content anyway.

Left to Numba's own rules: a source checkout (editable install; the in-tree
``__pycache__`` is gitignored there), ``NUMBA_CACHE_DIR`` set by the user,
``NUMBA_CACHE_LOCATOR_CLASSES`` set by the user, and any other package's code.

Every module of rnnengine that applies ``@njit(cache=True)`` imports this one
before it imports Numba's decorators, so the locator is in place before the
first dispatcher looks for its cache.
"""
import os
import sys
import tempfile

from numba.core import caching as _caching
from numba.core import config as _numba_config

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../rnnengine
_SITE_DIR_NAMES = ("site-packages", "dist-packages")
_CHECKOUT_MARKERS = ("pyproject.toml", "setup.py")


def _norm(path):
    return os.path.normcase(os.path.realpath(path))


def _is_source_checkout(package_dir=None):
    """True where ``package_dir`` (default: this rnnengine) is the package folder
    of a source tree (an editable install, a checkout on PYTHONPATH), not an
    installed copy: the folder above it holds pyproject.toml or setup.py and is
    no site-packages."""
    parent = os.path.dirname(os.path.abspath(package_dir or _PACKAGE_DIR))
    if os.path.basename(parent).lower() in _SITE_DIR_NAMES:
        return False
    return any(os.path.isfile(os.path.join(parent, name)) for name in _CHECKOUT_MARKERS)


def _in_package(py_file, package_dir=None):
    root = _norm(package_dir or _PACKAGE_DIR) + os.sep
    return _norm(py_file).startswith(root)


def user_cache_dir():
    """The folder rnnengine's installed kernels cache into (not created here)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        base = xdg
    elif sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
    elif sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Caches")
    else:
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rnnengine", "numba")


def _temp_cache_dir():
    try:
        user = str(os.getuid())
    except AttributeError:  # Windows
        user = os.environ.get("USERNAME", "user")
    return os.path.join(tempfile.gettempdir(), f"rnnengine-numba-{user}")


class RnnengineInstalledCacheLocator(_caching._SourceFileBackedLocatorMixin, _caching._CacheLocator):
    """Numba cache locator for an installed rnnengine's own kernels: caches into
    :func:`user_cache_dir` (a temp folder where that is not writable), never
    into the installed package."""

    _rnnengine_locator = True

    def __init__(self, py_func, py_file, base_dir):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(base_dir, self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self):
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file):
        if _numba_config.CACHE_DIR:  # the user chose: Numba's UserProvidedCacheLocator
            return None
        if not os.path.isfile(py_file) or not _in_package(py_file) or _is_source_checkout():
            return None
        for base_dir in (user_cache_dir(), _temp_cache_dir()):
            self = cls(py_func, py_file, base_dir)
            try:
                self.ensure_cache_path()
            except OSError:
                continue
            return self
        # Neither folder is writable: Numba's own chain decides (its user-wide
        # locator, else the in-tree __pycache__ if that is writable).
        return None


def _cache_impl_class():
    # Numba 0.68 names it CacheImpl; older releases (requires numba>=0.58) _CacheImpl.
    return getattr(_caching, "CacheImpl", None) or getattr(_caching, "_CacheImpl")


def install():
    """Put the locator first in Numba's list (idempotent). Every cache kind
    (functions, and the library caches of cfuncs and friends) shares the list."""
    locators = _cache_impl_class()._locator_classes
    if not any(getattr(cls, "_rnnengine_locator", False) for cls in locators):
        locators.insert(0, RnnengineInstalledCacheLocator)


install()
