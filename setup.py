"""Build the Cython kernels; the package metadata lives in pyproject.toml.

    pip install .                                    # wheel with compiled kernels
    python setup.py build_ext --inplace              # development build
    RNNENGINE_CYTHON_BOUNDSCHECK=1 python setup.py build_ext --inplace
                                                     # debug build for CI
    RNNENGINE_PORTABLE=1 pip wheel .                 # no -march=native

Layout: the sources are src/_*.pyx (with src/_blas.pxd and src/_gates.pxd);
the modules are rnnengine.kernels._cy_*. src/ is on the Cython include path, so
`from _blas cimport _gemm` in a kernel resolves to src/_blas.pxd at compile
time. Everything the kernels cimport from src/ is `cdef inline`, so no kernel
module imports another of ours at run time; the only run-time link is
scipy.linalg.cython_blas (see src/_blas.pxd). That holds for `pip install .`
from a clean clone as well as for in-place builds: no package-relative cimport
has to match a directory layout.

RNNENGINE_CYTHON_BOUNDSCHECK=1 compiles with boundscheck and wraparound on and
defines RNNENGINE_BOUNDSCHECK, which makes each kernel entry check every
buffer's shape against the dims it is given (the switch sklearn calls
SKLEARN_ENABLE_DEBUG_CYTHON_DIRECTIVES). Switching it rebuilds everything.

OpenMP: -fopenmp where a test program compiles and links with it (gcc, clang
with libomp), /openmp on MSVC, otherwise a serial build (prange runs as a plain
loop).
"""
import os
import tempfile

import numpy

from Cython.Distutils import build_ext as _cython_build_ext
from setuptools import Extension, setup
from setuptools.errors import CCompilerError, CompileError, LinkError

BOUNDSCHECK = os.environ.get("RNNENGINE_CYTHON_BOUNDSCHECK", "0") == "1"
# rnnengine installs from source, on the machine that runs it, so the kernels
# are compiled for that CPU (-march=native): the gate loops then vectorize with
# its widest SIMD (AVX2/AVX-512), as Numba's do; with the x86-64 baseline
# (SSE2) the Cython kernels ran 2x slower than Numba's at batch 1. Set
# RNNENGINE_PORTABLE=1 to build a wheel for other machines.
PORTABLE = os.environ.get("RNNENGINE_PORTABLE", "0") == "1"

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": BOUNDSCHECK,
    "wraparound": BOUNDSCHECK,
    "cdivision": True,
    "initializedcheck": BOUNDSCHECK,
}

MODULES = {  # module name -> source
    "rnnengine.kernels._cy_blas": "src/_blas.pyx",
    "rnnengine.kernels._cy_simple_rnn": "src/_simple_rnn.pyx",
    "rnnengine.kernels._cy_lstm": "src/_lstm.pyx",
    "rnnengine.kernels._cy_gru": "src/_gru.pyx",
    "rnnengine.kernels._cy_dense": "src/_dense.pyx",
    "rnnengine.kernels._cy_plan": "src/_plan.pyx",  # numpy's C API: its headers
}
PXDS = ["src/_blas.pxd", "src/_gates.pxd", "src/_split.pxd", "src/_rec_gemm.h", "src/_step_pool.h"]

_OPENMP_TEST = "#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n"


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
        if self.compiler.compiler_type != "msvc":
            # -fno-trapping-math (clang's and LLVM's, so Numba's, default): no
            # code reads the floating-point exception flags, and with GCC's
            # default (trapping math) floorf and the selects after a division
            # keep the float32 sigmoid loop (src/_gates.pxd) from vectorizing:
            # 2x slower. It changes no value; GCC still neither reassociates
            # nor assumes away NaN, inf or signed zeros.
            cflags = ["-O3", "-fno-trapping-math", *cflags]
            if not PORTABLE:
                cflags.append("-march=native")
        for ext in self.extensions:
            ext.extra_compile_args = [*ext.extra_compile_args, *cflags]
            ext.extra_link_args = [*ext.extra_link_args, *ldflags]
        # A build in the other mode leaves .c and .so files that look up to
        # date: force a full rebuild when the mode (directives or -march) or
        # the compile flags change.
        mode = ("boundscheck" if BOUNDSCHECK else "release") + (
            "-portable" if PORTABLE else "-native") + " " + " ".join(cflags)
        stamp = os.path.join(self.build_temp, "rnnengine-cython-mode")
        previous = open(stamp).read() if os.path.exists(stamp) else None
        if previous != mode:
            self.force = True
        super().build_extensions()
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp, "w") as f:
            f.write(mode)


setup(
    ext_modules=[
        Extension(
            name,
            [source],
            depends=PXDS,
            include_dirs=["src", numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
            + ([("RNNENGINE_BOUNDSCHECK", "1")] if BOUNDSCHECK else []),
        )
        for name, source in MODULES.items()
    ],
    cmdclass={"build_ext": build_ext},
)
