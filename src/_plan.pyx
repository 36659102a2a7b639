# cython: language_level=3
# Fused call plans, compiled into rnnengine.kernels._cy_plan: a whole stack of
# SimpleRNN / LSTM / GRU / Dense layers run by one call from Python.
#
# Why: at batch 1 a small model's kernels take a few microseconds, and the
# Python around them (one def call per layer, each acquiring ~10 typed
# memoryviews, plus copies in and out) took longer than the math
# (bench/README.md). A CyPlan holds raw pointers to every buffer and weight,
# bound once by rnnengine/models/plan.py, and its run checks the input and
# output arrays with a few numpy C-API reads, then calls the layers' pointer
# kernels (exported by each kernel module as PyCapsules, see _pointer_kernels
# there) without the GIL (except for tiny calls: CyPlan._call).
#
# Safety: the plan keeps a reference to every array it points into (`keep`),
# and an array from Python reaches a kernel only after its dtype, layout and
# shape matched what the plan was built for; anything else returns None, and
# the caller takes the general, validating path. Weights: the plan points at
# the arrays it was built on; `bump_epoch()` (called whenever a layer's packed
# weights are replaced, or the backend changes) makes every plan built before
# it refuse to run until the owner has re-checked it (`revalidate`).
#
# Threads: rows of a batch never interact, so a large batch is split into
# contiguous row blocks, one per thread, each running the whole stack (every
# layer, every timestep): one parallel region per call, no barrier between
# layers. Same thresholds as the per-layer kernels (_gates.pxd).
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc
from libc.string cimport memset

cimport numpy as cnp

from _gates cimport (_batch_threads, _set_gate_threads, _set_min_work, rnnengine_gate_threads,
                     rnnengine_min_work)

cnp.import_array()

cdef extern from *:
    """
    static unsigned long long rnnengine_weights_epoch = 0;
    """
    unsigned long long rnnengine_weights_epoch


cdef enum:
    SIMPLE_RNN = 0
    LSTM = 1
    GRU = 2
    DENSE = 3
    MAX_NDIM = 8
    GIL_RELEASE_MIN_WORK = 1 << 18  # multiply-adds; see CyPlan._call

KINDS = {"simple_rnn": SIMPLE_RNN, "lstm": LSTM, "gru": GRU, "dense": DENSE}

# The pointer kernels' signatures: src/_call.pxd (each kernel module assigns
# its pointer kernel to them, so the compiler checks them where it is written).
from _call cimport (dense_d, dense_f, gru_d, gru_f, keep_p, lstm_d, lstm_f, simple_rnn_d,
                    simple_rnn_f)


cdef struct Step:
    # One layer's kernel call. Batch-indexed buffers are a base pointer and the
    # bytes one batch row takes (a thread's block starts b0 rows in); weights
    # are shared by every block. For Dense, R is the rows per batch item (T for
    # a (B, T, C) input, 1 for (B, C)).
    int kind
    void* fn
    char* y
    char* h
    char* c
    char* xproj
    char* rec
    char* rec_h
    char* rh
    char* keep  # (B, T) uint8, Keras's mask, or NULL
    Py_ssize_t y_row, h_row, xproj_row, rec_row, in_row, keep_row
    void* w0
    void* w1
    void* w2
    void* w3
    void* w4
    Py_ssize_t T, C, H, R
    int act, ract, go_backwards, return_sequences, reset_after, use_bias, zero_output_for_mask


cdef void _run_block(const Step* steps, int n_steps, bint f32, const char* x, char* out,
                     Py_ssize_t b0, Py_ssize_t nb, bint zero_state) noexcept nogil:
    """Every layer on batch rows [b0, b0 + nb): layer i reads layer i-1's y."""
    cdef int i
    cdef const Step* s
    cdef const char* inp
    cdef char* y
    cdef char* h
    cdef char* c
    cdef keep_p k
    for i in range(n_steps):
        s = &steps[i]
        inp = x + b0 * s.in_row if i == 0 else steps[i - 1].y + b0 * s.in_row
        y = (out if i == n_steps - 1 else s.y) + b0 * s.y_row
        h = s.h + b0 * s.h_row if s.h != NULL else NULL
        c = s.c + b0 * s.h_row if s.c != NULL else NULL
        k = <keep_p>(s.keep + b0 * s.keep_row) if s.keep != NULL else NULL
        if zero_state and h != NULL:
            memset(h, 0, nb * s.h_row)
            if c != NULL:
                memset(c, 0, nb * s.h_row)
        if s.kind == SIMPLE_RNN:
            if f32:
                (<simple_rnn_f>s.fn)(<float*>y, <float*>h, <float*>(s.xproj + b0 * s.xproj_row),
                                     <float*>(s.rec + b0 * s.rec_row), <const float*>inp, k,
                                     <const float*>s.w0, <const float*>s.w1, <const float*>s.w2,
                                     nb, s.T, s.C, s.H, s.act, s.go_backwards, s.return_sequences,
                                     s.zero_output_for_mask)
            else:
                (<simple_rnn_d>s.fn)(<double*>y, <double*>h, <double*>(s.xproj + b0 * s.xproj_row),
                                     <double*>(s.rec + b0 * s.rec_row), <const double*>inp, k,
                                     <const double*>s.w0, <const double*>s.w1, <const double*>s.w2,
                                     nb, s.T, s.C, s.H, s.act, s.go_backwards, s.return_sequences,
                                     s.zero_output_for_mask)
        elif s.kind == LSTM:
            if f32:
                (<lstm_f>s.fn)(<float*>y, <float*>h, <float*>c, <float*>(s.xproj + b0 * s.xproj_row),
                               <float*>(s.rec + b0 * s.rec_row), <const float*>inp, k,
                               <const float*>s.w0, <const float*>s.w1, <const float*>s.w2,
                               nb, s.T, s.C, s.H, s.act, s.ract, s.go_backwards, s.return_sequences,
                               s.zero_output_for_mask)
            else:
                (<lstm_d>s.fn)(<double*>y, <double*>h, <double*>c, <double*>(s.xproj + b0 * s.xproj_row),
                               <double*>(s.rec + b0 * s.rec_row), <const double*>inp, k,
                               <const double*>s.w0, <const double*>s.w1, <const double*>s.w2,
                               nb, s.T, s.C, s.H, s.act, s.ract, s.go_backwards, s.return_sequences,
                               s.zero_output_for_mask)
        elif s.kind == GRU:
            if f32:
                (<gru_f>s.fn)(<float*>y, <float*>h, <float*>(s.xproj + b0 * s.xproj_row),
                              <float*>(s.rec + b0 * s.rec_row), <float*>(s.rec_h + b0 * s.h_row),
                              <float*>(s.rh + b0 * s.h_row), <const float*>inp, k,
                              <const float*>s.w0, <const float*>s.w1, <const float*>s.w2,
                              <const float*>s.w3, <const float*>s.w4, nb, s.T, s.C, s.H,
                              s.act, s.ract, s.go_backwards, s.return_sequences, s.reset_after,
                              s.zero_output_for_mask)
            else:
                (<gru_d>s.fn)(<double*>y, <double*>h, <double*>(s.xproj + b0 * s.xproj_row),
                              <double*>(s.rec + b0 * s.rec_row), <double*>(s.rec_h + b0 * s.h_row),
                              <double*>(s.rh + b0 * s.h_row), <const double*>inp, k,
                              <const double*>s.w0, <const double*>s.w1, <const double*>s.w2,
                              <const double*>s.w3, <const double*>s.w4, nb, s.T, s.C, s.H,
                              s.act, s.ract, s.go_backwards, s.return_sequences, s.reset_after,
                              s.zero_output_for_mask)
        else:
            if f32:
                (<dense_f>s.fn)(<float*>y, <const float*>inp, <const float*>s.w0, <const float*>s.w1,
                                nb * s.R, s.C, s.H, s.act, s.use_bias)
            else:
                (<dense_d>s.fn)(<double*>y, <const double*>inp, <const double*>s.w0, <const double*>s.w1,
                                nb * s.R, s.C, s.H, s.act, s.use_bias)


cdef inline char* _data(cnp.ndarray a):
    return <char*>cnp.PyArray_DATA(a)


cdef bint _matches(object a, int typenum, Py_ssize_t size, bint writeable):
    """a is a C-contiguous ndarray of typenum with size elements (and writeable)."""
    if not cnp.PyArray_Check(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != typenum or cnp.PyArray_SIZE(arr) != size:
        return False
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        return False
    if writeable and not cnp.PyArray_ISWRITEABLE(arr):
        return False
    return True


cdef bint _same_dims(cnp.ndarray a, int ndim, const cnp.npy_intp* dims):
    if cnp.PyArray_NDIM(a) != ndim:
        return False
    cdef cnp.npy_intp* got = cnp.PyArray_DIMS(a)
    cdef int i
    for i in range(ndim):
        if got[i] != dims[i]:
            return False
    return True


cdef class CyPlan:
    """A stack's kernel calls for one (batch, input shape, dtype), bound once.

    ``steps`` is a list of dicts built by rnnengine/models/plan.py: ``kind``,
    and that layer's forward call by its argument names
    (rnnengine/kernels/contract.py): buffers and weights (ndarrays,
    C-contiguous, of the plan's dtype; ``keep`` uint8), dims and flags. ``x_shape`` and ``out_shape`` are the
    input and output arrays' shapes, batch first.
    """
    cdef Step* steps
    cdef int n_steps
    cdef bint f32
    cdef int typenum
    cdef Py_ssize_t B, x_size, out_size, work
    cdef int x_ndim, out_ndim
    cdef cnp.npy_intp x_dims[MAX_NDIM]
    cdef cnp.npy_intp out_dims[MAX_NDIM]
    cdef unsigned long long epoch
    cdef list keep
    cdef object lock

    def __cinit__(self):
        self.steps = NULL

    def __init__(self, list steps, tuple x_shape, tuple out_shape, dtype, lock=None):
        import numpy as np

        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"CyPlan: dtype must be float32 or float64, got {dtype}.")
        if not steps or len(x_shape) > MAX_NDIM or len(out_shape) > MAX_NDIM:
            raise ValueError("CyPlan: needs at least one step and shapes of at most 8 dims.")
        self.f32 = dtype == np.float32
        self.typenum = dtype.num
        self.B = x_shape[0]
        self.x_ndim = len(x_shape)
        self.out_ndim = len(out_shape)
        for i, d in enumerate(x_shape):
            self.x_dims[i] = d
        for i, d in enumerate(out_shape):
            self.out_dims[i] = d
        self.x_size = int(np.prod(x_shape))
        self.out_size = int(np.prod(out_shape))
        self.keep = []
        self.lock = lock
        self.steps = <Step*>malloc(len(steps) * sizeof(Step))
        if self.steps == NULL:
            raise MemoryError()
        memset(self.steps, 0, len(steps) * sizeof(Step))
        self.n_steps = len(steps)
        cdef Py_ssize_t item = dtype.itemsize
        cdef Py_ssize_t in_row = self.x_size // self.B * item
        self.work = 0
        for i, spec in enumerate(steps):
            self._bind(&self.steps[i], spec, dtype, in_row)
            in_row = self.steps[i].y_row
        if in_row * self.B != self.out_size * item:
            raise ValueError("CyPlan: the last layer's output does not fill out_shape.")
        self.epoch = rnnengine_weights_epoch

    cdef int _bind(self, Step* s, dict spec, dtype, Py_ssize_t in_row) except -1:
        kind = KINDS[spec["kind"]]
        s.kind = kind
        capsule = spec["kernels"][0 if self.f32 else 1]
        s.fn = PyCapsule_GetPointer(capsule, NULL)
        s.in_row = in_row
        # Dense's y_out is its (N, F) view: the plan binds the (B, ...) buffer.
        s.y = self._buffer(spec["y"] if kind == DENSE else spec["y_out"], dtype, &s.y_row)
        s.C, s.H = spec["C"], spec["F"] if kind == DENSE else spec["H"]
        s.act = spec["activation"]
        if kind == DENSE:
            s.R = spec["R"]
            s.use_bias = spec["use_bias"]
            s.w0 = self._weight(spec["kernel"], dtype)
            s.w1 = self._weight(spec["bias"], dtype)
            self.work += self.B * s.R * s.C * s.H
            return 0
        s.T = spec["T"]
        keep = spec["keep"]
        if keep.size:
            s.keep = self._mask(keep, &s.keep_row)
        s.zero_output_for_mask = spec["zero_output_for_mask"]
        s.ract = spec.get("recurrent_activation", 0)
        s.go_backwards = spec["go_backwards"]
        s.return_sequences = spec["return_sequences"]
        s.h = self._buffer(spec["h"], dtype, &s.h_row)
        s.xproj = self._buffer(spec["xproj"], dtype, &s.xproj_row)
        s.rec = self._buffer(spec["rec"], dtype, &s.rec_row)
        cdef Py_ssize_t row
        if kind == LSTM:
            s.c = self._buffer(spec["c"], dtype, &row)
        if kind == GRU:
            s.rec_h = self._buffer(spec["rec_h"], dtype, &row)
            s.rh = self._buffer(spec["rh"], dtype, &row)
            s.reset_after = spec["reset_after"]
            s.w3 = self._weight(spec["input_bias"], dtype)
            s.w4 = self._weight(spec["recurrent_bias"], dtype)
            s.w2 = self._weight(spec["recurrent_kernel_h"], dtype)
        else:
            s.w2 = self._weight(spec["bias"], dtype)
        s.w0 = self._weight(spec["kernel"], dtype)
        s.w1 = self._weight(spec["recurrent_kernel"], dtype)
        self.work += self.B * s.T * (s.C + s.H) * (s.xproj_row // dtype.itemsize // s.T)
        return 0

    cdef char* _buffer(self, a, dtype, Py_ssize_t* row) except NULL:
        """A batch-indexed buffer: its data pointer, and the bytes per batch row."""
        if not isinstance(a, cnp.ndarray) or a.dtype != dtype or not a.flags.c_contiguous \
                or a.shape[0] != self.B or a.size == 0:
            raise ValueError(f"CyPlan: a buffer must be a non-empty C-contiguous {dtype} array "
                             f"with {self.B} rows; got {type(a).__name__} {getattr(a, 'shape', '')}.")
        self.keep.append(a)
        row[0] = a.nbytes // self.B
        return _data(a)

    cdef char* _mask(self, a, Py_ssize_t* row) except NULL:
        """A (B, T) uint8 mask buffer (kernels/contract.py's keep)."""
        if not isinstance(a, cnp.ndarray) or a.dtype.num != cnp.NPY_UINT8 or not a.flags.c_contiguous \
                or a.ndim != 2 or a.shape[0] != self.B:
            raise ValueError(f"CyPlan: a mask must be a C-contiguous uint8 (B, T) array with {self.B} rows.")
        self.keep.append(a)
        row[0] = a.shape[1]
        return _data(a)

    cdef void* _weight(self, a, dtype) except NULL:
        if not isinstance(a, cnp.ndarray) or a.dtype != dtype or not a.flags.c_contiguous or a.size == 0:
            raise ValueError(f"CyPlan: a weight must be a non-empty C-contiguous {dtype} array.")
        self.keep.append(a)
        return <void*>_data(a)

    def __dealloc__(self):
        free(self.steps)

    def revalidate(self):
        """The owner has checked the plan's weights are still the layers': run again."""
        self.epoch = rnnengine_weights_epoch

    @property
    def current(self):
        """False once weights or the backend changed after the plan was built or revalidated."""
        return self.epoch == rnnengine_weights_epoch

    cdef void _call(self, const char* x, char* out, bint zero_state):
        """_run, without the GIL unless the call is tiny (under GIL_RELEASE_MIN_WORK
        multiply-adds, a few microseconds): a thread that gives the GIL up while
        another Python thread runs waits up to the interpreter's switch interval
        (5 ms) to get it back, so releasing it for a 2 us stream step cost that
        step milliseconds under contention (NumPy keeps the GIL for small arrays
        for the same reason)."""
        if self.work < GIL_RELEASE_MIN_WORK:
            self._run(x, out, zero_state)
        else:
            with nogil:
                self._run(x, out, zero_state)

    cdef void _run(self, const char* x, char* out, bint zero_state) noexcept nogil:
        cdef int n = _batch_threads(self.B, self.work)
        cdef Py_ssize_t i, b0, nb
        if n == 1:
            _run_block(self.steps, self.n_steps, self.f32, x, out, 0, self.B, zero_state)
        else:
            for i in prange(n, schedule='static', num_threads=n):
                b0 = i * self.B // n
                nb = (i + 1) * self.B // n - b0
                _run_block(self.steps, self.n_steps, self.f32, x, out, b0, nb, zero_state)

    def run(self, x, out, bint zero_state=True):
        """Run on ``x`` into ``out``, both exactly the plan's size, dtype and
        C-contiguous (the caller checked the shapes); True when it ran, False
        when an array did not match (nothing was touched)."""
        if not self.current:
            return False
        if not _matches(x, self.typenum, self.x_size, False) or \
                not _matches(out, self.typenum, self.out_size, True):
            return False
        cdef const char* xp = _data(<cnp.ndarray>x)
        cdef char* op = _data(<cnp.ndarray>out)
        self._call(xp, op, zero_state)
        return True

    def predict(self, x, out=None, batch_size=None):
        """The model's output for ``x`` when ``x`` (and ``out``, if given) are
        exactly what the plan was built for, and ``batch_size`` does not split
        the call; None otherwise (the caller then takes the general path)."""
        if not self.current or not _matches(x, self.typenum, self.x_size, False):
            return None
        if not _same_dims(<cnp.ndarray>x, self.x_ndim, self.x_dims):
            return None
        if batch_size is not None and (type(batch_size) is not int or batch_size < self.B):
            return None
        if out is None:
            out = cnp.PyArray_EMPTY(self.out_ndim, self.out_dims, self.typenum, 0)
        elif not _matches(out, self.typenum, self.out_size, True) or \
                not _same_dims(<cnp.ndarray>out, self.out_ndim, self.out_dims):
            return None
        cdef const char* xp = _data(<cnp.ndarray>x)
        cdef char* op = _data(<cnp.ndarray>out)
        self._call(xp, op, True)
        return out

    def step(self, x, out=None):
        """One stream step, the recurrent state carried in the plan's state
        buffers: ``x`` is (B, features), or (features,) when B is 1 (the output
        then has no batch axis). None when ``x`` or ``out`` does not match.
        Holds the stream's lock while it runs: a second thread stepping the
        same stream gets RuntimeError."""
        if not self.current or not _matches(x, self.typenum, self.x_size, False):
            return None
        cdef cnp.ndarray xa = <cnp.ndarray>x
        cdef bint single = self.B == 1 and cnp.PyArray_NDIM(xa) == self.x_ndim - 1
        if single:
            if not _same_dims(xa, self.x_ndim - 1, &self.x_dims[1]):
                return None
        elif not _same_dims(xa, self.x_ndim, self.x_dims):
            return None
        cdef int ndim = self.out_ndim - 1 if single else self.out_ndim
        cdef cnp.npy_intp* dims = &self.out_dims[1] if single else self.out_dims
        if out is None:
            out = cnp.PyArray_EMPTY(ndim, dims, self.typenum, 0)
        elif not _matches(out, self.typenum, self.out_size, True) or \
                not _same_dims(<cnp.ndarray>out, ndim, dims):
            return None
        cdef const char* xp = _data(xa)
        cdef char* op = _data(<cnp.ndarray>out)
        if not self.lock.acquire(False):
            raise RuntimeError("This stream cannot be stepped now: another thread is using it (stepping, "
                               "resetting or reading its state). A stream is single-owner; make one stream "
                               "per thread (they are cheap).")
        try:
            self._call(xp, op, False)
        finally:
            self.lock.release()
        return out


def bump_epoch():
    """Weights or the kernel backend changed: every plan re-checks before it runs again."""
    global rnnengine_weights_epoch
    rnnengine_weights_epoch += 1


def set_num_threads(int n):
    """Threads one plan call may split its batch over (rnnengine.config sets it)."""
    _set_gate_threads(n)


def get_num_threads():
    return rnnengine_gate_threads


def set_min_work_to_split(long long n):
    """Multiply-adds from which a call of this module splits its batch over threads
    (src/_gates.pxd); rnnengine.kernels._set_min_work_to_split sets every module's."""
    _set_min_work(n)


def get_min_work_to_split():
    return rnnengine_min_work
