"""Which build of the Cython kernels this process runs: runtime CPU dispatch.

setup.py compiles every kernel module once per ISA level into
``rnnengine.kernels._isa_<name>``: ``baseline`` (x86-64-v2: SSE4.2), ``avx2``
(x86-64-v3: AVX2 + FMA) and ``avx512`` (x86-64-v4: AVX-512 F/BW/CD/DQ/VL), or
a single ``native`` build (``RNNENGINE_BUILD_ISAS=native``, -march=native).
At import the widest level that the CPU and the OS support and that is built
is chosen, as NumPy chooses its SIMD kernels. ``RNNENGINE_ISA`` forces one:
naming a level the CPU lacks, one that is not built, or an unknown name raises
``RuntimeError``/``ValueError`` with the CPU's features.

The levels compute the same math; their results differ by float32 rounding
(FMA contraction, vector width), so bit-identity holds within one level.
"""
import importlib
import os

ISAS = ("baseline", "avx2", "avx512")  # narrowest first
NATIVE = "native"
# What each level needs, as rnnengine.kernels._cpu.features() names them.
REQUIRES = {
    "baseline": ("sse4.2", "popcnt"),
    "avx2": ("sse4.2", "popcnt", "avx", "avx2", "fma", "bmi2"),
    "avx512": ("sse4.2", "popcnt", "avx", "avx2", "fma", "bmi2",
               "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
}


def cpu_features():
    """{feature: bool} as the CPU reports it ({} off x86-64 or without a build)."""
    try:
        from . import _cpu
    except ImportError:
        return {}
    return _cpu.features()


def built_isas():
    """The kernel builds present in this installation, narrowest first."""
    here = os.path.dirname(__file__)
    found = []
    for name in (*ISAS, NATIVE):
        folder = os.path.join(here, f"_isa_{name}")
        if os.path.isdir(folder) and any(f.startswith("_cy_plan.") for f in os.listdir(folder)):
            found.append(name)
    return found


def supported_isas(features=None):
    """The levels this CPU can run, narrowest first."""
    features = cpu_features() if features is None else features
    if not features:  # not x86-64 (or no _cpu): only the compiler's default build
        return ["baseline"]
    return [isa for isa in ISAS if all(features.get(f, False) for f in REQUIRES[isa])]


def _describe(features):
    have = sorted(f for f, ok in features.items() if ok)
    lack = sorted(f for f, ok in features.items() if not ok)
    return f"this CPU has {', '.join(have) or 'none of them'}; lacks {', '.join(lack) or 'nothing'}"


def choose_isa(requested=None, features=None, built=None):
    """The level to load: ``requested`` (default ``RNNENGINE_ISA``) or the widest one."""
    if requested is None:
        requested = os.environ.get("RNNENGINE_ISA", "").strip().lower() or None
    features = cpu_features() if features is None else features
    built = built_isas() if built is None else built
    supported = supported_isas(features)
    if requested is not None:
        if requested not in (*ISAS, NATIVE):
            raise ValueError(f"RNNENGINE_ISA={requested!r}: expected one of "
                             f"{', '.join((*ISAS, NATIVE))} ({_describe(features)}).")
        # (features unknown: no _cpu module, i.e. no build at all, or not x86-64)
        if requested != NATIVE and features and requested not in supported:
            need = [f for f in REQUIRES[requested] if not features.get(f, False)]
            raise RuntimeError(f"RNNENGINE_ISA={requested}: this CPU lacks {', '.join(need)} "
                               f"({_describe(features)}).")
        if requested not in built:
            raise RuntimeError(f"RNNENGINE_ISA={requested}: this installation has no {requested} "
                               f"build of the kernels (built: {', '.join(built) or 'none'}).")
        return requested
    if NATIVE in built:  # built on request for the machine that runs it
        return NATIVE
    for isa in reversed(ISAS):
        if isa in supported and isa in built:
            return isa
    return None


MODULES = ("_cy_blas", "_cy_dense", "_cy_gru", "_cy_lstm", "_cy_rdrop", "_cy_simple_rnn", "_cy_plan")


def load(isa):
    """Import the ``isa`` build's kernel modules: {name: module}.

    _cy_blas first: the other modules take the batch-1 split's job runner
    from ``rnnengine.kernels._cy_blas`` while they import, so the chosen
    build's is registered under that name before them."""
    import sys

    modules = {}
    for name in MODULES:
        module = importlib.import_module(f"rnnengine.kernels._isa_{isa}.{name}")
        sys.modules[f"rnnengine.kernels.{name}"] = module
        modules[name] = module
    return modules
