# cython: language_level=3
# Keras's mask inside the forward kernels (src/_simple_rnn.pyx, _lstm.pyx,
# _gru.pyx): keep is (B, T) uint8, keep[b, t] = 1 where input time t of row b
# is a real step, or NULL (no mask). A masked step carries the row's state
# through unchanged; its output repeats the previous step's output (zeros
# before the first valid step), or is zeros with zero_output_for_mask; the
# last output is the last step's such output (Keras's backend.rnn). Spec:
# rnnengine/kernels/reference.py masked_forward; contract: kernels/contract.py.
#
# A batch-1 call runs its valid steps as runs of the unmasked kernel (so the
# split pool and the fused step serve it as they serve an unmasked call, and
# padding costs a copy a step); a larger batch skips masked rows inside the
# step loop, and a step with no valid row skips its product.
from cython cimport floating
from libc.string cimport memcpy, memset


cdef inline bint _row_runs(const unsigned char* keep, Py_ssize_t T, Py_ssize_t b,
                           Py_ssize_t t) noexcept nogil:
    return keep == NULL or keep[b * T + t] != 0


cdef inline bint _step_runs(const unsigned char* keep, Py_ssize_t B, Py_ssize_t T,
                            Py_ssize_t t) noexcept nogil:
    """Whether some row computes input time t."""
    cdef Py_ssize_t b
    if keep == NULL:
        return True
    for b in range(B):
        if keep[b * T + t]:
            return True
    return False


cdef inline Py_ssize_t _run_end(const unsigned char* keep, Py_ssize_t T, bint go_backwards,
                                Py_ssize_t s) noexcept nogil:
    """Batch 1: the processing index after the run of valid steps starting at s."""
    while s < T and keep[T - 1 - s if go_backwards else s]:
        s += 1
    return s


cdef inline void _write_output(floating* y_out, const floating* h, const unsigned char* keep,
                               Py_ssize_t B, Py_ssize_t T, Py_ssize_t H, Py_ssize_t s,
                               Py_ssize_t t, bint return_sequences,
                               bint zero_output_for_mask) noexcept nogil:
    """After processing step s (input time t): y_out[:, s] (return_sequences),
    or y_out[:, 0] after the last step, by the rule above."""
    cdef Py_ssize_t b, u
    cdef floating* y_b
    cdef bint valid
    if return_sequences:
        for b in range(B):
            y_b = y_out + (b * T + s) * H
            if _row_runs(keep, T, b, t):
                memcpy(y_b, h + b * H, H * sizeof(floating))
            elif zero_output_for_mask or s == 0:
                memset(y_b, 0, H * sizeof(floating))
            else:
                memcpy(y_b, y_b - H, H * sizeof(floating))
    elif s == T - 1:
        for b in range(B):
            valid = _row_runs(keep, T, b, t)
            if not valid and not zero_output_for_mask:
                for u in range(T):
                    if keep[b * T + u]:
                        valid = True
                        break
            if valid:
                memcpy(y_out + b * H, h + b * H, H * sizeof(floating))
            else:
                memset(y_out + b * H, 0, H * sizeof(floating))


# -- the mask in the training passes (spec: rnnengine/kernels/reference.py
# _MaskRoute; the Numba twins are in kernels/_numba_common.py). forward_train
# skips a masked row's step like the forward, saving its carried state and
# zero preact and gates (finite: the backward's derivative sweep and weight
# GEMMs read them, and its gradients there are zeros). The backward passes a
# masked row's state gradients to the step before unchanged; the gradient of
# a masked step's output (the previous output carried) goes, through dcarry
# (B, H), to the last valid step's output, or nowhere with
# zero_output_for_mask (a masked output is then a constant zero).

cdef inline void _skip_row(floating* h_tm1_bt, const floating* h_b, floating* preact_bt,
                           floating* gates_bt, Py_ssize_t H, Py_ssize_t G) noexcept nogil:
    """forward_train, a masked row's step: h_tm1_bt (H,) = h_b; preact_bt and
    gates_bt (G,) zeroed."""
    memcpy(h_tm1_bt, h_b, H * sizeof(floating))
    memset(preact_bt, 0, G * sizeof(floating))
    memset(gates_bt, 0, G * sizeof(floating))


cdef inline void _start_backward(floating* dh0, floating* dcarry, const floating* dy,
                                 const floating* dh_n, const unsigned char* keep,
                                 Py_ssize_t B, Py_ssize_t H,
                                 bint return_sequences) noexcept nogil:
    """dh0 = dh_n (+ dy without return_sequences: y is the last h); with a
    mask that dy enters through dcarry instead (zeros with return_sequences,
    whose dy enters step by step). dh_n may alias dh0."""
    cdef Py_ssize_t b, j
    for b in range(B):
        for j in range(H):
            dh0[b * H + j] = dh_n[b * H + j]
            if keep != NULL:
                dcarry[b * H + j] = 0 if return_sequences else dy[b * H + j]
            elif not return_sequences:
                dh0[b * H + j] += dy[b * H + j]  # y is the last h


cdef inline void _masked_dout(floating* dcarry_b, floating* dgates_t_b, floating* dgates_bt,
                              const floating* dy_bs, Py_ssize_t H, Py_ssize_t G,
                              bint return_sequences, bint zero_output_for_mask) noexcept nogil:
    """backward, a masked row's step: y_s = y_{s-1} (or 0), so y_s's gradient
    (dy_bs (H,), read with return_sequences only) carries to the step before;
    no gate gradient (dgates_t_b and dgates_bt (G,) zeroed)."""
    cdef Py_ssize_t j
    if zero_output_for_mask:
        memset(dcarry_b, 0, H * sizeof(floating))
    elif return_sequences:
        for j in range(H):
            dcarry_b[j] += dy_bs[j]
    memset(dgates_t_b, 0, G * sizeof(floating))
    memset(dgates_bt, 0, G * sizeof(floating))


cdef inline void _step_dout(floating* dh_b, floating* dcarry_b, const floating* dy_bs,
                            Py_ssize_t H, bint return_sequences) noexcept nogil:
    """backward, a valid row's step with a mask: dh_b += its output's gradient,
    dy_bs (return_sequences) plus what masked steps after it carried back;
    dcarry_b restarts at 0."""
    cdef Py_ssize_t j
    for j in range(H):
        if return_sequences:
            dh_b[j] += dcarry_b[j] + dy_bs[j]
        else:
            dh_b[j] += dcarry_b[j]
        dcarry_b[j] = 0


cdef inline void _take_valid_rows(floating* dst, const floating* src, const unsigned char* keep,
                                  Py_ssize_t B, Py_ssize_t T, Py_ssize_t H, Py_ssize_t t,
                                  bint add) noexcept nogil:
    """dst[b] = src[b] (add: +=) for the rows that ran input time t; a masked
    row's dh passes on unchanged. dst and src are (B, H)."""
    cdef Py_ssize_t b, j
    for b in range(B):
        if keep[b * T + t]:
            if add:
                for j in range(H):
                    dst[b * H + j] += src[b * H + j]
            else:
                memcpy(dst + b * H, src + b * H, H * sizeof(floating))
