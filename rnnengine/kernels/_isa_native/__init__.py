"""The Cython kernels compiled for the native ISA level (setup.py); chosen by rnnengine.kernels._isa."""
