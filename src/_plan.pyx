# cython: language_level=3
# Fused call plans, compiled into rnnengine.kernels._cy_plan: a whole stack of
# Embedding / Masking / SimpleRNN / LSTM / GRU / Bidirectional / Dense layers
# run by one call from Python, masks included (an Embedding's mask_zero or a
# Masking layer writes the (B, T) keep array the recurrent steps read).
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
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

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
    EMBED = 4  # ids -> rows of the table, and keep = (id != 0) for mask_zero
    MASKING = 5  # keep = any(x != mask_value) per step, y = x * keep
    MERGE = 6  # two steps' outputs: a Bidirectional's (the backward one re-reversed in time), a merge layer's
    MERGE_CONCAT = 0
    MERGE_SUM = 1
    MERGE_AVE = 2
    MERGE_MUL = 3
    MERGE_SUB = 4
    MERGE_MAX = 5
    MERGE_MIN = 6
    MAX_NDIM = 8
    GIL_RELEASE_MIN_WORK = 1 << 18  # multiply-adds; see CyPlan._call

KINDS = {"simple_rnn": SIMPLE_RNN, "lstm": LSTM, "gru": GRU, "dense": DENSE, "embed": EMBED,
         "masking": MASKING, "merge": MERGE}
MERGE_MODES = {"concat": MERGE_CONCAT, "sum": MERGE_SUM, "ave": MERGE_AVE, "mul": MERGE_MUL, "sub": MERGE_SUB,
               "max": MERGE_MAX, "min": MERGE_MIN}

# The pointer kernels' signatures: src/_call.pxd (each kernel module assigns
# its pointer kernel to them, so the compiler checks them where it is written).
from _call cimport (dense_d, dense_f, gru_d, gru_f, keep_p, lstm_d, lstm_f, simple_rnn_d,
                    simple_rnn_f)


cdef struct Step:
    # One layer's kernel call. Batch-indexed buffers are a base pointer and the
    # bytes one batch row takes at the plan's capacity T (a thread's block
    # starts b0 rows in, and writes its rows packed for the call's T, which
    # never exceeds the capacity); weights are shared by every block. For
    # Dense, Embedding and Masking, R is the rows per batch item per timestep
    # when seq_in (the input is (B, T, ...)), else per batch item. seq_in /
    # seq_out: the input / output rows scale with T (what the plan's x and out
    # strides depend on). src / src2: the steps whose y this one reads (-1: the
    # plan's input); a Bidirectional's two layers read one source, its MERGE
    # both of them. keep: (B, capacity) uint8, used packed as (B, T) per call,
    # like every other buffer.
    int kind
    int src, src2, mode
    double mask_value
    void* fn
    char* y
    char* h
    char* c
    char* xproj
    char* rec
    char* rec_h
    char* rh
    char* keep  # Keras's mask: written by an EMBED or MASKING step, read by recurrent steps; or NULL
    char* h_park  # a stream's plan: where step(rows=) parks rows of h and c (B rows each)
    char* c_park
    Py_ssize_t y_row, h_row, xproj_row, rec_row
    void* w0
    void* w1
    void* w2
    void* w3
    void* w4
    Py_ssize_t C, H, R
    bint seq_in, seq_out, carry_state  # carry_state: a stateful layer's h (and c), never zeroed
    bint reverse  # MERGE: the second source's steps in reversed order (a Bidirectional's backward layer)
    Py_ssize_t H2  # MERGE concat: the second source's width
    int act, ract, go_backwards, return_sequences, reset_after, use_bias, zero_output_for_mask


cdef inline const char* _source(const Step* steps, int j, const char* x, Py_ssize_t x_row,
                                Py_ssize_t b0) noexcept nogil:
    return x + b0 * x_row if j < 0 else steps[j].y + b0 * steps[j].y_row


cdef void _embed(char* y, unsigned char* keep, const long long* ids, const char* table,
                 Py_ssize_t n, Py_ssize_t row) noexcept nogil:
    """y[i] = table[ids[i]] (``row`` bytes each), keep[i] = ids[i] != 0. The ids
    were range-checked by CyPlan._ids_in_range before the call."""
    cdef Py_ssize_t i
    for i in range(n):
        memcpy(y + i * row, table + ids[i] * row, row)
        if keep != NULL:
            keep[i] = ids[i] != 0


cdef void _masking(floating* y, unsigned char* keep, const floating* x, Py_ssize_t n, Py_ssize_t F,
                   floating mask_value) noexcept nogil:
    """Keras's Masking over n steps of F features: a step is kept when any
    feature differs from mask_value (NaN differs); y = x * keep."""
    cdef Py_ssize_t i, f
    cdef bint any_differs
    cdef floating scale
    for i in range(n):
        any_differs = False
        for f in range(F):
            if x[i * F + f] != mask_value:
                any_differs = True
                break
        keep[i] = any_differs
        scale = 1 if any_differs else 0
        for f in range(F):
            y[i * F + f] = x[i * F + f] * scale


cdef void _merge(floating* y, const floating* a, const floating* b, Py_ssize_t nb, Py_ssize_t T,
                 Py_ssize_t H, Py_ssize_t H2, int mode, bint reverse) noexcept nogil:
    """nb rows of T steps: a (H wide) with b (H2 wide; H unless concatenated;
    in reversed step order when ``reverse``), as Keras's merge does it (NumPy's
    maximum and minimum: a NaN on either side wins)."""
    cdef Py_ssize_t r, t, j, tb
    cdef const floating* ar
    cdef const floating* br
    cdef floating* yr
    for r in range(nb):
        for t in range(T):
            tb = T - 1 - t if reverse else t
            ar = a + (r * T + t) * H
            br = b + (r * T + tb) * H2
            if mode == MERGE_CONCAT:
                yr = y + (r * T + t) * (H + H2)
                memcpy(yr, ar, H * sizeof(floating))
                memcpy(yr + H, br, H2 * sizeof(floating))
                continue
            yr = y + (r * T + t) * H
            for j in range(H):
                if mode == MERGE_SUM:
                    yr[j] = ar[j] + br[j]
                elif mode == MERGE_AVE:
                    yr[j] = (ar[j] + br[j]) * <floating>0.5
                elif mode == MERGE_MUL:
                    yr[j] = ar[j] * br[j]
                elif mode == MERGE_SUB:
                    yr[j] = ar[j] - br[j]
                elif mode == MERGE_MAX:
                    yr[j] = ar[j] if (ar[j] >= br[j] or ar[j] != ar[j]) else br[j]
                else:
                    yr[j] = ar[j] if (ar[j] <= br[j] or ar[j] != ar[j]) else br[j]


cdef void _run_block(const Step* steps, int n_steps, bint f32, const char* x, char* out,
                     Py_ssize_t x_row, Py_ssize_t out_row, Py_ssize_t T, Py_ssize_t tcap,
                     Py_ssize_t b0, Py_ssize_t nb, bint zero_state) noexcept nogil:
    """Every layer on batch rows [b0, b0 + nb) for T timesteps: each step reads
    its source step's y (the first, x); x and out rows are x_row and out_row
    bytes (the caller's arrays, packed for T)."""
    cdef int i
    cdef const Step* s
    cdef const char* inp
    cdef char* y
    cdef char* h
    cdef char* c
    cdef keep_p k
    cdef Py_ssize_t R
    for i in range(n_steps):
        s = &steps[i]
        inp = _source(steps, s.src, x, x_row, b0)
        y = out + b0 * out_row if i == n_steps - 1 else s.y + b0 * s.y_row
        h = s.h + b0 * s.h_row if s.h != NULL else NULL
        c = s.c + b0 * s.h_row if s.c != NULL else NULL
        k = <keep_p>(s.keep + b0 * tcap) if s.keep != NULL else NULL
        R = s.R * T if s.seq_in else s.R
        if s.kind == EMBED:
            _embed(y, <unsigned char*>k, <const long long*>inp, <const char*>s.w0, nb * R,
                   s.H * (4 if f32 else 8))
            continue
        if s.kind == MASKING:
            if f32:
                _masking(<float*>y, <unsigned char*>k, <const float*>inp, nb * R, s.C, <float>s.mask_value)
            else:
                _masking(<double*>y, <unsigned char*>k, <const double*>inp, nb * R, s.C, s.mask_value)
            continue
        if s.kind == MERGE:
            if f32:
                _merge(<float*>y, <const float*>inp, <const float*>_source(steps, s.src2, x, x_row, b0),
                       nb, T if s.seq_in else 1, s.H, s.H2, s.mode, s.reverse)
            else:
                _merge(<double*>y, <const double*>inp, <const double*>_source(steps, s.src2, x, x_row, b0),
                       nb, T if s.seq_in else 1, s.H, s.H2, s.mode, s.reverse)
            continue
        if zero_state and h != NULL and not s.carry_state:
            memset(h, 0, nb * s.h_row)
            if c != NULL:
                memset(c, 0, nb * s.h_row)
        if s.kind == SIMPLE_RNN:
            if f32:
                (<simple_rnn_f>s.fn)(<float*>y, <float*>h, <float*>(s.xproj + b0 * s.xproj_row),
                                     <float*>(s.rec + b0 * s.rec_row), <const float*>inp, k,
                                     <const float*>s.w0, <const float*>s.w1, <const float*>s.w2,
                                     nb, T, s.C, s.H, s.act, s.go_backwards, s.return_sequences,
                                     s.zero_output_for_mask)
            else:
                (<simple_rnn_d>s.fn)(<double*>y, <double*>h, <double*>(s.xproj + b0 * s.xproj_row),
                                     <double*>(s.rec + b0 * s.rec_row), <const double*>inp, k,
                                     <const double*>s.w0, <const double*>s.w1, <const double*>s.w2,
                                     nb, T, s.C, s.H, s.act, s.go_backwards, s.return_sequences,
                                     s.zero_output_for_mask)
        elif s.kind == LSTM:
            if f32:
                (<lstm_f>s.fn)(<float*>y, <float*>h, <float*>c, <float*>(s.xproj + b0 * s.xproj_row),
                               <float*>(s.rec + b0 * s.rec_row), <const float*>inp, k,
                               <const float*>s.w0, <const float*>s.w1, <const float*>s.w2,
                               nb, T, s.C, s.H, s.act, s.ract, s.go_backwards, s.return_sequences,
                               s.zero_output_for_mask)
            else:
                (<lstm_d>s.fn)(<double*>y, <double*>h, <double*>c, <double*>(s.xproj + b0 * s.xproj_row),
                               <double*>(s.rec + b0 * s.rec_row), <const double*>inp, k,
                               <const double*>s.w0, <const double*>s.w1, <const double*>s.w2,
                               nb, T, s.C, s.H, s.act, s.ract, s.go_backwards, s.return_sequences,
                               s.zero_output_for_mask)
        elif s.kind == GRU:
            if f32:
                (<gru_f>s.fn)(<float*>y, <float*>h, <float*>(s.xproj + b0 * s.xproj_row),
                              <float*>(s.rec + b0 * s.rec_row), <float*>(s.rec_h + b0 * s.h_row),
                              <float*>(s.rh + b0 * s.h_row), <const float*>inp, k,
                              <const float*>s.w0, <const float*>s.w1, <const float*>s.w2,
                              <const float*>s.w3, <const float*>s.w4, nb, T, s.C, s.H,
                              s.act, s.ract, s.go_backwards, s.return_sequences, s.reset_after,
                              s.zero_output_for_mask)
            else:
                (<gru_d>s.fn)(<double*>y, <double*>h, <double*>(s.xproj + b0 * s.xproj_row),
                              <double*>(s.rec + b0 * s.rec_row), <double*>(s.rec_h + b0 * s.h_row),
                              <double*>(s.rh + b0 * s.h_row), <const double*>inp, k,
                              <const double*>s.w0, <const double*>s.w1, <const double*>s.w2,
                              <const double*>s.w3, <const double*>s.w4, nb, T, s.C, s.H,
                              s.act, s.ract, s.go_backwards, s.return_sequences, s.reset_after,
                              s.zero_output_for_mask)
        else:
            if f32:
                (<dense_f>s.fn)(<float*>y, <const float*>inp, <const float*>s.w0, <const float*>s.w1,
                                nb * R, s.C, s.H, s.act, s.use_bias)
            else:
                (<dense_d>s.fn)(<double*>y, <const double*>inp, <const double*>s.w0, <const double*>s.w1,
                                nb * R, s.C, s.H, s.act, s.use_bias)


cdef inline char* _data(cnp.ndarray a):
    return <char*>cnp.PyArray_DATA(a)


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
    """A stack's kernel calls for one (batch, input features, dtype), bound once.

    ``steps`` is a list of dicts built by rnnengine/models/plan.py: ``kind``,
    ``seq_in`` / ``seq_out``, ``src`` (and a merge's ``src2``), and that
    layer's forward call by its argument names (rnnengine/kernels/contract.py):
    buffers and weights (ndarrays, C-contiguous, of the plan's dtype; ``keep``
    uint8), dims and flags. ``x_shape`` and ``out_shape`` are the input and
    output arrays' shapes, batch first, at the capacity ``T`` the buffers were
    allocated for; ``x_dtype`` is the input's (int64 ids for an Embedding
    first, whose range the plan checks before it runs: an id out of range
    makes the call return None / False with nothing touched).

    ``t_generic``: the plan runs any 1 <= T <= capacity on axis 1 of ``x``
    (and of ``out`` when the model returns sequences): every buffer is used
    packed for the call's T, so one plan serves every sequence length up to
    the one it was built for. ``rows``: a stream's plan can also step a subset
    of its rows (``step(x, out, rows)``), their states gathered into scratch.
    """
    cdef Step* steps
    cdef int n_steps
    cdef bint f32, t_generic, out_seq, x_seq
    cdef int typenum, x_typenum
    cdef Py_ssize_t B, tcap, x_unit, out_unit, work_T, work_fixed, item, n_ids
    cdef int x_ndim, out_ndim
    cdef cnp.npy_intp x_dims[MAX_NDIM]
    cdef cnp.npy_intp out_dims[MAX_NDIM]
    cdef unsigned long long epoch
    cdef public unsigned long long uses  # calls run: models/plan.py's cache sees which plans are in use
    cdef list keep
    cdef object lock
    cdef unsigned char* seen  # step(rows=): B flags, for the repeat check

    def __cinit__(self):
        self.steps = NULL
        self.seen = NULL

    def __init__(self, list steps, tuple x_shape, tuple out_shape, dtype, lock=None, Py_ssize_t T=1,
                 bint t_generic=False, x_dtype=None):
        import numpy as np

        dtype = np.dtype(dtype)
        x_dtype = dtype if x_dtype is None else np.dtype(x_dtype)
        if x_dtype != dtype and not (x_dtype == np.int64 and steps and steps[0]["kind"] == "embed"):
            raise ValueError("CyPlan: the input is the plan's dtype, or int64 ids into an Embedding first.")
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"CyPlan: dtype must be float32 or float64, got {dtype}.")
        if not steps or len(x_shape) > MAX_NDIM or len(out_shape) > MAX_NDIM:
            raise ValueError("CyPlan: needs at least one step and shapes of at most 8 dims.")
        if T < 1 or (t_generic and (not steps[0]["seq_in"] or len(x_shape) < 2 or x_shape[1] != T)):
            raise ValueError("CyPlan: a T-generic plan needs a (B, T, ...) input of the capacity T.")
        self.f32 = dtype == np.float32
        self.typenum = dtype.num
        self.x_typenum = x_dtype.num
        self.item = dtype.itemsize
        self.B = x_shape[0]
        self.tcap = T
        self.t_generic = t_generic
        self.x_ndim = len(x_shape)
        self.out_ndim = len(out_shape)
        for i, d in enumerate(x_shape):
            self.x_dims[i] = d
        for i, d in enumerate(out_shape):
            self.out_dims[i] = d
        self.keep = []
        self.lock = lock
        self.steps = <Step*>malloc(len(steps) * sizeof(Step))
        if self.steps == NULL:
            raise MemoryError()
        memset(self.steps, 0, len(steps) * sizeof(Step))
        self.n_steps = len(steps)
        cdef Py_ssize_t in_row = int(np.prod(x_shape)) // self.B * x_dtype.itemsize
        self.x_seq = steps[0]["seq_in"]
        self.x_unit = in_row // T if self.x_seq else in_row
        self.n_ids = in_row // T // 8 if self.x_seq else in_row // 8  # an Embedding's ids per row (per step)
        self.work_T = self.work_fixed = 0
        for i, spec in enumerate(steps):
            src, src2 = spec.get("src", i - 1), spec.get("src2", -1)
            if not -1 <= src < i or not -1 <= src2 < i or (spec["kind"] == "embed") != (i == 0 and
                                                                                         x_dtype != dtype):
                raise ValueError("CyPlan: a step reads earlier steps only; ids feed the first, an Embedding.")
            self.steps[i].src, self.steps[i].src2 = src, src2
            self._bind(&self.steps[i], spec, dtype)
            in_row = self.steps[i].y_row
        self.out_seq = steps[len(steps) - 1]["seq_out"]
        if t_generic and self.out_seq and (len(out_shape) < 3 or out_shape[1] != T):
            raise ValueError("CyPlan: a T-generic plan's sequence output must be (B, T, ...).")
        self.out_unit = in_row // T if self.out_seq else in_row
        if in_row * self.B != int(np.prod(out_shape)) * self.item:
            raise ValueError("CyPlan: the last layer's output does not fill out_shape.")
        if lock is not None:
            self.seen = <unsigned char*>malloc(self.B)
            if self.seen == NULL:
                raise MemoryError()
        self.epoch = rnnengine_weights_epoch

    cdef int _bind(self, Step* s, dict spec, dtype) except -1:
        kind = KINDS[spec["kind"]]
        s.kind = kind
        s.seq_in, s.seq_out = spec["seq_in"], spec["seq_out"]
        cdef Py_ssize_t work
        if kind in (EMBED, MASKING, MERGE):
            return self._bind_data_step(s, spec, dtype)
        capsule = spec["kernels"][0 if self.f32 else 1]
        s.fn = PyCapsule_GetPointer(capsule, NULL)
        # Dense's y_out is its (N, F) view: the plan binds the (B, ...) buffer.
        s.y = self._buffer(spec["y"] if kind == DENSE else spec["y_out"], dtype, &s.y_row)
        s.C, s.H = spec["C"], spec["F"] if kind == DENSE else spec["H"]
        s.act = spec["activation"]
        if kind == DENSE:
            s.R = spec["R"] // self.tcap if s.seq_in else spec["R"]
            s.use_bias = spec["use_bias"]
            s.w0 = self._weight(spec["kernel"], dtype)
            s.w1 = self._weight(spec["bias"], dtype)
            work = self.B * s.R * s.C * s.H
            if s.seq_in:
                self.work_T += work
            else:
                self.work_fixed += work
            return 0
        if spec["T"] != self.tcap or not s.seq_in:
            raise ValueError("CyPlan: a recurrent step must run the plan's T on a (B, T, C) input.")
        keep = spec["keep"]
        if keep.size:
            s.keep = self._mask(keep)
        s.zero_output_for_mask = spec["zero_output_for_mask"]
        s.carry_state = spec.get("carry_state", False)
        s.ract = spec.get("recurrent_activation", 0)
        s.go_backwards = spec["go_backwards"]
        s.return_sequences = spec["return_sequences"]
        s.h = self._state(spec["h"], dtype, &s.h_row, &s.h_park)
        s.xproj = self._buffer(spec["xproj"], dtype, &s.xproj_row)
        s.rec = self._buffer(spec["rec"], dtype, &s.rec_row)
        cdef Py_ssize_t row
        if kind == LSTM:
            s.c = self._state(spec["c"], dtype, &row, &s.c_park)
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
        self.work_T += self.B * (s.C + s.H) * (s.xproj_row // self.item // self.tcap)
        return 0

    cdef int _bind_data_step(self, Step* s, dict spec, dtype) except -1:
        """EMBED (ids, table (V, D), y, keep or empty), MASKING (y, keep,
        mask_value, C features) or MERGE (y, mode, H per side): steps of this
        module, no kernel pointer; their work counts as one multiply-add per value."""
        s.y = self._buffer(spec["y"], dtype, &s.y_row)
        s.R = spec.get("R", 1)
        if s.kind == EMBED:
            table = spec["table"]
            if table.ndim != 2 or s.y_row != s.R * (self.tcap if s.seq_in else 1) * table.shape[1] * self.item \
                    or s.R != self.n_ids:
                raise ValueError("CyPlan: an Embedding's y must hold one table row per id.")
            s.w0 = self._weight(table, dtype)
            s.C, s.H = table.shape[0], table.shape[1]
        elif s.kind == MASKING:
            s.C = spec["C"]
            s.mask_value = spec["mask_value"]
        else:
            s.H, s.H2 = spec["H"], spec.get("H2", spec["H"])
            s.mode = MERGE_MODES[spec["mode"]]
            s.reverse = spec.get("reverse", False)
            if s.src < 0 or s.src2 < 0 or s.y_row != self.steps[s.src].y_row + (
                    self.steps[s.src2].y_row if s.mode == MERGE_CONCAT else 0) or \
                    self.steps[s.src2].y_row * s.H != self.steps[s.src].y_row * s.H2:
                raise ValueError("CyPlan: a merge reads two earlier steps of its shape into its y.")
        keep = spec.get("keep")
        if keep is not None and keep.size:
            s.keep = self._mask(keep)
        elif s.kind == MASKING:
            raise ValueError("CyPlan: a Masking step writes a keep array.")
        work = self.B * s.y_row // self.item
        if s.seq_in:
            self.work_T += work // self.tcap
        else:
            self.work_fixed += work
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

    cdef char* _state(self, a, dtype, Py_ssize_t* row, char** park) except NULL:
        """A recurrent state buffer; a stream's plan also gets rows to park
        states in for step(rows=)."""
        cdef char* p = self._buffer(a, dtype, row)
        if self.lock is not None:
            park[0] = self._buffer(a.copy(), dtype, row)
        return p

    cdef char* _mask(self, a) except NULL:
        """A (B, T) uint8 mask buffer (kernels/contract.py's keep), T the capacity."""
        if not isinstance(a, cnp.ndarray) or a.dtype.num != cnp.NPY_UINT8 or not a.flags.c_contiguous \
                or a.ndim != 2 or a.shape[0] != self.B or a.shape[1] != self.tcap:
            raise ValueError(f"CyPlan: a mask must be a C-contiguous uint8 ({self.B}, {self.tcap}) array.")
        self.keep.append(a)
        return _data(a)

    cdef void* _weight(self, a, dtype) except NULL:
        if not isinstance(a, cnp.ndarray) or a.dtype != dtype or not a.flags.c_contiguous or a.size == 0:
            raise ValueError(f"CyPlan: a weight must be a non-empty C-contiguous {dtype} array.")
        self.keep.append(a)
        return <void*>_data(a)

    def __dealloc__(self):
        free(self.steps)
        free(self.seen)

    def revalidate(self):
        """The owner has checked the plan's weights are still the layers': run again."""
        self.epoch = rnnengine_weights_epoch

    @property
    def current(self):
        """False once weights or the backend changed after the plan was built or revalidated."""
        return self.epoch == rnnengine_weights_epoch

    @property
    def capacity(self):
        """The longest T one call runs (the buffers' T); every T up to it when t_generic."""
        return self.tcap

    cdef bint _ids_in_range(self, const char* x, Py_ssize_t nb, Py_ssize_t T) noexcept:
        """For a plan fed ids (an Embedding first): every id in [0, input_dim).
        The gather then needs no check of its own; a call with a bad id runs
        nothing, and the caller's general path raises the layer's error."""
        if self.x_typenum == self.typenum:
            return True
        cdef const long long* ids = <const long long*>x
        cdef Py_ssize_t i, n = nb * self.n_ids * (T if self.x_seq else 1)
        cdef long long V = self.steps[0].C
        for i in range(n):
            if ids[i] < 0 or ids[i] >= V:
                return False
        return True

    cdef void _call(self, const char* x, char* out, Py_ssize_t T, Py_ssize_t nb, bint zero_state):
        """_run, without the GIL unless the call is tiny (under GIL_RELEASE_MIN_WORK
        multiply-adds, a few microseconds): a thread that gives the GIL up while
        another Python thread runs waits up to the interpreter's switch interval
        (5 ms) to get it back, so releasing it for a 2 us stream step cost that
        step milliseconds under contention (NumPy keeps the GIL for small arrays
        for the same reason)."""
        cdef Py_ssize_t work = (self.work_T * T + self.work_fixed) // self.B * nb
        self.uses += 1
        if work < GIL_RELEASE_MIN_WORK:
            self._run(x, out, T, nb, work, zero_state)
        else:
            with nogil:
                self._run(x, out, T, nb, work, zero_state)

    cdef void _run(self, const char* x, char* out, Py_ssize_t T, Py_ssize_t B, Py_ssize_t work,
                   bint zero_state) noexcept nogil:
        cdef int n = _batch_threads(B, work)
        cdef Py_ssize_t i, b0, nb
        cdef Py_ssize_t x_row = self.x_unit * T if self.x_seq else self.x_unit
        cdef Py_ssize_t out_row = self.out_unit * T if self.out_seq else self.out_unit
        if n == 1:
            _run_block(self.steps, self.n_steps, self.f32, x, out, x_row, out_row, T, self.tcap, 0, B,
                       zero_state)
        else:
            for i in prange(n, schedule='static', num_threads=n):
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _run_block(self.steps, self.n_steps, self.f32, x, out, x_row, out_row, T, self.tcap, b0, nb,
                           zero_state)

    cdef Py_ssize_t _input_T(self, object x, int ndim, Py_ssize_t rows):
        """The T of an input ``x`` of ``rows`` rows laid out as the plan's x
        (``ndim`` dims: the plan's, or one less for a stream's batch-less step),
        or -1 when its dtype, layout or shape does not match."""
        if not cnp.PyArray_Check(x):
            return -1
        cdef cnp.ndarray a = <cnp.ndarray>x
        if cnp.PyArray_TYPE(a) != self.x_typenum or not cnp.PyArray_IS_C_CONTIGUOUS(a) or \
                cnp.PyArray_NDIM(a) != ndim:
            return -1
        cdef cnp.npy_intp* got = cnp.PyArray_DIMS(a)
        cdef int skip = self.x_ndim - ndim  # leading plan dims the array does not have
        cdef int i
        cdef Py_ssize_t T = self.tcap
        for i in range(ndim):
            if i + skip == 0:
                if got[i] != rows:
                    return -1
            elif i + skip == 1 and self.t_generic:
                T = got[i]
                if T < 1 or T > self.tcap:
                    return -1
            elif got[i] != self.x_dims[i + skip]:
                return -1
        return T

    cdef object _output(self, object out, Py_ssize_t T, int skip, Py_ssize_t rows):
        """``out`` when it is a writeable C-contiguous array of the output's shape
        for T (without its first ``skip`` dims, ``rows`` rows), a new array when
        None; None when it does not match."""
        cdef cnp.npy_intp dims[MAX_NDIM]
        cdef int i
        cdef int ndim = self.out_ndim - skip
        for i in range(ndim):
            dims[i] = self.out_dims[i + skip]
        if skip == 0:
            dims[0] = rows
        if self.t_generic and self.out_seq and skip == 0:
            dims[1] = T
        if out is None:
            return cnp.PyArray_EMPTY(ndim, dims, self.typenum, 0)
        if not cnp.PyArray_Check(out):
            return None
        cdef cnp.ndarray a = <cnp.ndarray>out
        if cnp.PyArray_TYPE(a) != self.typenum or not cnp.PyArray_IS_C_CONTIGUOUS(a) or \
                not cnp.PyArray_ISWRITEABLE(a) or not _same_dims(a, ndim, dims):
            return None
        return out

    def run(self, x, out, bint zero_state=True):
        """Run on ``x`` into ``out`` (the plan's batch, a T it runs, dtype,
        C-contiguous); True when it ran, False when an array did not match
        (nothing was touched)."""
        if not self.current:
            return False
        cdef Py_ssize_t T = self._input_T(x, self.x_ndim, self.B)
        if T < 0 or self._output(out, T, 0, self.B) is None or \
                not self._ids_in_range(_data(<cnp.ndarray>x), self.B, T):
            return False
        self._call(_data(<cnp.ndarray>x), _data(<cnp.ndarray>out), T, self.B, zero_state)
        return True

    def predict(self, x, out=None, batch_size=None):
        """The model's output for ``x`` when ``x`` (and ``out``, if given) are
        what the plan runs (its batch, a T up to its capacity when T-generic),
        and ``batch_size`` does not split the call; None otherwise (the caller
        then takes the general path)."""
        if not self.current:
            return None
        cdef Py_ssize_t T = self._input_T(x, self.x_ndim, self.B)
        if T < 0:
            return None
        if batch_size is not None and (type(batch_size) is not int or batch_size < self.B):
            return None
        if not self._ids_in_range(_data(<cnp.ndarray>x), self.B, T):
            return None
        out = self._output(out, T, 0, self.B)
        if out is None:
            return None
        self._call(_data(<cnp.ndarray>x), _data(<cnp.ndarray>out), T, self.B, True)
        return out

    def step(self, x, out=None, rows=None):
        """One stream step, the recurrent state carried in the plan's state
        buffers: ``x`` is (B, features), or (features,) when B is 1 (the output
        then has no batch axis). With ``rows`` (a C-contiguous intp array of n
        distinct indices in [0, B)), ``x`` is (n, features) and only those rows
        step: their states are gathered, stepped as one n-row batch, and
        scattered back. None when ``x``, ``out`` or ``rows`` does not match
        (nothing was touched). Holds the stream's lock while it runs: a second
        thread stepping the same stream gets RuntimeError."""
        if not self.current:
            return None
        cdef Py_ssize_t n = self.B
        cdef Py_ssize_t* idx = NULL
        cdef cnp.ndarray r
        if rows is not None:
            if not cnp.PyArray_Check(rows):
                return None
            r = <cnp.ndarray>rows
            if cnp.PyArray_TYPE(r) != cnp.NPY_INTP or cnp.PyArray_NDIM(r) != 1 or \
                    not cnp.PyArray_IS_C_CONTIGUOUS(r):
                return None
            n = cnp.PyArray_DIMS(r)[0]
            if n < 1 or n > self.B:
                return None
            idx = <Py_ssize_t*>cnp.PyArray_DATA(r)
        cdef bint single = n == 1 and self._input_T(x, self.x_ndim - 1, n) == self.tcap
        if not single and self._input_T(x, self.x_ndim, n) != self.tcap:
            return None
        out = self._output(out, self.tcap, 1 if single else 0, n)
        if out is None:
            return None
        cdef const char* xp = _data(<cnp.ndarray>x)
        cdef char* op = _data(<cnp.ndarray>out)
        if not self._ids_in_range(xp, n, self.tcap):
            return None
        if not self.lock.acquire(False):
            raise RuntimeError("This stream cannot be stepped now: another thread is using it (stepping, "
                               "resetting or reading its state). A stream is single-owner; make one stream "
                               "per thread (they are cheap).")
        try:
            if idx == NULL:
                self._call(xp, op, self.tcap, n, False)
            elif not self._step_rows(xp, op, idx, n):
                return None
        finally:
            self.lock.release()
        return out

    cdef bint _step_rows(self, const char* x, char* out, const Py_ssize_t* idx, Py_ssize_t n):
        """step(rows=): validate the indices, swap each stepped row's state into
        rows [0, n) of the states (the displaced rows parked in the scratch
        copies), run n rows, and put every row back where it was."""
        cdef Py_ssize_t j, r
        memset(self.seen, 0, self.B)
        for j in range(n):
            r = idx[j]
            if r < 0 or r >= self.B or self.seen[r]:
                return False
            self.seen[r] = 1
        self._swap_states(idx, n, True)
        self._call(x, out, self.tcap, n, False)
        self._swap_states(idx, n, False)
        return True

    cdef void _swap_states(self, const Py_ssize_t* idx, Py_ssize_t n, bint gather):
        """gather: park rows [0, n) of each state, then row j := the state of row
        idx[j] (from the park when idx[j] < n); scatter: each stepped row's new
        state to its place (through the park when that place is below n), then
        rows [0, n) back from the park. O(n) rows, whatever B is."""
        cdef int i, which
        cdef Py_ssize_t j, row
        cdef char* state
        cdef char* park
        for i in range(self.n_steps):
            row = self.steps[i].h_row
            for which in range(2):
                state = self.steps[i].h if which == 0 else self.steps[i].c
                park = self.steps[i].h_park if which == 0 else self.steps[i].c_park
                if state == NULL:
                    continue
                if gather:
                    memcpy(park, state, n * row)
                    for j in range(n):
                        memcpy(state + j * row, (park if idx[j] < n else state) + idx[j] * row, row)
                else:
                    for j in range(n):
                        memcpy((park if idx[j] < n else state) + idx[j] * row, state + j * row, row)
                    memcpy(state, park, n * row)


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
