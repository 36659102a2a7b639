"""The Cython kernels compiled for the avx512 ISA level (setup.py); chosen by rnnengine.kernels._isa."""
