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

from _blas cimport _join_watch, _load_interrupt, _stopped, _unwatch, _watch
from _gates cimport (_batch_threads, _set_gate_threads, _set_min_work, rnnengine_gate_threads,
                     rnnengine_min_work)

cnp.import_array()
_load_interrupt()

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
    REPEAT = 7  # RepeatVector: (B, H) -> (B, n, H)
    ACTIVATION = 8  # y = activation(x) over rows of F (Keras's Activation layer)
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
         "masking": MASKING, "merge": MERGE, "repeat": REPEAT, "activation": ACTIVATION}
MERGE_MODES = {"concat": MERGE_CONCAT, "sum": MERGE_SUM, "ave": MERGE_AVE, "mul": MERGE_MUL, "sub": MERGE_SUB,
               "max": MERGE_MAX, "min": MERGE_MIN}

# The pointer kernels' signatures: src/_call.pxd (each kernel module assigns
# its pointer kernel to them, so the compiler checks them where it is written).
from _call cimport (activation_d, activation_f, dense_d, dense_f, gru_d, gru_f, keep_p, lstm_d, lstm_f,
                    simple_rnn_d, simple_rnn_f)


cdef enum:
    # Where a step reads from (Source.kind): a step's y, a plan input, a step's h or c.
    SRC_Y = 0
    SRC_X = 1
    SRC_H = 2
    SRC_C = 3
    SRC_NONE = -1
    MAX_IO = 8  # inputs, and outputs, one plan takes


cdef struct Source:
    int kind
    int index  # a step's (Y, H, C) or an input's (X)


cdef struct Step:
    # One layer's kernel call. Batch-indexed buffers are a base pointer and the
    # bytes one batch row takes at the step's capacity (a thread's block starts
    # b0 rows in, and writes its rows packed for the call's T, which never
    # exceeds the capacity); weights are shared by every block. tlen: the
    # step's time length at capacity (a T-generic plan runs every step at the
    # call's T). For Dense, Embedding and Masking, R is the rows per batch item
    # per timestep when seq_in (the input is (B, T, ...)), else per batch item.
    # seq_in / seq_out: the input / output rows scale with T. src / src2: what
    # the step reads (a Bidirectional's two layers read one source, its MERGE
    # both of them); init_h / init_c: a recurrent step's initial state (Keras's
    # initial_state: a plan input or another step's final state), else zeros.
    # keep: (B, tlen) uint8, used packed as (B, T) per call, like every buffer.
    int kind
    Source src, src2, init_h, init_c
    int mode
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
    Py_ssize_t y_row, h_row, xproj_row, rec_row, tlen
    void* w0
    void* w1
    void* w2
    void* w3
    void* w4
    Py_ssize_t C, H, R
    bint seq_in, seq_out, carry_state  # carry_state: a stateful layer's h (and c), never zeroed
    bint t_follows  # its T is the plan input's (a T-generic call's T), not a fixed one (after a RepeatVector)
    bint reverse  # MERGE: the second source's steps in reversed order (a Bidirectional's backward layer)
    Py_ssize_t H2  # MERGE concat: the second source's width
    int act, ract, go_backwards, return_sequences, reset_after, use_bias, zero_output_for_mask


cdef struct Call:
    # One run's arrays: the inputs and outputs (the caller's, packed for T), and
    # which source each output copies (``direct``: the one output is the last
    # step's y, which that step writes in place). T: the call's length for a
    # T-generic plan, 0 otherwise (each step runs its own tlen).
    const char* x[MAX_IO]
    Py_ssize_t x_row[MAX_IO]
    char* out[MAX_IO]
    Py_ssize_t out_row[MAX_IO]
    Source out_src[MAX_IO]
    int n_out
    bint direct, zero_state
    Py_ssize_t T


cdef inline const char* _source(const Step* steps, Source src, const Call* call, Py_ssize_t b0) noexcept nogil:
    cdef const Step* s
    if src.kind == SRC_X:
        return call.x[src.index] + b0 * call.x_row[src.index]
    s = &steps[src.index]
    if src.kind == SRC_Y:
        return s.y + b0 * s.y_row
    return (s.h if src.kind == SRC_H else s.c) + b0 * s.h_row


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


cdef void _run_block(const Step* steps, int n_steps, bint f32, const Call* call, Py_ssize_t b0,
                     Py_ssize_t nb) noexcept nogil:
    """Every step on batch rows [b0, b0 + nb), in order, each reading its
    sources; then each output's rows copied out (unless written in place)."""
    cdef int i, j
    cdef const Step* s
    cdef const char* inp
    cdef char* y
    cdef char* h
    cdef char* c
    cdef keep_p k
    cdef Py_ssize_t R, T, t
    for i in range(n_steps):
        if _stopped():  # SIGINT during a watched call: CyPlan._call raises KeyboardInterrupt
            return
        s = &steps[i]
        T = call.T if call.T > 0 and s.t_follows else s.tlen
        inp = _source(steps, s.src, call, b0) if s.src.kind != SRC_NONE else NULL
        y = call.out[0] + b0 * call.out_row[0] if call.direct and i == n_steps - 1 else s.y + b0 * s.y_row
        h = s.h + b0 * s.h_row if s.h != NULL else NULL
        c = s.c + b0 * s.h_row if s.c != NULL else NULL
        k = <keep_p>(s.keep + b0 * s.tlen) if s.keep != NULL else NULL
        R = s.R * T if s.seq_in else s.R
        if s.kind == EMBED:
            _embed(y, <unsigned char*>k, <const long long*>inp, <const char*>s.w0, nb * R,
                   s.H * (4 if f32 else 8))
            continue
        if s.kind == REPEAT:
            for j in range(nb * s.R):
                for t in range(s.tlen):
                    memcpy(y + (j * s.tlen + t) * s.H, inp + j * s.H, s.H)  # H: bytes per row here
            continue
        if s.kind == ACTIVATION:  # the Activation layer: a copy, then the Dense kernel's activation in place
            memcpy(y, inp, nb * R * s.H * (4 if f32 else 8))
            if f32:
                (<activation_f>s.fn)(<float*>y, nb * R, s.H, s.act)
            else:
                (<activation_d>s.fn)(<double*>y, nb * R, s.H, s.act)
            continue
        if s.kind == MASKING:
            if f32:
                _masking(<float*>y, <unsigned char*>k, <const float*>inp, nb * R, s.C, <float>s.mask_value)
            else:
                _masking(<double*>y, <unsigned char*>k, <const double*>inp, nb * R, s.C, s.mask_value)
            continue
        if s.kind == MERGE:
            if f32:
                _merge(<float*>y, <const float*>inp, <const float*>_source(steps, s.src2, call, b0),
                       nb, T if s.seq_in else 1, s.H, s.H2, s.mode, s.reverse)
            else:
                _merge(<double*>y, <const double*>inp, <const double*>_source(steps, s.src2, call, b0),
                       nb, T if s.seq_in else 1, s.H, s.H2, s.mode, s.reverse)
            continue
        if h != NULL:
            if s.init_h.kind != SRC_NONE:  # Keras's initial_state
                memcpy(h, _source(steps, s.init_h, call, b0), nb * s.h_row)
                if c != NULL:
                    memcpy(c, _source(steps, s.init_c, call, b0), nb * s.h_row)
            elif call.zero_state and not s.carry_state:
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
    if not call.direct:
        for j in range(call.n_out):
            memcpy(call.out[j] + b0 * call.out_row[j], _source(steps, call.out_src[j], call, b0),
                   nb * call.out_row[j])


cdef inline bint _reads(Source src, int k) noexcept:
    return src.kind == SRC_X and src.index == k


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
    """A model's kernel calls for one batch size and input shapes, bound once.

    ``steps`` is a list of dicts built by rnnengine/models/plan.py: ``kind``,
    ``seq_in`` / ``seq_out``, ``tlen`` (its time length at capacity), ``src``
    (and a merge's ``src2``, a recurrent step's ``init_h`` / ``init_c``), each
    a source ``("y" | "h" | "c", step index)`` or ``("x", input index)``, and
    that layer's forward call by its argument names
    (rnnengine/kernels/contract.py): buffers and weights (ndarrays,
    C-contiguous, of the plan's dtype; ``keep`` uint8), dims and flags.
    ``inputs``: [(shape, dtype)], batch first (int64 ids for an input an
    Embedding reads, whose range the plan checks before it runs: an id out of
    range makes the call return None / False with nothing touched).
    ``outputs``: [(shape, source)]. Shapes are at the capacity ``T`` the
    buffers were allocated for.

    ``t_generic`` (one input): the plan runs any 1 <= T <= capacity on axis 1
    of the input (and of the outputs that are sequences): every buffer is used
    packed for the call's T, so one plan serves every sequence length up to
    the one it was built for. A stream's plan (``lock``) can also step a
    subset of its rows (``step(x, out, rows)``), their states gathered into
    scratch. One input and one output are passed as arrays, several as lists
    (``single_output``: a one-output model that returns an array).
    """
    cdef Step* steps
    cdef int n_steps, n_in, n_out
    cdef bint f32, t_generic, direct, single_output
    cdef int typenum
    cdef Py_ssize_t B, tcap, work_T, work_fixed, work_full, item
    cdef int x_typenum[MAX_IO]
    cdef int x_ndim[MAX_IO]
    cdef bint x_seq[MAX_IO]
    cdef Py_ssize_t x_unit[MAX_IO]
    cdef cnp.npy_intp x_dims[MAX_IO][MAX_NDIM]
    cdef int out_ndim[MAX_IO]
    cdef Py_ssize_t out_unit[MAX_IO]
    cdef bint out_follows[MAX_IO]  # a sequence output whose T is the call's
    cdef Py_ssize_t out_row_full[MAX_IO]  # bytes per batch row of an output at its bound shape
    cdef cnp.npy_intp out_dims[MAX_IO][MAX_NDIM]
    cdef Source out_src[MAX_IO]
    cdef unsigned long long epoch
    cdef public unsigned long long uses  # calls run: models/plan.py's cache sees which plans are in use
    cdef list keep
    cdef object lock
    cdef unsigned char* seen  # step(rows=): B flags, for the repeat check

    def __cinit__(self):
        self.steps = NULL
        self.seen = NULL

    def __init__(self, list steps, list inputs, list outputs, dtype, lock=None, Py_ssize_t T=1,
                 bint t_generic=False, bint single_output=True):
        import numpy as np

        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"CyPlan: dtype must be float32 or float64, got {dtype}.")
        if not steps or not 1 <= len(inputs) <= MAX_IO or not 1 <= len(outputs) <= MAX_IO:
            raise ValueError("CyPlan: needs at least one step, and 1 to 8 inputs and outputs.")
        if T < 1 or (t_generic and len(inputs) != 1):
            raise ValueError("CyPlan: a T-generic plan has one (B, T, ...) input of the capacity T.")
        self.f32 = dtype == np.float32
        self.typenum = dtype.num
        self.item = dtype.itemsize
        self.B = inputs[0][0][0]
        self.tcap = T
        self.t_generic = t_generic
        self.single_output = single_output and len(outputs) == 1
        self.keep = []
        self.lock = lock
        self.n_in, self.n_out = len(inputs), len(outputs)
        for k, (shape, x_dtype) in enumerate(inputs):
            x_dtype = np.dtype(x_dtype)
            if len(shape) > MAX_NDIM or shape[0] != self.B or (x_dtype != dtype and x_dtype != np.int64):
                raise ValueError("CyPlan: an input is (B, ...) of the plan's dtype, or int64 ids into an "
                                 "Embedding, of at most 8 dims.")
            self.x_typenum[k] = x_dtype.num
            self.x_ndim[k] = len(shape)
            for i, d in enumerate(shape):
                self.x_dims[k][i] = d
        self.steps = <Step*>malloc(len(steps) * sizeof(Step))
        if self.steps == NULL:
            raise MemoryError()
        memset(self.steps, 0, len(steps) * sizeof(Step))
        self.n_steps = len(steps)
        self.work_T = self.work_fixed = self.work_full = 0
        for i, spec in enumerate(steps):
            s = &self.steps[i]
            s.kind = KINDS[spec["kind"]]
            s.src = self._source(spec.get("src"), i, spec["kind"] == "embed")
            s.src2 = self._source(spec.get("src2"), i, False)
            s.init_h = self._source(spec.get("init_h"), i, False)
            s.init_c = self._source(spec.get("init_c"), i, False)
            if s.src.kind == SRC_X:
                self._input_seq(s.src.index, spec["seq_in"], spec.get("tlen", T))
            self._bind(s, spec, dtype)
        for k in range(self.n_in):
            if not self._is_read(k):
                raise ValueError(f"CyPlan: input {k} is read by no step.")
            self.x_unit[k] = int(np.prod(inputs[k][0])) // self.B * np.dtype(inputs[k][1]).itemsize
            if self.x_seq[k]:
                self.x_unit[k] //= self.x_dims[k][1]
        if t_generic and not self.x_seq[0]:
            raise ValueError("CyPlan: a T-generic plan's input is a sequence.")
        for k, (shape, source) in enumerate(outputs):
            self._bind_output(k, tuple(shape), source)
        self.direct = self.n_out == 1 and self.out_src[0].kind == SRC_Y and self.out_src[0].index == \
            self.n_steps - 1
        if lock is not None:
            if self.n_in != 1 or self.n_out != 1:
                raise ValueError("CyPlan: a stream's plan has one input and one output.")
            self.seen = <unsigned char*>malloc(self.B)
            if self.seen == NULL:
                raise MemoryError()
        self.epoch = rnnengine_weights_epoch

    cdef Source _source(self, value, int i, bint ids) except *:
        """A source from its spec: ("y" | "h" | "c", an earlier step) or ("x",
        an input; int64 ids only into an Embedding), or None (none)."""
        cdef Source src
        src.kind, src.index = SRC_NONE, 0
        if value is None:
            return src
        kind, index = value
        src.kind = {"y": SRC_Y, "x": SRC_X, "h": SRC_H, "c": SRC_C}[kind]
        src.index = index
        if src.kind == SRC_X:
            if not 0 <= index < self.n_in or (self.x_typenum[index] != self.typenum) != ids:
                raise ValueError("CyPlan: a step reads an input of the plan's dtype (ids: an Embedding).")
        elif not 0 <= index < i or (src.kind == SRC_H and self.steps[index].h == NULL) or \
                (src.kind == SRC_C and self.steps[index].c == NULL):
            raise ValueError("CyPlan: a step reads an earlier step's output or state.")
        return src

    cdef bint _is_read(self, int k):
        cdef int i
        cdef const Step* s
        for i in range(self.n_steps):
            s = &self.steps[i]
            if _reads(s.src, k) or _reads(s.src2, k) or _reads(s.init_h, k) or _reads(s.init_c, k):
                return True
        return False

    cdef int _input_seq(self, int k, bint seq, Py_ssize_t tlen) except -1:
        """Input k is read as a sequence (its axis 1 is T) or not. A stream's
        plan reads its (B, features) input as one step."""
        cdef bint ids = self.x_typenum[k] != self.typenum
        if seq and self.x_ndim[k] >= (2 if ids else 3) and self.x_dims[k][1] == tlen:
            self.x_seq[k] = True
        elif seq and tlen == 1:  # (B, features), or (B,) ids
            self.x_seq[k] = False
        elif seq:
            raise ValueError("CyPlan: a sequence input is (B, T, ...) with the reading step's T.")
        return 0

    cdef int _bind_output(self, int k, tuple shape, source) except -1:
        cdef Source src = self._source(source, self.n_steps, False)
        if src.kind == SRC_X or len(shape) > MAX_NDIM or shape[0] != self.B:
            raise ValueError("CyPlan: an output is a step's output or state, (B, ...), of at most 8 dims.")
        cdef const Step* s = &self.steps[src.index]
        cdef Py_ssize_t row = s.y_row if src.kind == SRC_Y else s.h_row
        cdef Py_ssize_t n = 1
        for d in shape[1:]:
            n *= d
        if n * self.item != row:
            raise ValueError("CyPlan: the output does not fill out_shape.")
        self.out_src[k] = src
        self.out_ndim[k] = len(shape)
        for i, d in enumerate(shape):
            self.out_dims[k][i] = d
        # Only a sequence output of the call's T scales with it; any other (a
        # state, a Flatten'd sequence, a RepeatVector's n steps) is its bound row.
        self.out_follows[k] = self.t_generic and src.kind == SRC_Y and s.seq_out and s.t_follows
        if self.out_follows[k] and (len(shape) < 3 or shape[1] != self.tcap):
            raise ValueError("CyPlan: a T-generic plan's sequence output must be (B, T, ...).")
        self.out_row_full[k] = row
        self.out_unit[k] = row // s.tlen if self.out_follows[k] else row
        return 0

    cdef int _bind(self, Step* s, dict spec, dtype) except -1:
        kind = s.kind
        s.seq_in, s.seq_out = spec["seq_in"], spec["seq_out"]
        s.tlen = spec.get("tlen", self.tcap) if s.seq_in or s.seq_out else 1
        s.t_follows = spec.get("t_follows", True)
        if self.t_generic and (s.seq_in or s.seq_out) and s.t_follows and s.tlen != self.tcap:
            raise ValueError("CyPlan: a T-generic plan's sequences run its T (or a fixed one, not following).")
        cdef Py_ssize_t work
        if kind in (EMBED, MASKING, MERGE, REPEAT, ACTIVATION):
            return self._bind_data_step(s, spec, dtype)
        if s.src.kind == SRC_NONE:
            raise ValueError("CyPlan: a kernel step needs a source.")
        capsule = spec["kernels"][0 if self.f32 else 1]
        s.fn = PyCapsule_GetPointer(capsule, NULL)
        # Dense's y_out is its (N, F) view: the plan binds the (B, ...) buffer.
        s.y = self._buffer(spec["y"] if kind == DENSE else spec["y_out"], dtype, &s.y_row)
        s.C, s.H = spec["C"], spec["F"] if kind == DENSE else spec["H"]
        s.act = spec["activation"]
        if kind == DENSE:
            s.R = spec["R"] // s.tlen if s.seq_in else spec["R"]
            s.use_bias = spec["use_bias"]
            s.w0 = self._weight(spec["kernel"], dtype)
            s.w1 = self._weight(spec["bias"], dtype)
            self._add_work(s, self.B * s.R * s.C * s.H)
            return 0
        if spec["T"] != s.tlen or not s.seq_in:
            raise ValueError("CyPlan: a recurrent step must run its T on a (B, T, C) input.")
        if (kind == LSTM and (s.init_h.kind == SRC_NONE) != (s.init_c.kind == SRC_NONE)) or \
                (kind != LSTM and s.init_c.kind != SRC_NONE):
            raise ValueError("CyPlan: an initial state is h (and c for an LSTM).")
        keep = spec["keep"]
        if keep.size:
            s.keep = self._mask(keep, s.tlen)
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
        for init in (s.init_h, s.init_c):
            if init.kind != SRC_NONE and self._row_of(init) != s.h_row:
                raise ValueError("CyPlan: an initial state is (B, units) of the step's units.")
        self._add_work(s, self.B * (s.C + s.H) * (s.xproj_row // self.item // s.tlen) * s.tlen)
        return 0

    cdef Py_ssize_t _row_of(self, Source src):
        """The bytes per batch row of a source (a plan input: at its bound shape)."""
        cdef Py_ssize_t n = self.item if src.kind != SRC_X or self.x_typenum[src.index] == self.typenum else 8
        cdef int i
        if src.kind == SRC_X:
            for i in range(1, self.x_ndim[src.index]):
                n *= self.x_dims[src.index][i]
            return n
        return self.steps[src.index].y_row if src.kind == SRC_Y else self.steps[src.index].h_row

    cdef void _add_work(self, const Step* s, Py_ssize_t work):
        """Multiply-adds of a step at its capacity: scaled by the call's T when it is a sequence."""
        self.work_full += work
        if s.seq_in and s.t_follows:
            self.work_T += work // s.tlen
        else:
            self.work_fixed += work

    cdef int _bind_data_step(self, Step* s, dict spec, dtype) except -1:
        """EMBED (ids, table (V, D), y, keep or empty), MASKING (y, keep,
        mask_value, C features) or MERGE (y, mode, H and H2, reverse): steps of
        this module, no kernel pointer; their work counts as one multiply-add per value."""
        s.y = self._buffer(spec["y"], dtype, &s.y_row)
        s.R = spec.get("R", 1)
        cdef Py_ssize_t row
        if s.src.kind == SRC_NONE:
            raise ValueError("CyPlan: a step needs a source.")
        if s.kind == EMBED:
            table = spec["table"]
            row = 8 * s.R * (s.tlen if s.seq_in else 1)
            if s.src.kind != SRC_X or table.ndim != 2 or \
                    s.y_row != s.R * (s.tlen if s.seq_in else 1) * table.shape[1] * self.item or \
                    self._row_of(s.src) != row:
                raise ValueError("CyPlan: an Embedding's y must hold one table row per id of its input.")
            s.w0 = self._weight(table, dtype)
            s.C, s.H = table.shape[0], table.shape[1]
        elif s.kind == MASKING:
            s.C = spec["C"]
            s.mask_value = spec["mask_value"]
        elif s.kind == ACTIVATION:
            s.fn = PyCapsule_GetPointer(spec["kernels"][0 if self.f32 else 1], NULL)
            s.H, s.act = spec["F"], spec["activation"]
            if self._row_of(s.src) != s.y_row or s.y_row != s.R * (s.tlen if s.seq_in else 1) * s.H * self.item:
                raise ValueError("CyPlan: an Activation maps its source's rows of F onto its y.")
        elif s.kind == REPEAT:
            s.H = self._row_of(s.src)  # bytes of one input row, copied tlen times
            if s.seq_in or not s.seq_out or s.t_follows or s.y_row != s.H * s.tlen:
                raise ValueError("CyPlan: a RepeatVector repeats a (B, H) source n times into (B, n, H).")
        else:
            s.H, s.H2 = spec["H"], spec.get("H2", spec["H"])
            s.mode = MERGE_MODES[spec["mode"]]
            s.reverse = spec.get("reverse", False)
            if s.src2.kind == SRC_NONE or s.y_row != self._row_of(s.src) + (
                    self._row_of(s.src2) if s.mode == MERGE_CONCAT else 0) or \
                    self._row_of(s.src2) * s.H != self._row_of(s.src) * s.H2:
                raise ValueError("CyPlan: a merge reads two sources of its shape into its y.")
        keep = spec.get("keep")
        if keep is not None and keep.size:
            s.keep = self._mask(keep, s.tlen)
        elif s.kind == MASKING:
            raise ValueError("CyPlan: a Masking step writes a keep array.")
        self._add_work(s, self.B * s.y_row // self.item)
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

    cdef char* _mask(self, a, Py_ssize_t tlen) except NULL:
        """A (B, tlen) uint8 mask buffer (kernels/contract.py's keep)."""
        if not isinstance(a, cnp.ndarray) or a.dtype.num != cnp.NPY_UINT8 or not a.flags.c_contiguous \
                or a.ndim != 2 or a.shape[0] != self.B or a.shape[1] != tlen:
            raise ValueError(f"CyPlan: a mask must be a C-contiguous uint8 ({self.B}, {tlen}) array.")
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

    cdef bint _ids_in_range(self, const Call* call, Py_ssize_t nb) noexcept:
        """Every id an Embedding step reads is in [0, input_dim). The gather then
        needs no check of its own; a call with a bad id runs nothing, and the
        caller's general path raises the layer's error."""
        cdef int i
        cdef const Step* s
        cdef const long long* ids
        cdef Py_ssize_t j, n
        for i in range(self.n_steps):
            s = &self.steps[i]
            if s.kind != EMBED:
                continue
            ids = <const long long*>call.x[s.src.index]
            n = nb * s.R * ((call.T if call.T > 0 and s.t_follows else s.tlen) if s.seq_in else 1)
            for j in range(n):
                if ids[j] < 0 or ids[j] >= s.C:
                    return False
        return True

    cdef int _call(self, Call* call, Py_ssize_t nb) except -1:
        """_run, without the GIL unless the call is tiny (under GIL_RELEASE_MIN_WORK
        multiply-adds, a few microseconds): a thread that gives the GIL up while
        another Python thread runs waits up to the interpreter's switch interval
        (5 ms) to get it back, so releasing it for a 2 us stream step cost that
        step milliseconds under contention (NumPy keeps the GIL for small arrays
        for the same reason). A long call is watched for SIGINT (src/_interrupt.h):
        KeyboardInterrupt within a timestep of it."""
        cdef Py_ssize_t work = ((self.work_T * call.T + self.work_fixed) if call.T > 0 else self.work_full) \
            // self.B * nb
        cdef int watched
        self.uses += 1
        if work < GIL_RELEASE_MIN_WORK:
            self._run(call, nb, work, 0)
        else:
            watched = _watch(work)
            with nogil:
                self._run(call, nb, work, watched)
            _unwatch(watched)
        return 0

    cdef void _run(self, const Call* call, Py_ssize_t B, Py_ssize_t work, int watched) noexcept nogil:
        cdef int n = _batch_threads(B, work)
        cdef int was
        cdef Py_ssize_t i, b0, nb
        if n == 1:
            _run_block(self.steps, self.n_steps, self.f32, call, 0, B)
        else:
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _run_block(self.steps, self.n_steps, self.f32, call, b0, nb)
                _join_watch(was)

    cdef Py_ssize_t _input_T(self, int k, object x, int skip, Py_ssize_t rows):
        """The T of input k's array ``x`` of ``rows`` rows laid out as the plan
        binds it (without its first ``skip`` dims: a stream's batch-less step),
        or -1 when its dtype, layout or shape does not match."""
        if not cnp.PyArray_Check(x):
            return -1
        cdef cnp.ndarray a = <cnp.ndarray>x
        cdef int ndim = self.x_ndim[k] - skip
        # The type number alone would take a byte-swapped array ('>f4' is NPY_FLOAT
        # too) as native: read raw, its numbers are garbage. Swapped or unaligned
        # arrays go the general path, which converts them.
        if cnp.PyArray_TYPE(a) != self.x_typenum[k] or not cnp.PyArray_IS_C_CONTIGUOUS(a) or \
                not cnp.PyArray_ISBEHAVED_RO(a) or cnp.PyArray_NDIM(a) != ndim:
            return -1
        cdef cnp.npy_intp* got = cnp.PyArray_DIMS(a)
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
            elif got[i] != self.x_dims[k][i + skip]:
                return -1
        return T

    cdef object _output(self, int k, object out, Py_ssize_t T, int skip, Py_ssize_t rows):
        """``out`` when it is a writeable C-contiguous array of output k's shape
        for T (without its first ``skip`` dims, ``rows`` rows), a new array when
        None; None when it does not match."""
        cdef cnp.npy_intp dims[MAX_NDIM]
        cdef int i
        cdef int ndim = self.out_ndim[k] - skip
        for i in range(ndim):
            dims[i] = self.out_dims[k][i + skip]
        if skip == 0:
            dims[0] = rows
        if self.out_follows[k] and skip == 0:
            dims[1] = T
        if out is None:
            return cnp.PyArray_EMPTY(ndim, dims, self.typenum, 0)
        if not cnp.PyArray_Check(out):
            return None
        cdef cnp.ndarray a = <cnp.ndarray>out
        if cnp.PyArray_TYPE(a) != self.typenum or not cnp.PyArray_IS_C_CONTIGUOUS(a) or \
                not cnp.PyArray_ISBEHAVED(a) or not _same_dims(a, ndim, dims):  # behaved: aligned, native, writeable
            return None
        return out

    cdef bint _prepare(self, Call* call, object x, object out, list outs, Py_ssize_t rows, int skip,
                       bint zero_state):
        """Check the inputs (an array, or a list or tuple of n_in) and the
        outputs (out: None, an array for one output, else a list or tuple of
        n_out arrays or Nones; the arrays used land in ``outs``) and fill
        ``call``; False when anything does not match."""
        cdef int k
        cdef Py_ssize_t T = -1, Tk
        if self.n_in == 1 and cnp.PyArray_Check(x):
            xs = (x,)
        elif type(x) in (list, tuple) and len(x) == self.n_in:
            xs = x
        else:
            return False
        for k in range(self.n_in):
            Tk = self._input_T(k, xs[k], skip, rows)
            if Tk < 0:
                return False
            if self.t_generic:
                T = Tk
            call.x[k] = _data(<cnp.ndarray>xs[k])
            call.x_row[k] = self.x_unit[k] * (Tk if self.t_generic else self.x_dims[k][1]) if self.x_seq[k] \
                else self.x_unit[k]
        call.T = T if self.t_generic else 0
        if self.single_output:
            given = (out,)
        elif out is None:
            given = (None,) * self.n_out
        elif type(out) in (list, tuple) and len(out) == self.n_out:
            given = out
        else:
            return False
        for k in range(self.n_out):
            o = self._output(k, given[k], T, skip, rows)
            if o is None:
                return False
            outs.append(o)
            call.out[k] = _data(<cnp.ndarray>o)
            call.out_row[k] = self.out_unit[k] * T if self.out_follows[k] else self.out_row_full[k]
            call.out_src[k] = self.out_src[k]
        call.n_out = self.n_out
        call.direct = self.direct
        call.zero_state = zero_state
        return self._ids_in_range(call, rows)

    def run(self, x, out, bint zero_state=True):
        """Run on ``x`` into ``out`` (the plan's batch, a T it runs, dtype,
        C-contiguous; lists for several); True when it ran, False when an array
        did not match (nothing was touched)."""
        cdef Call call
        if not self.current or not self._prepare(&call, x, out, [], self.B, 0, zero_state):
            return False
        self._call(&call, self.B)
        return True

    def predict(self, x, out=None, batch_size=None):
        """The model's outputs for ``x`` when ``x`` (and ``out``, if given) are
        what the plan runs (its batch, a T up to its capacity when T-generic),
        and ``batch_size`` does not split the call; None otherwise (the caller
        then takes the general path)."""
        cdef Call call
        cdef list outs = []
        if not self.current:
            return None
        if batch_size is not None and (type(batch_size) is not int or batch_size < self.B):
            return None
        if not self._prepare(&call, x, out, outs, self.B, 0, True):
            return None
        self._call(&call, self.B)
        return outs[0] if self.single_output else outs

    def step(self, x, out=None, rows=None):
        """One stream step, the recurrent state carried in the plan's state
        buffers: ``x`` is (B, features), or (features,) when B is 1 (the output
        then has no batch axis). With ``rows`` (a C-contiguous intp array of n
        distinct indices in [0, B)), ``x`` is (n, features) and only those rows
        step: their states are gathered, stepped as one n-row batch, and
        scattered back. None when ``x``, ``out`` or ``rows`` does not match
        (nothing was touched). Holds the stream's lock while it runs: a second
        thread stepping the same stream gets RuntimeError."""
        cdef Call call
        if not self.current or self.lock is None:
            return None
        cdef Py_ssize_t n = self.B
        cdef Py_ssize_t* idx = NULL
        cdef cnp.ndarray r
        if rows is not None:
            if not cnp.PyArray_Check(rows):
                return None
            r = <cnp.ndarray>rows
            if cnp.PyArray_TYPE(r) != cnp.NPY_INTP or cnp.PyArray_NDIM(r) != 1 or \
                    not cnp.PyArray_IS_C_CONTIGUOUS(r) or not cnp.PyArray_ISBEHAVED_RO(r):
                return None
            n = cnp.PyArray_DIMS(r)[0]
            if n < 1 or n > self.B:
                return None
            idx = <Py_ssize_t*>cnp.PyArray_DATA(r)
        cdef bint single = n == 1 and self._input_T(0, x, 1, n) >= 0
        cdef list outs = []
        if not self._prepare(&call, x, out, outs, n, 1 if single else 0, False):
            return None
        if not self.lock.acquire(False):
            raise RuntimeError("This stream cannot be stepped now: another thread is using it (stepping, "
                               "resetting or reading its state). A stream is single-owner; make one stream "
                               "per thread (they are cheap).")
        try:
            if idx == NULL:
                self._call(&call, n)
            elif not self._step_rows(&call, idx, n):
                return None
        finally:
            self.lock.release()
        return outs[0]

    cdef int _step_rows(self, Call* call, const Py_ssize_t* idx, Py_ssize_t n) except -1:
        """step(rows=): validate the indices, swap each stepped row's state into
        rows [0, n) of the states (the displaced rows parked in the scratch
        copies), run n rows, and put every row back where it was."""
        cdef Py_ssize_t j, r
        memset(self.seen, 0, self.B)
        for j in range(n):
            r = idx[j]
            if r < 0 or r >= self.B or self.seen[r]:
                return 0
            self.seen[r] = 1
        self._swap_states(idx, n, True)
        try:
            self._call(call, n)
        finally:  # a KeyboardInterrupt too: every row back in its place
            self._swap_states(idx, n, False)
        return 1

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
