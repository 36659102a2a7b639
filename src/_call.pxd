# cython: language_level=3
# The pointer kernels' signatures, one typedef per cell and dtype: the C side
# of rnnengine/kernels/contract.py (the same arguments in the same order, as
# pointers). Each kernel module assigns its pointer kernel to one of these
# before wrapping it in a capsule (_pointer_kernels), so a signature that
# drifts from this file fails to compile there; src/_plan.pyx calls through
# them.
ctypedef const unsigned char* keep_p
ctypedef void (*simple_rnn_f)(float*, float*, float*, float*, const float*, keep_p, const float*,
                              const float*, const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                              Py_ssize_t, int, bint, bint, bint) noexcept nogil
ctypedef void (*simple_rnn_d)(double*, double*, double*, double*, const double*, keep_p,
                              const double*, const double*, const double*, Py_ssize_t, Py_ssize_t,
                              Py_ssize_t, Py_ssize_t, int, bint, bint, bint) noexcept nogil
ctypedef void (*lstm_f)(float*, float*, float*, float*, float*, const float*, keep_p, const float*,
                        const float*, const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                        Py_ssize_t, int, int, bint, bint, bint) noexcept nogil
ctypedef void (*lstm_d)(double*, double*, double*, double*, double*, const double*, keep_p,
                        const double*, const double*, const double*, Py_ssize_t, Py_ssize_t,
                        Py_ssize_t, Py_ssize_t, int, int, bint, bint, bint) noexcept nogil
ctypedef void (*gru_f)(float*, float*, float*, float*, float*, float*, const float*, keep_p,
                       const float*, const float*, const float*, const float*, const float*,
                       Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, int, int, bint, bint, bint,
                       bint) noexcept nogil
ctypedef void (*gru_d)(double*, double*, double*, double*, double*, double*, const double*, keep_p,
                       const double*, const double*, const double*, const double*, const double*,
                       Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, int, int, bint, bint,
                       bint, bint) noexcept nogil
ctypedef void (*activation_f)(float*, Py_ssize_t, Py_ssize_t, int) noexcept nogil  # in place, (N, F)
ctypedef void (*activation_d)(double*, Py_ssize_t, Py_ssize_t, int) noexcept nogil
ctypedef void (*dense_f)(float*, const float*, const float*, const float*, Py_ssize_t, Py_ssize_t,
                         Py_ssize_t, int, bint) noexcept nogil
ctypedef void (*dense_d)(double*, const double*, const double*, const double*, Py_ssize_t,
                         Py_ssize_t, Py_ssize_t, int, bint) noexcept nogil
