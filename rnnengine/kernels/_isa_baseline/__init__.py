"""The Cython kernels compiled for the baseline ISA level (setup.py); chosen by rnnengine.kernels._isa."""
