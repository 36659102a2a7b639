"""The Cython kernels compiled for the avx2 ISA level (setup.py); chosen by rnnengine.kernels._isa."""
