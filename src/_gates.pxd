# Gate helpers for the Cython kernels: the activations, inline and nogil, the
# gate-loop thread setting and the debug-check switch the kernels share.
#
# Contract: apply(code, v) is the twin of rnnengine/kernels/_activations.py's
# apply: the same int codes, the same formulas, the same NaN behaviour (NaN in,
# NaN out, for every code); apply_grad(code, pre, post) and apply_grad_block are
# the twins of its apply_grad and apply_grad_block (the backward kernels'
# derivatives; an unknown code gives 1, as there). Both compute in v's type
# (float functions of libm for float32), so float32 results differ from Numba's
# by float rounding only. Row-wise codes (softmax) never reach a recurrent cell;
# an unknown code returns v unchanged, as in _activations.
from cython cimport floating
from libc.string cimport memcpy
from libc.math cimport erf, erff, exp, expf, expm1, expm1f, fabs, fabsf
from libc.math cimport floorf, log, log1p, log1pf, logf, tanh, tanhf


# Codes: keep in step with _activations.py (the kernel parity tests run every
# code through both backends).
cdef enum:
    LINEAR = 0
    TANH = 1
    SIGMOID = 2
    HARD_SIGMOID = 3
    RELU = 4
    ELU = 5
    SELU = 6
    SOFTPLUS = 7
    SOFTSIGN = 8
    SWISH = 9
    GELU = 10
    EXPONENTIAL = 11
    HARD_SIGMOID_K2 = 12
    RELU6 = 13
    LEAKY_RELU = 14
    HARD_SWISH = 15
    MISH = 16


# libm by dtype: tanhf for float32 keeps the whole cell in single precision.
cdef inline floating _tanh(floating v) noexcept nogil:
    if floating is float:
        return tanhf(v)
    else:
        return tanh(v)


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


cdef inline floating _log(floating v) noexcept nogil:
    if floating is float:
        return logf(v)
    else:
        return log(v)


cdef inline floating _expm1(floating v) noexcept nogil:
    if floating is float:
        return expm1f(v)
    else:
        return expm1(v)


cdef inline floating _log1p(floating v) noexcept nogil:
    if floating is float:
        return log1pf(v)
    else:
        return log1p(v)


cdef inline floating _erf(floating v) noexcept nogil:
    if floating is float:
        return erff(v)
    else:
        return erf(v)


cdef inline floating _fabs(floating v) noexcept nogil:
    if floating is float:
        return fabsf(v)
    else:
        return fabs(v)


# Python's (and Numba's) max(a, b) and min(a, b): b only where it compares
# greater (smaller), so max(nan, 0) is nan. fmax/fmin would drop the NaN.
cdef inline floating _max(floating a, floating b) noexcept nogil:
    return b if b > a else a


cdef inline floating _min(floating a, floating b) noexcept nogil:
    return b if b < a else a


cdef inline floating _sigmoid(floating v) noexcept nogil:
    # _activations' two branches, 1 / (1 + exp(-v)) for v >= 0 and
    # exp(v) / (1 + exp(v)) below, so that exp never overflows; written with
    # one exp(-|v|) and a select on the numerator, which gives the same values
    # without a data-dependent branch (half of them mispredicted on gate inputs).
    cdef floating e = _exp(-_fabs(v))
    return (1 if v >= 0 else e) / (1 + e)


cdef inline floating _softplus(floating v) noexcept nogil:
    # log1p(exp(v)) without overflow: max(v, 0) + log1p(exp(-|v|))
    return _max(v, <floating>0) + _log1p(_exp(-_fabs(v)))


cdef inline floating apply(int code, floating v) noexcept nogil:
    """Elementwise activation ``code`` at ``v``, in v's type."""
    if code == TANH:
        return _tanh(v)
    if code == SIGMOID:
        return _sigmoid(v)
    if code == LINEAR:
        return v
    if code == HARD_SIGMOID:
        # Keras 3: relu6(v + 3) / 6
        return _min(_max(v / 6 + <floating>0.5, <floating>0), <floating>1)
    if code == RELU:
        return _max(v, <floating>0)
    if code == ELU:
        return v if v > 0 else _expm1(v)
    if code == SELU:
        # SELU_SCALE * (v or SELU_ALPHA * expm1(v)), constants of _activations.py
        return <floating>1.0507009873554804934193349852946 * (
            v if v > 0 else <floating>1.6732632423543772848170429916717 * _expm1(v))
    if code == SOFTPLUS:
        return _softplus(v)
    if code == SOFTSIGN:
        return v / (1 + _fabs(v))
    if code == SWISH:
        return v * _sigmoid(v)
    if code == GELU:
        # exact erf form; 0.7071... is SQRT_HALF
        return <floating>0.5 * v * (1 + _erf(v * <floating>0.7071067811865476))
    if code == EXPONENTIAL:
        return _exp(v)
    if code == HARD_SIGMOID_K2:
        # Keras 2: clip(0.2 * v + 0.5, 0, 1)
        return _min(_max(<floating>0.2 * v + <floating>0.5, <floating>0), <floating>1)
    if code == RELU6:
        return _min(_max(v, <floating>0), <floating>6)
    if code == LEAKY_RELU:
        return v if v >= 0 else <floating>0.2 * v
    if code == HARD_SWISH:
        return v * _min(_max(v / 6 + <floating>0.5, <floating>0), <floating>1)
    if code == MISH:
        return v * _tanh(_softplus(v))
    return v


cdef inline floating apply_grad(int code, floating pre, floating post) noexcept nogil:
    """Derivative of activation ``code`` at ``pre``, where ``post = apply(code, pre)``.

    The twin of _activations.apply_grad: the same formulas and the same
    one-sided values at the kinks (TensorFlow's: relu and leaky_relu take the
    left value at 0, relu6 and the hard sigmoids are 0 on the clip bounds),
    computed in pre's type. Codes whose derivative is a function of the output
    (tanh, sigmoid, exponential, elu, selu) read ``post``; the others ``pre``.
    For LSTM's cell activation, ``pre`` is the cell state c and ``post`` act(c).
    """
    cdef floating d, s, t, hs
    if code == TANH:
        return 1 - post * post
    if code == SIGMOID:
        return post * (1 - post)
    if code == LINEAR:
        return 1
    if code == HARD_SIGMOID:
        return <floating>(1.0 / 6.0) if -3 < pre < 3 else 0
    if code == RELU:
        return 1 if pre > 0 else 0
    if code == ELU:
        return 1 if pre > 0 else post + 1
    if code == SELU:
        # SELU_SCALE, else post + SELU_SCALE * SELU_ALPHA
        if pre > 0:
            return <floating>1.0507009873554804934193349852946
        return post + <floating>(1.0507009873554804934193349852946 * 1.6732632423543772848170429916717)
    if code == SOFTPLUS:
        return _sigmoid(pre)
    if code == SOFTSIGN:
        d = 1 + _fabs(pre)
        return 1 / (d * d)
    if code == SWISH:
        s = _sigmoid(pre)
        return s * (1 + pre * (1 - s))
    if code == GELU:
        # 0.7071... is SQRT_HALF, 0.3989... INV_SQRT_2PI
        return (<floating>0.5 * (1 + _erf(pre * <floating>0.7071067811865476))
                + pre * <floating>0.3989422804014327 * _exp(<floating>-0.5 * pre * pre))
    if code == EXPONENTIAL:
        return post
    if code == HARD_SIGMOID_K2:
        return <floating>0.2 if -2.5 < pre < 2.5 else 0
    if code == RELU6:
        return 1 if 0 < pre < 6 else 0
    if code == LEAKY_RELU:
        return 1 if pre > 0 else <floating>0.2
    if code == HARD_SWISH:
        # d/dv [v * hard_sigmoid(v)] = hard_sigmoid(v) + v * hard_sigmoid'(v)
        hs = _min(_max(pre / 6 + <floating>0.5, <floating>0), <floating>1)
        return hs + pre / 6 if -3 < pre < 3 else hs
    if code == MISH:
        # d/dv [v * tanh(sp(v))] = tanh(sp) + v * (1 - tanh(sp)^2) * sigmoid(v)
        t = _tanh(_softplus(pre))
        return t + pre * (1 - t * t) * _sigmoid(pre)
    return 1


# -- vectorized blocks --------------------------------------------------------------------
# The twin of _activations.activate_block: libm's tanhf/expf are scalar calls
# that keep the compiler from vectorizing a gate loop, so float32 tanh and
# sigmoid use the approximations TensorFlow runs on CPU (Eigen's packet
# functions), made of +, *, /, floor, selects and a bit cast only: tanh
# Eigen's rational approximation (Eigen/src/Core/MathFunctionsImpl.h,
# generic_fast_tanh_float), sigmoid Eigen's exp-based logistic
# (scalar_logistic_op<float>::packetOp); same constants as _activations.py,
# which explains both. float64 keeps libm.
cdef inline float _tanh_rational(float v) noexcept nogil:
    cdef float x = v
    if x < -7.90531110763549805:
        x = -7.90531110763549805
    if x > 7.90531110763549805:
        x = 7.90531110763549805
    cdef float x2 = x * x
    cdef float p = x2 * <float>-2.76076847742355e-16 + <float>2.00018790482477e-13
    p = x2 * p + <float>-8.60467152213735e-11
    p = x2 * p + <float>5.12229709037114e-08
    p = x2 * p + <float>1.48572235717979e-05
    p = x2 * p + <float>6.37261928875436e-04
    p = x2 * p + <float>4.89352455891786e-03
    p = x * p
    cdef float q = x2 * <float>1.19825839466702e-06 + <float>1.18534705686654e-04
    q = x2 * q + <float>2.26843463243900e-03
    q = x2 * q + <float>4.89352518554385e-03
    cdef float r = p / q
    # |x| < 4e-4: tanh(x) = x to float32 precision
    r = x if fabsf(x) < <float>0.0004 else r
    return r if v == v else v  # NaN propagates


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* 2^(biased - 127) for a float holding an integer in [0, 255]: the float
       whose exponent bits are biased (Eigen's pldexp_fast). */
    static inline float rnnengine_exp2_biased_f32(float biased) {
        int32_t bits = ((int32_t)biased) << 23;
        float out;
        memcpy(&out, &bits, sizeof out);
        return out;
    }
    """
    float _exp2_biased_f32 "rnnengine_exp2_biased_f32"(float biased) noexcept nogil


cdef inline float _sigmoid_eigen(float v) noexcept nogil:
    # TensorFlow's float32 sigmoid (Eigen's scalar_logistic_op<float>::packetOp):
    # e = exp(x / 2) ** 2 by Cephes range reduction and a degree-5 polynomial,
    # e / (1 + e); 1.0 from x = 16.6355324 on, 0 below -104 and, as under TF's
    # flush-to-zero, wherever exp(x) < FLT_MIN. See _activations.py.
    cdef float x = v if v < <float>16.6355324 else <float>16.6355324  # NaN: restored below
    x = x * <float>0.5
    cdef float m = floorf(x * <float>1.44269504088896341 + <float>0.5)
    cdef float r = m * <float>-0.693359375 + x
    r = m * <float>2.12194440e-4 + r
    cdef float r2 = r * r
    cdef float p_even = r2 * <float>4.1898667812347412109375e-2 + <float>0.49999141693115234375
    cdef float p_odd = r2 * <float>8.33471305668354034423828125e-3 + <float>0.16666877269744873046875
    cdef float p = r * p_odd + p_even
    p = r2 * p + (r + <float>1)
    cdef float biased = m + <float>127
    biased = biased if biased > <float>0 else <float>0
    biased = biased if biased < <float>255 else <float>255
    cdef float e = p * _exp2_biased_f32(biased)
    e = e * e
    cdef float sig = e / (<float>1 + e)
    sig = sig if v >= <float>-104 else <float>0
    sig = sig if e >= <float>1.1754943508222875e-38 else <float>0
    return sig if v == v else v  # NaN propagates


cdef inline void activate_block(floating* a, Py_ssize_t n, int code) noexcept nogil:
    """a[:n] = apply(code, a[:n]), with the switch on code outside the loops."""
    cdef Py_ssize_t j
    if floating is float:
        if code == TANH:
            for j in range(n):
                a[j] = _tanh_rational(a[j])
            return
        if code == SIGMOID:
            for j in range(n):
                a[j] = _sigmoid_eigen(a[j])
            return
    if code == LINEAR:
        return
    for j in range(n):
        a[j] = apply(code, a[j])


cdef inline void save_preact(floating* z, floating* pa, const floating* bias,
                             Py_ssize_t n, bint fused) noexcept nogil:
    """A training step's pre-activation row: z (n,) ends up holding it and pa
    (its slot in preact) a copy. fused: z already holds it (the step's one
    tiled pass); otherwise pa holds x_t @ kernel and z h @ recurrent_kernel,
    and z = z + pa + bias."""
    cdef Py_ssize_t j
    if fused:
        memcpy(pa, z, n * sizeof(floating))
    else:
        for j in range(n):
            z[j] += pa[j] + bias[j]
            pa[j] = z[j]


cdef inline void apply_grad_block(floating* out, const floating* pre,
                                  const floating* post, Py_ssize_t n,
                                  int code) noexcept nogil:
    """out[:n] = apply_grad(code, pre[:n], post[:n]), the switch on code outside
    the loops (the twin of _activations.apply_grad_block over one block). out
    may alias pre or post: element j is read before it is written."""
    cdef Py_ssize_t j
    cdef floating p
    if code == TANH:
        for j in range(n):
            p = post[j]
            out[j] = 1 - p * p
        return
    if code == SIGMOID:
        for j in range(n):
            p = post[j]
            out[j] = p * (1 - p)
        return
    if code == LINEAR:
        for j in range(n):
            out[j] = 1
        return
    for j in range(n):
        out[j] = apply_grad(code, pre[j], post[j])


cdef inline void apply_grad_rows(floating* out, const floating* pre,
                                 const floating* post, Py_ssize_t rows,
                                 Py_ssize_t ld, Py_ssize_t k0, Py_ssize_t k1,
                                 int code) noexcept nogil:
    """out[n, k0:k1] = apply_grad(code, pre[n, k0:k1], post[n, k0:k1]) for the
    ``rows`` rows of three (rows, ld) row-major matrices: one gate block of
    every (b, t), the sweep the backward kernels run before their time loop."""
    cdef Py_ssize_t n
    for n in range(rows):
        apply_grad_block(out + n * ld + k0, pre + n * ld + k0, post + n * ld + k0,
                         k1 - k0, code)


# Build switches and the gate-loop thread setting, in C so that a plain build
# compiles the checks away:
# - RNNENGINE_OPENMP: 1 where the build has OpenMP (setup.py adds -fopenmp when
#   the compiler takes it); without it the prange loops run serial, as in
#   sklearn's _openmp_helpers.pxd;
# - rnnengine_gate_threads: threads a call splits its batch over, 1 (serial)
#   unless set_num_threads() of the kernel module raised it (rnnengine.config does). Each kernel module
#   holds its own copy (the helpers here are inline, see _blas.pxd);
# - RNNENGINE_BOUNDSCHECK: 1 in the RNNENGINE_CYTHON_BOUNDSCHECK=1 build, where
#   each def entry also checks every buffer's shape against B, T, C, H, since
#   boundscheck alone sees no pointer arithmetic.
cdef extern from *:
    """
    #ifdef _OPENMP
    #define RNNENGINE_OPENMP 1
    #else
    #define RNNENGINE_OPENMP 0
    #endif
    static int rnnengine_gate_threads = 1;
    static long long rnnengine_min_work = 1LL << 27;
    #ifndef RNNENGINE_BOUNDSCHECK
    #define RNNENGINE_BOUNDSCHECK 0
    #endif
    """
    const int RNNENGINE_OPENMP
    int rnnengine_gate_threads
    long long rnnengine_min_work
    const int RNNENGINE_BOUNDSCHECK


# Threads: a call splits its batch into contiguous row blocks, one per thread,
# and each thread runs the whole serial kernel (every timestep) on its block:
# batch rows never interact, so there is no per-step barrier and no thread
# pool woken per step. BLAS inside runs on one thread (rnnengine.config limits
# SciPy's OpenBLAS at import): two pools spinning on the same cores made a
# B=256 step 1.5x-25x slower (bench/README.md). Blocks get at least
# MIN_ROWS_PER_THREAD rows, and a call splits only from rnnengine_min_work
# multiply-adds (2**27, about 2 ms on one core). Below that a split saves less
# than what one late thread costs on a busy machine: a worker not scheduled
# for a time slice made a 0.3 ms B=64 LSTM call take 6.5 ms with 2 threads
# (measured here, load 4 on 2 cores). The standard workloads T1 and T2 (1e9
# to 1e10 multiply-adds) still split. Tests lower it to reach the split path
# (rnnengine.kernels._set_min_work_to_split).
cdef enum:
    MIN_ROWS_PER_THREAD = 4


cdef inline int _batch_threads(Py_ssize_t B, Py_ssize_t work) noexcept nogil:
    """Threads for one call: 1 means run the serial kernel on the whole batch."""
    cdef Py_ssize_t n = rnnengine_gate_threads
    if n <= 1 or work < rnnengine_min_work:
        return 1
    if n > B // MIN_ROWS_PER_THREAD:
        n = B // MIN_ROWS_PER_THREAD
    return <int>n if n > 1 else 1


cdef inline int _set_gate_threads(int n) except -1:
    """set_num_threads(n) of a kernel module: n >= 1 threads for its calls."""
    global rnnengine_gate_threads
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}.")
    rnnengine_gate_threads = n if RNNENGINE_OPENMP else 1
    return 0


cdef inline int _set_min_work(long long n) except -1:
    """set_min_work_to_split(n) of a kernel module: split calls from n multiply-adds."""
    global rnnengine_min_work
    if n < 0:
        raise ValueError(f"set_min_work_to_split: n must be >= 0, got {n}.")
    rnnengine_min_work = n
    return 0


cdef inline int _expect_shape(str name, Py_ssize_t* shape, int ndim,
                              Py_ssize_t d0, Py_ssize_t d1=-1,
                              Py_ssize_t d2=-1) except -1:
    """RNNENGINE_BOUNDSCHECK builds: raise if ``name``'s shape is not (d0, d1, d2)."""
    want = (d0, d1, d2)[:ndim]
    got = tuple([shape[i] for i in range(ndim)])
    if got != want:
        raise ValueError(f"{name} has shape {got}, the dims passed imply {want}.")
    return 0
