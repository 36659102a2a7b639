"""``rnnengine.info()`` and ``rnnengine info``: what this process runs on."""
import json
import os
import platform
import sys


def _blas_libraries():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        {key: lib.get(key) for key in ("user_api", "internal_api", "version", "architecture",
                                       "num_threads", "filepath")}
        for lib in threadpool_info() if lib.get("user_api") == "blas"
    ]


def _numba_target():
    """Numba's LLVM target CPU and its features (``NUMBA_CPU_NAME`` overrides the host's)."""
    try:
        import numba
        from llvmlite import binding
    except ImportError:
        return None
    name = numba.config.CPU_NAME or binding.get_host_cpu_name()
    return {"version": numba.__version__, "cpu_name": name,
            "forced": bool(numba.config.CPU_NAME), "cpu_features": numba.config.CPU_FEATURES or None}


def info():
    """What this process runs: a dict of plain data.

    ``isa`` (the Cython kernel build chosen at import, ``kernels/_isa.py``),
    ``isa_built``, ``isa_supported`` and ``cpu_features``; ``kernels`` (the
    selected backend) and ``cython`` (whether its build loaded);
    ``num_threads``; ``deterministic``; ``numba`` (its target CPU); ``blas``
    (the BLAS libraries threadpoolctl finds: NumPy's and SciPy's, with their
    kernel architecture and threads); and the machine.
    """
    from . import __version__, config, kernels
    from .kernels import _isa

    features = _isa.cpu_features()
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "isa": kernels.ISA,
        "isa_forced": os.environ.get("RNNENGINE_ISA") or None,
        "isa_built": _isa.built_isas(),
        "isa_supported": _isa.supported_isas(features),
        "cpu_features": sorted(f for f, ok in features.items() if ok),
        "kernels": config.get_kernels(),
        "cython": kernels.cython_available(),
        "cython_error": None if kernels.CYTHON_IMPORT_ERROR is None else str(kernels.CYTHON_IMPORT_ERROR),
        "num_threads": config.get_num_threads(),
        "deterministic": config.get_deterministic(),
        "numba": _numba_target(),
        "blas": _blas_libraries(),
        "openblas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                    "OPENBLAS_NUM_THREADS") if k in os.environ},
    }


def info_main(as_json=False):
    data = info()
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    width = max(len(k) for k in data)
    for key, value in data.items():
        if key == "blas":
            for lib in value:
                print(f"{'blas':<{width}}  {lib['internal_api']} {lib['version']} "
                      f"({lib['architecture']}, {lib['num_threads']} threads) {lib['filepath']}")
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        print(f"{key:<{width}}  {value}")
    return 0
