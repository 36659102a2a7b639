"""Build the Cython kernels; the package metadata lives in pyproject.toml.

    pip install .                                    # wheel with compiled kernels
    python setup.py build_ext --inplace              # development build
    RNNENGINE_CYTHON_BOUNDSCHECK=1 python setup.py build_ext --inplace
                                                     # debug build for CI
    RNNENGINE_BUILD_ISAS=native pip install .        # one build for this CPU only

Runtime CPU dispatch, as NumPy does it: on x86-64 every kernel module is
compiled three times, for the x86-64-v2 baseline (SSE4.2), for AVX2 + FMA
(x86-64-v3) and for AVX-512 (x86-64-v4), into rnnengine.kernels._isa_<name>;
at import rnnengine.kernels._isa picks the widest one the CPU and the OS
support (RNNENGINE_ISA forces one). So a wheel built on any machine runs on
any x86-64-v2 CPU, with the vector width of the CPU it runs on.
RNNENGINE_BUILD_ISAS (comma-separated: baseline, avx2, avx512, native) builds
a subset; "native" is -march=native, for this machine only. Elsewhere (not
x86-64, or MSVC without the flags) one baseline build with the compiler's
defaults. rnnengine.kernels._cpu (compiled without ISA flags) reports what the
CPU has.

Layout: the sources are src/_*.pyx (with src/_blas.pxd, src/_gates.pxd and
src/_split.pxd); the modules are rnnengine.kernels._isa_<name>._cy_*. src/ is
on the Cython include path, so `from _blas cimport _gemm` in a kernel resolves
to src/_blas.pxd at compile time. Everything the kernels cimport from src/ is
`cdef inline`, so no kernel module imports another of ours at run time except
through rnnengine.kernels._cy_blas, the chosen build's (the batch-1 split's
job runner); the only other run-time link is scipy.linalg.cython_blas (see
src/_blas.pxd).

RNNENGINE_CYTHON_BOUNDSCHECK=1 compiles with boundscheck and wraparound on and
defines RNNENGINE_BOUNDSCHECK, which makes each kernel entry check every
buffer's shape against the dims it is given (the switch sklearn calls
SKLEARN_ENABLE_DEBUG_CYTHON_DIRECTIVES). Switching it rebuilds everything.

OpenMP: -fopenmp where a test program compiles and links with it (gcc, clang
with libomp), /openmp on MSVC, otherwise a serial build (prange runs as a plain
loop).
"""
import os
import platform
import tempfile

import numpy

from Cython.Distutils import build_ext as _cython_build_ext
from setuptools import Extension, setup
from setuptools.errors import CCompilerError, CompileError, LinkError

BOUNDSCHECK = os.environ.get("RNNENGINE_CYTHON_BOUNDSCHECK", "0") == "1"

# The ISA levels, as GCC/Clang feature flags (the same sets as -march=x86-64-v2,
# -v3 and -v4, spelled out so that compilers older than GCC 11 take them too),
# tuned for no CPU in particular: the same wheel serves Intel and AMD.
_V2 = ["-msse3", "-mssse3", "-msse4.1", "-msse4.2", "-mpopcnt", "-mcx16", "-msahf"]
_V3 = _V2 + ["-mavx", "-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2", "-mlzcnt", "-mmovbe"]
_V4 = _V3 + ["-mavx512f", "-mavx512bw", "-mavx512cd", "-mavx512dq", "-mavx512vl"]
ISA_FLAGS = {"baseline": _V2, "avx2": _V3, "avx512": _V4, "native": ["-march=native"]}
MSVC_ISA_FLAGS = {"baseline": [], "avx2": ["/arch:AVX2"], "avx512": ["/arch:AVX512"]}
X86_64 = platform.machine().lower() in ("x86_64", "amd64")

MODULES = {  # module name within rnnengine.kernels._isa_<name> -> source
    "_cy_blas": "src/_blas.pyx",
    "_cy_simple_rnn": "src/_simple_rnn.pyx",
    "_cy_lstm": "src/_lstm.pyx",
    "_cy_gru": "src/_gru.pyx",
    "_cy_dense": "src/_dense.pyx",
    "_cy_rdrop": "src/_rdrop.pyx",
    "_cy_plan": "src/_plan.pyx",  # numpy's C API: its headers
}
PXDS = ["src/_blas.pxd", "src/_call.pxd", "src/_gates.pxd", "src/_mask.pxd", "src/_split.pxd", "src/_rec_gemm.h",
        "src/_step_pool.h", "src/_interrupt.h"]

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": BOUNDSCHECK,
    "wraparound": BOUNDSCHECK,
    "cdivision": True,
    "initializedcheck": BOUNDSCHECK,
}

_OPENMP_TEST = "#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n"


def _requested_isas():
    value = os.environ.get("RNNENGINE_BUILD_ISAS", "").strip()
    if not value:
        return ["baseline", "avx2", "avx512"] if X86_64 else ["baseline"]
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in ISA_FLAGS]
    if unknown:
        raise SystemExit(f"RNNENGINE_BUILD_ISAS: unknown {unknown}; expected any of {sorted(ISA_FLAGS)}")
    if not X86_64 and any(n in ("avx2", "avx512") for n in names):
        raise SystemExit(f"RNNENGINE_BUILD_ISAS={value}: avx2/avx512 exist on x86-64 only")
    return names


def _compiles_with(compiler, flags):
    """Whether ``compiler`` accepts ``flags`` (an old compiler may lack AVX-512)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "flags_test.c")
        with open(source, "w") as f:
            f.write("int main(void) { return 0; }\n")
        try:
            compiler.compile([source], output_dir=tmp, extra_postargs=flags)
        except (CCompilerError, CompileError):
            return False
    return True


def _openmp_flags(compiler):
    """(compile_args, link_args) for OpenMP with ``compiler``; empty if unsupported."""
    if compiler.compiler_type == "msvc":
        return ["/openmp"], []
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "omp_test.c")
        with open(source, "w") as f:
            f.write(_OPENMP_TEST)
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objects, "omp_test", output_dir=tmp,
                                     extra_postargs=["-fopenmp"])
        except (CCompilerError, CompileError, LinkError):
            print("rnnengine: the compiler has no OpenMP; building serial kernels.")
            return [], []
    return ["-fopenmp"], ["-fopenmp"]


class build_ext(_cython_build_ext):
    def finalize_options(self):
        super().finalize_options()
        self.cython_directives = {**DIRECTIVES, **self.cython_directives}
        self.cython_include_dirs = ["src", *self.cython_include_dirs]
        self.cython_c_in_temp = 1  # generated .c under build/, not next to src/*.pyx

    def build_extensions(self):
        cflags, ldflags = _openmp_flags(self.compiler)
        msvc = self.compiler.compiler_type == "msvc"
        if not msvc:
            # -fno-trapping-math (clang's and LLVM's, so Numba's, default): no
            # code reads the floating-point exception flags, and with GCC's
            # default (trapping math) floorf and the selects after a division
            # keep the float32 sigmoid loop (src/_gates.pxd) from vectorizing:
            # 2x slower. It changes no value; GCC still neither reassociates
            # nor assumes away NaN, inf or signed zeros.
            cflags = ["-O3", "-fno-trapping-math", *cflags]
        built = []
        for ext in self.extensions:
            isa = getattr(ext, "rnnengine_isa", None)
            isa_flags = []
            if isa is not None and (X86_64 or isa == "native"):
                isa_flags = (MSVC_ISA_FLAGS if msvc else ISA_FLAGS).get(isa, [])
                if isa_flags and not _compiles_with(self.compiler, isa_flags):
                    print(f"rnnengine: the compiler rejects {' '.join(isa_flags)}; "
                          f"skipping the {isa} kernels.")
                    continue
            ext.extra_compile_args = [*ext.extra_compile_args, *cflags, *isa_flags]
            ext.extra_link_args = [*ext.extra_link_args, *ldflags]
            built.append(ext)
        self.extensions = built
        # A build in the other mode leaves .c and .so files that look up to
        # date: force a full rebuild when the mode or the compile flags change.
        mode = ("boundscheck" if BOUNDSCHECK else "release") + " " + " ".join(cflags)
        stamp = os.path.join(self.build_temp, "rnnengine-cython-mode")
        previous = open(stamp).read() if os.path.exists(stamp) else None
        if previous != mode:
            self.force = True
        super().build_extensions()
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp, "w") as f:
            f.write(mode)

    def build_extension(self, ext):
        # Each ISA's build of a .pyx gets its own generated .c and objects
        # (they carry the module's full name, which differs per ISA).
        isa = getattr(ext, "rnnengine_isa", None)
        if isa is None:
            return super().build_extension(ext)
        build_temp = self.build_temp
        self.build_temp = os.path.join(build_temp, "isa-" + isa)
        try:
            return super().build_extension(ext)
        finally:
            self.build_temp = build_temp


def _extension(name, source, isa=None):
    ext = Extension(
        name,
        [source],
        depends=PXDS,
        include_dirs=["src", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
        + ([("RNNENGINE_BOUNDSCHECK", "1")] if BOUNDSCHECK else []),
    )
    ext.rnnengine_isa = isa
    return ext


setup(
    ext_modules=[_extension("rnnengine.kernels._cpu", "src/_cpu.pyx")]
    + [
        _extension(f"rnnengine.kernels._isa_{isa}.{name}", source, isa)
        for isa in _requested_isas()
        for name, source in MODULES.items()
    ],
    cmdclass={"build_ext": build_ext},
)
