"""Backward passes: the NumPy reference against float64 finite differences and
TensorFlow's GradientTape on real Keras layers; both kernel backends (Numba and
Cython) against the reference and against TensorFlow, and against each other
buffer by buffer.

Every gradient is compared tensor by tensor and named in the failure message,
as llm.c's ``check_tensor(..., "dqkvw")`` does.
"""
import functools

import numpy as np
import pytest
from numba import njit
from numba.core.runtime import rtsys

from rnnengine import kernels
from rnnengine.kernels import _activations, contract, reference

K_OF = {"simple_rnn": 1, "lstm": 4, "gru": 3}
CELL_VARIANTS = [("simple_rnn", True), ("lstm", True), ("gru", True), ("gru", False)]
CELL_IDS = ["simple_rnn", "lstm", "gru_reset_after", "gru_reset_before"]
FLAGS = [(0, 0), (0, 1), (1, 0), (1, 1)]  # (go_backwards, return_sequences)
FLAG_IDS = ["fwd-last", "fwd-seq", "bwd-last", "bwd-seq"]


def check_tensor(name, got, want, rtol, atol):
    """|got - want| <= rtol * |want| + atol * max|want|: the tolerance scales with the
    tensor (a gradient summed over B*T rows carries that many roundings)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    scale = max(float(np.abs(want).max(initial=0.0)), 1.0)
    err = np.abs(got - want)
    bound = rtol * np.abs(want) + atol * scale
    bad = ~(err <= bound)
    assert not bad.any(), (
        f"{name}: {int(bad.sum())}/{err.size} entries off, max abs err {err.max():.3g} "
        f"(scale {scale:.3g}, rtol {rtol}, atol {atol})")


# ----------------------------------------------------------------------------
# Cases and drivers

def make_case(rng, cell, reset_after, B, T, C, H, dtype=np.float64, scale=1.0):
    K = K_OF[cell]
    bias_shape = (2, K * H) if (cell == "gru" and reset_after) else (K * H,)
    case = dict(
        x=rng.standard_normal((B, T, C)),
        h0=rng.standard_normal((B, H)) * 0.5,
        c0=rng.standard_normal((B, H)) * 0.5,
        kernel=rng.standard_normal((C, K * H)) * 0.5,
        recurrent_kernel=rng.standard_normal((H, K * H)) * 0.5 / np.sqrt(H),
        bias=rng.standard_normal(bias_shape) * 0.5,
    )
    case = {k: (v * scale if k in ("kernel", "recurrent_kernel", "bias") else v).astype(dtype)
            for k, v in case.items()}
    for k in ("kernel", "recurrent_kernel", "bias"):
        case[k].setflags(write=False)  # kernels must accept read-only weights
    return case


def upstream_grads(rng, cell, B, T, H, return_sequences, dtype=np.float64):
    """Random dL/dy, dL/dh_n (and dL/dc_n): the loss is sum(y*dy) + sum(h*dh_n) + ..."""
    g = dict(dy=rng.standard_normal((B, T, H) if return_sequences else (B, H)),
             dh_n=rng.standard_normal((B, H)))
    if cell == "lstm":
        g["dc_n"] = rng.standard_normal((B, H))
    return {k: v.astype(dtype) for k, v in g.items()}


def ref_forward_train(cell, p, act, ract, gb, rs, ra, mask=None, zofm=False):
    masking = dict(mask=mask, zero_output_for_mask=bool(zofm))
    if cell == "simple_rnn":
        return reference.simple_rnn_forward_train(p["x"], p["h0"], p["kernel"], p["recurrent_kernel"],
                                                  p["bias"], act, gb, rs, **masking)
    if cell == "lstm":
        return reference.lstm_forward_train(p["x"], p["h0"], p["c0"], p["kernel"], p["recurrent_kernel"],
                                            p["bias"], act, ract, gb, rs, **masking)
    return reference.gru_forward_train(p["x"], p["h0"], p["kernel"], p["recurrent_kernel"], p["bias"],
                                       act, ract, gb, rs, ra, **masking)


def ref_grads(cell, p, up, act, ract, gb, rs, ra, mask=None, zofm=False):
    """Reference forward_train + backward in float64; returns (outputs, {grad name: array})."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    up = {k: np.asarray(v, np.float64) for k, v in up.items()}
    *outs, cache = ref_forward_train(cell, p, act, ract, gb, rs, ra, mask, zofm)
    if cell == "lstm":
        names = ("dx", "dh0", "dc0", "dkernel", "drecurrent_kernel", "dbias")
        grads = reference.lstm_backward(up["dy"], up["dh_n"], up["dc_n"], cache)
    else:
        names = ("dx", "dh0", "dkernel", "drecurrent_kernel", "dbias")
        backward = reference.simple_rnn_backward if cell == "simple_rnn" else reference.gru_backward
        grads = backward(up["dy"], up["dh_n"], cache)
    return outs, dict(zip(names, grads))


def _call(fn, *args):
    fn(*args)


def kernel_grads(cell, p, up, act, ract, gb, rs, ra, backend="numba", call=_call, saved=None, mask=None,
                 zofm=0):
    """Call the contract of ``kernels/__init__.py`` on ``backend`` with fresh buffers:
    saved buffers and scratch start as NaN (the kernels must not read them before
    writing), accumulators start at 0.25 (the kernels must add, not overwrite).
    Returns (outputs, {grad name: array}); ``saved``, a dict, receives the buffers
    forward_train saved for the backward. ``mask`` (B, T), Keras's, goes to both
    passes as ``keep`` with ``zofm`` (zero_output_for_mask)."""
    x = p["x"]
    dtype = x.dtype
    B, T, C = x.shape
    H = p["h0"].shape[1]
    K = K_OF[cell]
    G = K * H
    a, ra_code = _activations.ELEMENTWISE_CODES[act], _activations.ELEMENTWISE_CODES[ract]
    gb, rs, ra, zofm = int(gb), int(rs), int(ra), int(zofm)
    keep = contract.NO_MASK if mask is None else np.ascontiguousarray(mask, np.uint8)

    def nan(*shape):
        return np.full(shape, np.nan, dtype)

    fwd = functools.partial(call, kernels.get_kernel(cell, "forward_train", backend))
    bwd = functools.partial(call, kernels.get_kernel(cell, "backward", backend))
    y = nan(B, T if rs else 1, H)
    h = p["h0"].copy()
    h_tm1_seq, preact, gates, rec = nan(B, T, H), nan(B, T, G), nan(B, T, G), nan(B, G)
    dy = np.ascontiguousarray(up["dy"].reshape(B, T if rs else 1, H))
    dx, dh0 = nan(B, T, C), nan(B, H)
    dkernel = np.full((C, G), 0.25, dtype)
    drecurrent_kernel = np.full((H, G), 0.25, dtype)
    dgates, dgates_t, dw = nan(B, T, G), nan(B, G), nan(max(C, H) * G)
    dh_rec, dcarry = nan(B, H), nan(B, H)
    kernel, recurrent_kernel, bias = p["kernel"], p["recurrent_kernel"], p["bias"]
    store = dict(h_tm1_seq=h_tm1_seq, preact=preact, gates=gates)
    if cell == "simple_rnn":
        fwd(y, h, h_tm1_seq, preact, gates, rec, x, keep, kernel, recurrent_kernel, bias, B, T, C, H, a, gb, rs,
            zofm)
        dbias = np.full(G, 0.25, dtype)
        bwd(dx, dh0, dkernel, drecurrent_kernel, dbias, dgates, dgates_t, dh_rec, dcarry, dw, dy, up["dh_n"],
            h_tm1_seq, preact, gates, x, keep, kernel, recurrent_kernel, B, T, C, H, a, gb, rs, zofm)
        outs = (y, h)
        grads = dict(dx=dx, dh0=dh0)
    elif cell == "lstm":
        c = p["c0"].copy()
        c_tm1_seq, dc0 = nan(B, T, H), nan(B, H)
        store["c_tm1_seq"] = c_tm1_seq
        fwd(y, h, c, h_tm1_seq, c_tm1_seq, preact, gates, rec, x, keep, kernel, recurrent_kernel, bias,
            B, T, C, H, a, ra_code, gb, rs, zofm)
        dbias = np.full(G, 0.25, dtype)
        bwd(dx, dh0, dc0, dkernel, drecurrent_kernel, dbias, dgates, dgates_t, dh_rec, dcarry, dw, dy,
            up["dh_n"], up["dc_n"], h_tm1_seq, c_tm1_seq, preact, gates, x, keep, kernel, recurrent_kernel,
            B, T, C, H, a, ra_code, gb, rs, zofm)
        outs = (y, h, c)
        grads = dict(dx=dx, dh0=dh0, dc0=dc0)
    else:
        if ra:
            input_bias, recurrent_bias = np.ascontiguousarray(bias[0]), np.ascontiguousarray(bias[1])
        else:
            input_bias, recurrent_bias = bias, np.zeros(G, dtype)
            recurrent_bias.setflags(write=False)
        recurrent_kernel_h = recurrent_kernel[:, 2 * H:].copy()
        recurrent_kernel_h.setflags(write=False)  # as the other weights (one Numba specialization)
        hh_rec_seq, rec_h, rh = nan(B, T, H), nan(B, H), nan(B, H)
        store["hh_rec_seq"] = hh_rec_seq
        fwd(y, h, h_tm1_seq, preact, gates, hh_rec_seq, rec, rec_h, rh, x, keep, kernel, recurrent_kernel,
            recurrent_kernel_h, input_bias, recurrent_bias, B, T, C, H, a, ra_code, gb, rs, ra, zofm)
        dinput_bias, drecurrent_bias = np.full(G, 0.25, dtype), np.full(G, 0.25, dtype)
        dhh_rec_seq, dhh_t = nan(B, T, H), nan(B, H)
        bwd(dx, dh0, dkernel, drecurrent_kernel, dinput_bias, drecurrent_bias, dgates, dhh_rec_seq,
            dgates_t, dh_rec, dhh_t, dcarry, dw, dy, up["dh_n"], h_tm1_seq, preact, gates, hh_rec_seq, x,
            keep, kernel, recurrent_kernel, recurrent_kernel_h, B, T, C, H, a, ra_code, gb, rs, ra, zofm)
        if ra:
            dbias = np.stack([dinput_bias, drecurrent_bias])
        else:
            assert (drecurrent_bias == 0.25).all(), "drecurrent_bias touched without reset_after"
            dbias = dinput_bias
        outs = (y, h)
        grads = dict(dx=dx, dh0=dh0)
    grads.update(dkernel=dkernel - dtype.type(0.25), drecurrent_kernel=drecurrent_kernel - dtype.type(0.25),
                 dbias=dbias - dtype.type(0.25))
    if saved is not None:
        saved.update({k: v.copy() for k, v in store.items()})
    if not rs:
        outs = (y[:, 0],) + outs[1:]
    return outs, grads


# ----------------------------------------------------------------------------
# Activation derivatives

KINKS = np.array([0.0, -3.0, 3.0, -2.5, 2.5, 6.0])


def _points(rng, n=200):
    v = rng.uniform(-7.0, 7.0, n)
    return v[np.abs(v[:, None] - KINKS).min(axis=1) > 1e-3]


def test_every_activation_has_a_gradient():
    assert set(_activations.ELEMENTWISE_CODES) == set(reference.ACTIVATION_GRADS)


@pytest.mark.parametrize("name", sorted(reference.ACTIVATION_GRADS))
def test_activation_grads_match_finite_differences(rng, name):
    v, eps = _points(rng), 1e-6
    f = reference.ACTIVATIONS[name]
    numeric = (f(v + eps) - f(v - eps)) / (2 * eps)
    check_tensor(f"d{name}", reference.ACTIVATION_GRADS[name](v), numeric, 1e-7, 1e-7)


@njit
def _apply_grad_all(code, pre, out):
    for n in range(pre.shape[0]):
        out[n] = _activations.apply_grad(code, pre[n], _activations.apply(code, pre[n]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_apply_grad_matches_reference(rng, dtype):
    v = _points(rng).astype(dtype)
    for name, code in _activations.ELEMENTWISE_CODES.items():
        got = np.empty_like(v)
        _apply_grad_all(code, v, got)
        want = reference.ACTIVATION_GRADS[name](v.astype(np.float64))
        tol = 1e-6 if dtype == np.float32 else 1e-13
        check_tensor(f"apply_grad({name}) {np.dtype(dtype).name}", got, want, tol, tol)


# ----------------------------------------------------------------------------
# Reference backward against float64 central finite differences

FD_CASES = ([(cell, ra, gb, rs, "tanh", "sigmoid")
             for cell, ra in CELL_VARIANTS for gb, rs in FLAGS]
            + [("simple_rnn", True, 0, 1, "softsign", "sigmoid"),
               ("lstm", True, 1, 1, "gelu", "hard_sigmoid"),
               ("gru", True, 0, 1, "elu", "swish"),
               ("gru", False, 1, 0, "softplus", "hard_sigmoid")])


def _fd_id(case):
    cell, ra, gb, rs, act, ract = case
    return f"{CELL_IDS[CELL_VARIANTS.index((cell, ra))]}-{FLAG_IDS[2 * gb + rs]}-{act}-{ract}"


@pytest.mark.parametrize("case", FD_CASES, ids=[_fd_id(c) for c in FD_CASES])
def test_reference_backward_matches_finite_differences(rng, case):
    cell, ra, gb, rs, act, ract = case
    B, T, C, H = 2, 3, 3, 2
    p = make_case(rng, cell, ra, B, T, C, H)
    up = upstream_grads(rng, cell, B, T, H, rs)
    ups = [up["dy"], up["dh_n"]] + ([up["dc_n"]] if cell == "lstm" else [])

    def loss(q):
        outs = ref_forward_train(cell, q, act, ract, gb, rs, ra)[:-1]
        return sum(float((o * u).sum()) for o, u in zip(outs, ups))

    _, grads = ref_grads(cell, p, up, act, ract, gb, rs, ra)
    names = ["x", "h0"] + (["c0"] if cell == "lstm" else []) + ["kernel", "recurrent_kernel", "bias"]
    eps = 1e-6
    for name in names:
        numeric = np.zeros(p[name].shape)
        for idx in np.ndindex(p[name].shape):
            q = dict(p)
            for sign in (1.0, -1.0):
                w = p[name].copy()
                w[idx] += sign * eps
                q[name] = w
                numeric[idx] += sign * loss(q) / (2 * eps)
        check_tensor(f"{_fd_id(case)} d{name}", grads["d" + name], numeric, 1e-6, 1e-7)


@pytest.mark.parametrize("activation", ["linear", "tanh", "gelu", "softmax", "log_softmax"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_backward_matches_finite_differences(rng, activation, use_bias):
    x = rng.standard_normal((2, 3, 4))
    kernel = rng.standard_normal((4, 5))
    bias = rng.standard_normal(5) if use_bias else None
    dy = rng.standard_normal((2, 3, 5))
    dx, dkernel, dbias = reference.dense_backward(dy, x, kernel, bias, activation)
    params = dict(x=x, kernel=kernel) | ({"bias": bias} if use_bias else {})

    def loss(q):
        return float((reference.dense_forward(q["x"], q["kernel"], q.get("bias"), activation) * dy).sum())

    eps = 1e-6
    for name, got in (("x", dx), ("kernel", dkernel), ("bias", dbias)):
        if name not in params:
            assert got is None
            continue
        numeric = np.zeros(params[name].shape)
        for idx in np.ndindex(params[name].shape):
            for sign in (1.0, -1.0):
                w = params[name].copy()
                w[idx] += sign * eps
                numeric[idx] += sign * loss(dict(params, **{name: w})) / (2 * eps)
        check_tensor(f"dense {activation} d{name}", got, numeric, 1e-6, 1e-7)


# ----------------------------------------------------------------------------
# Both backends' kernels against the reference

SHAPES = [
    # (B, T, C, H)
    (3, 5, 4, 3),
    (1, 1, 3, 2),    # one step, batch 1
    (2, 6, 2, 1),    # one unit
    (2, 200, 3, 4),  # long sequence
    (7, 4, 3, 5),    # B > 4: the forward's recurrent product is a GEMM, not a loop
]
# The kernels against the float64 reference run on the same (rounded) inputs,
# relative to each tensor's scale (measured: float32 within 8e-7, float64 within 2e-15).
TOL = {np.float32: (1e-5, 1e-5), np.float64: (1e-11, 1e-12)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,ra", CELL_VARIANTS, ids=CELL_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}C{}H{}".format(*s))
@pytest.mark.parametrize("gb,rs", FLAGS, ids=FLAG_IDS)
def test_backward_matches_reference(backend, rng, dtype, cell, ra, shape, gb, rs):
    B, T, C, H = shape
    p = make_case(rng, cell, ra, B, T, C, H, dtype)
    up = upstream_grads(rng, cell, B, T, H, rs, dtype)
    outs, grads = kernel_grads(cell, p, up, "tanh", "sigmoid", gb, rs, ra, backend)
    want_outs, want = ref_grads(cell, p, up, "tanh", "sigmoid", gb, rs, ra)
    rtol, atol = TOL[dtype]
    label = f"{backend} {cell} ra={ra} gb={gb} rs={rs} {np.dtype(dtype).name} B{B}T{T}C{C}H{H}"
    for name, g, w in zip(("y", "h", "c"), outs, want_outs):
        check_tensor(f"{label} forward_train {name}", g, w, rtol, atol)
    assert set(grads) == set(want)
    for name in want:
        assert grads[name].dtype == dtype, name
        check_tensor(f"{label} {name}", grads[name], want[name], rtol, atol)


@pytest.mark.parametrize("case", FD_CASES[-4:], ids=[_fd_id(c) for c in FD_CASES[-4:]])
def test_backward_other_activations(backend, rng, case):
    cell, ra, gb, rs, act, ract = case
    B, T, C, H = 3, 6, 4, 5
    p = make_case(rng, cell, ra, B, T, C, H)
    up = upstream_grads(rng, cell, B, T, H, rs)
    _, grads = kernel_grads(cell, p, up, act, ract, gb, rs, ra, backend)
    _, want = ref_grads(cell, p, up, act, ract, gb, rs, ra)
    for name in want:
        check_tensor(f"{backend} {_fd_id(case)} {name}", grads[name], want[name], *TOL[np.float64])


@pytest.mark.parametrize("cell,ra", CELL_VARIANTS, ids=CELL_IDS)
def test_numba_training_kernels_do_not_allocate(rng, cell, ra):
    """NRT counts one allocation per array argument (the meminfo that wraps a NumPy
    array on entry); anything above that is an array the kernel allocated."""
    from numba.core.runtime import _nrt_python

    p = make_case(rng, cell, ra, 3, 4, 5, 2)
    up = upstream_grads(rng, cell, 3, 4, 2, 1)
    extra = {}

    def counting_call(fn, *args):
        fn(*args)  # compile / load from cache first
        n_arrays = sum(isinstance(a, np.ndarray) for a in args)
        before = rtsys.get_allocation_stats().alloc
        fn(*args)
        extra[fn.__name__] = rtsys.get_allocation_stats().alloc - before - n_arrays

    _nrt_python.memsys_enable_stats()
    try:
        kernel_grads(cell, p, up, "tanh", "sigmoid", 0, 1, ra, call=counting_call)
    finally:
        _nrt_python.memsys_disable_stats()
    assert extra and all(v == 0 for v in extra.values()), extra


def test_training_passes_dispatch():
    if not kernels.cython_available():
        pytest.fail(f"Cython kernels are not built: {kernels.CYTHON_IMPORT_ERROR}")
    kernels._numba_table()
    for cell in K_OF:
        for pass_ in ("forward_train", "backward"):
            assert kernels.get_kernel(cell, pass_, "numba") is kernels._NUMBA[(cell, pass_)]
            assert kernels.get_kernel(cell, pass_, "cython") is kernels._CYTHON[(cell, pass_)]
            # auto runs Cython where it is built, for training as for inference
            for B in (1, 64):
                assert kernels.get_kernel(cell, pass_, "auto", B) is kernels._CYTHON[(cell, pass_)]
    with pytest.raises(ValueError, match="pass"):
        kernels.get_kernel("lstm", "backwards", "numba")


def test_training_passes_dispatch_without_a_build(monkeypatch):
    """A source tree without a build: auto falls back to Numba, cython raises."""
    monkeypatch.setattr(kernels, "_CYTHON", {})
    kernels._numba_table()
    for cell in K_OF:
        assert kernels.get_kernel(cell, "backward", "auto") is kernels._NUMBA[(cell, "backward")]
        with pytest.raises(RuntimeError, match=r"set_kernels\('numba'\)"):
            kernels.get_kernel(cell, "backward", "cython")


# ----------------------------------------------------------------------------
# Cython against Numba: two implementations of one contract, every buffer

def _require_cython():
    if not kernels.cython_available():
        pytest.fail(f"Cython kernels are not built: {kernels.CYTHON_IMPORT_ERROR}")


def _apply_grad_points(rng, dtype):
    """Random points, every kink of every activation, +-0, +-inf and NaN."""
    v = np.concatenate([rng.uniform(-8.0, 8.0, 300), KINKS, -KINKS, [-0.0, 1e-30, -1e-30],
                        [30.0, -30.0, 100.0, -100.0, np.inf, -np.inf, np.nan]])
    return v.astype(dtype)


@njit
def _apply_all(code, pre, out):
    for n in range(pre.shape[0]):
        out[n] = _activations.apply(code, pre[n])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cython_apply_grad_matches_numba_and_reference(rng, dtype):
    """_gates.pxd's apply_grad (through apply_grad_block, as the kernels call it) is
    _activations.apply_grad: the same value on each side of every kink, at the
    kinks, and for inf and NaN."""
    _require_cython()
    from rnnengine.kernels import _cy_dense

    v = _apply_grad_points(rng, dtype)
    finite = np.abs(v[:300].astype(np.float64) - KINKS[:, None]).min(axis=0) > 1e-3
    tol = 1e-6 if dtype == np.float32 else 1e-14
    codes = {}
    for name, code in _activations.ELEMENTWISE_CODES.items():
        codes.setdefault(code, name)
    for code, name in sorted(codes.items()):
        post = np.empty_like(v)
        _apply_all(code, v, post)  # both sides get the same post
        got = np.empty_like(v)
        _cy_dense.activation_grad(got, v, post, code)
        want = np.empty_like(v)
        _apply_grad_all(code, v, want)
        label = f"apply_grad({name}) {np.dtype(dtype).name}"
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{label}: NaN positions")
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=tol, atol=tol, err_msg=f"{label} vs numba")
        ref = reference.ACTIVATION_GRADS[name](v[:300][finite].astype(np.float64))
        check_tensor(f"{label} vs reference", got[:300][finite], ref, tol, tol)


def _compare_backends(cell, ra, B, T, C, H, dtype, act, ract, gb, rs, rng, label, scale=1.0, mask=None, zofm=0):
    p = make_case(rng, cell, ra, B, T, C, H, dtype, scale)
    up = upstream_grads(rng, cell, B, T, H, rs, dtype)
    saved_n, saved_c = {}, {}
    masking = dict(mask=mask, zofm=zofm)
    outs_n, grads_n = kernel_grads(cell, p, up, act, ract, gb, rs, ra, "numba", saved=saved_n, **masking)
    outs_c, grads_c = kernel_grads(cell, p, up, act, ract, gb, rs, ra, "cython", saved=saved_c, **masking)
    rtol, atol = CROSS_TOL[dtype]
    for name, g in grads_n.items():  # a meaningful case: nothing overflowed
        assert np.isfinite(g).all(), f"{label}: numba {name} is not finite, rescale the case"
    for name, g, w in zip(("y", "h", "c"), outs_c, outs_n):
        check_tensor(f"{label} forward_train {name}", g, w, rtol, atol)
    assert set(saved_c) == set(saved_n)
    for name in saved_n:
        check_tensor(f"{label} saved {name}", saved_c[name], saved_n[name], rtol, atol)
    assert set(grads_c) == set(grads_n)
    for name in grads_n:
        assert grads_c[name].dtype == dtype, name
        check_tensor(f"{label} {name}", grads_c[name], grads_n[name], rtol, atol)


# Cython against Numba, relative to each tensor's scale (measured: float64 within
# 3e-14; float32 within a few 1e-7: the float32 gate blocks differ by ULPs, Numba's
# scalar libm tanh against Cython's vectorized rational one).
CROSS_TOL = {np.float32: (1e-5, 1e-5), np.float64: (1e-12, 1e-12)}
CROSS_ACTS = [("tanh", "sigmoid"), ("gelu", "hard_sigmoid"), ("softsign", "swish")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,ra", CELL_VARIANTS, ids=CELL_IDS)
@pytest.mark.parametrize("B", [1, 7])
@pytest.mark.parametrize("gb,rs", FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("act,ract", CROSS_ACTS, ids=["-".join(a) for a in CROSS_ACTS])
def test_cython_training_kernels_match_numba(rng, dtype, cell, ra, B, gb, rs, act, ract):
    """Every buffer the contract defines (outputs, final states, saved buffers,
    gradients) from the Cython training kernels against the Numba ones."""
    _require_cython()
    label = f"cython vs numba {cell} ra={ra} B={B} gb={gb} rs={rs} {act}/{ract} {np.dtype(dtype).name}"
    _compare_backends(cell, ra, B, 5, 4, 6, dtype, act, ract, gb, rs, rng, label)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,ra", CELL_VARIANTS, ids=CELL_IDS)
@pytest.mark.parametrize("B", [1, 7])
@pytest.mark.parametrize("gb,rs", FLAGS, ids=FLAG_IDS)
def test_cython_forward_train_equals_cython_forward(rng, dtype, cell, ra, B, gb, rs):
    """The contract's "forward_train computes exactly what forward does", bit for bit
    in the Cython backend (the same row code and gate blocks, float32 included)."""
    from tests.kernels.test_kernels import run_kernel

    _require_cython()
    p = make_case(rng, cell, ra, B, 6, 4, 5, dtype)
    up = upstream_grads(rng, cell, B, 6, 5, rs, dtype)
    for act, ract in (("tanh", "sigmoid"), ("gelu", "hard_sigmoid")):
        train_outs, _ = kernel_grads(cell, p, up, act, ract, gb, rs, ra, "cython")
        outs = run_kernel(cell, "cython", p["x"], p["h0"], p["c0"], p["kernel"], p["recurrent_kernel"],
                          p["bias"], act, ract, gb, rs, ra)
        for name, a, b in zip(("y", "h", "c"), train_outs, outs):
            np.testing.assert_array_equal(a, b, err_msg=f"{cell} ra={ra} {act}/{ract} {name}")


_ACT_NAMES = sorted({code: name for name, code in _activations.ELEMENTWISE_CODES.items()}.values())


_SLOTS = [(cell, ra, slot) for (cell, ra) in CELL_VARIANTS
          for slot in ("activation", "recurrent_activation")
          if not (cell == "simple_rnn" and slot == "recurrent_activation")]


@pytest.mark.parametrize("cell,ra,slot", _SLOTS,
                         ids=[f"{CELL_IDS[CELL_VARIANTS.index((c, r))]}-{s}" for c, r, s in _SLOTS])
@pytest.mark.parametrize("name", _ACT_NAMES)
def test_cython_training_kernels_match_numba_every_activation(rng, cell, ra, slot, name):
    """Every activation code in each slot, through both training passes (B=1 and
    B>4, float32 and float64)."""
    _require_cython()
    act, ract = (name, "sigmoid") if slot == "activation" else ("tanh", name)
    for dtype in (np.float32, np.float64):
        for B in (1, 6):
            label = f"cython vs numba {cell} ra={ra} B={B} {act}/{ract} {np.dtype(dtype).name}"
            # weights scaled down: exponential, relu and the like must not overflow
            _compare_backends(cell, ra, B, 4, 3, 5, dtype, act, ract, 1, 1, rng, label, scale=0.4)


@pytest.mark.parametrize("cell,ra", CELL_VARIANTS, ids=CELL_IDS)
@pytest.mark.parametrize("deterministic", [False, True], ids=["default", "deterministic"])
def test_cython_training_batch_split_across_threads_equals_one_thread(split_small_calls, rng, cell, ra,
                                                                       deterministic):
    """A large call splits its batch into per-thread row blocks, and the weight
    gradients into per-thread column blocks (Cython): the forward's numbers exactly,
    the gradients to float32 rounding, as one thread; in deterministic mode the
    same bits (row-invariant forward products, and a one-thread backward)."""
    import rnnengine

    _require_cython()
    B, T, C, H = 61, 20, 16, 48  # odd B: uneven blocks; large enough to split
    p = make_case(rng, cell, ra, B, T, C, H, np.float32)
    up = upstream_grads(rng, cell, B, T, H, 1, np.float32)
    previous = rnnengine.config.set_num_threads(1)
    try:
        with rnnengine.deterministic(deterministic):
            outs_1, grads_1 = kernel_grads(cell, p, up, "tanh", "sigmoid", 1, 1, ra, "cython")
            rnnengine.config.set_num_threads(3)
            outs_3, grads_3 = kernel_grads(cell, p, up, "tanh", "sigmoid", 1, 1, ra, "cython")
    finally:
        rnnengine.config.set_num_threads(previous)
    for a, b in zip(outs_1, outs_3):
        if deterministic:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for name in grads_1:
        if deterministic:
            np.testing.assert_array_equal(grads_3[name], grads_1[name], err_msg=name)
            continue
        # The same operations, but BLAS calls of other sizes (per-step products
        # of nb rows instead of B, weight-gradient GEMMs over narrower column
        # blocks), for which OpenBLAS may pick kernels that sum in another
        # order: float32 rounding, measured within 1e-6 of each tensor's scale.
        check_tensor(f"{cell} ra={ra} 3 threads vs 1 {name}", grads_3[name], grads_1[name], 1e-5, 1e-5)


# ----------------------------------------------------------------------------
# Against TensorFlow's GradientTape on real Keras layers

TF_CASES = [
    # (cell, reset_after, go_backwards, return_sequences, activation, recurrent_activation)
    ("simple_rnn", True, 0, 1, "tanh", "sigmoid"),
    ("simple_rnn", True, 1, 0, "softsign", "sigmoid"),
    ("lstm", True, 0, 1, "tanh", "sigmoid"),
    ("lstm", True, 1, 0, "mish", "hard_sigmoid"),  # not gelu: TF's float64 erf is off by ~5e-9
    ("gru", True, 0, 0, "tanh", "sigmoid"),
    ("gru", True, 1, 1, "elu", "swish"),
    ("gru", False, 0, 1, "tanh", "sigmoid"),
    ("gru", False, 1, 0, "softplus", "hard_sigmoid"),
]
KERAS_CLASS = {"simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}


def keras_grads(cell, p, up, act, ract, gb, rs, ra):
    """Gradients of sum(y*dy) + sum(h_n*dh_n) [+ sum(c_n*dc_n)] from GradientTape on a
    Keras layer built in the inputs' dtype and called directly (``predict`` would
    cast to float32)."""
    from tests.keras_oracle import keras

    import tensorflow as tf

    k = keras()
    dtype = np.dtype(p["x"].dtype).name
    kwargs = dict(units=p["h0"].shape[1], activation=act, go_backwards=bool(gb),
                  return_sequences=bool(rs), return_state=True, dtype=dtype)
    if cell != "simple_rnn":
        kwargs["recurrent_activation"] = ract
    if cell == "gru":
        kwargs["reset_after"] = bool(ra)
    layer = getattr(k.layers, KERAS_CLASS[cell])(**kwargs)
    layer.build(p["x"].shape)
    layer.set_weights([p["kernel"], p["recurrent_kernel"], p["bias"]])
    names = ["x", "h0"] + (["c0"] if cell == "lstm" else [])
    inputs = {n: tf.constant(p[n]) for n in names}
    ups = [up["dy"], up["dh_n"]] + ([up["dc_n"]] if cell == "lstm" else [])
    with tf.GradientTape() as tape:
        tape.watch(list(inputs.values()))
        states = [inputs[n] for n in names[1:]]
        outs = layer(inputs["x"], initial_state=states)
        loss = tf.add_n([tf.reduce_sum(o * u) for o, u in zip(outs, ups)])
    weights = {w.path.split("/")[-1]: w for w in layer.trainable_weights}
    assert sorted(weights) == ["bias", "kernel", "recurrent_kernel"], sorted(weights)
    sources = [inputs[n] for n in names] + [weights[n] for n in ("kernel", "recurrent_kernel", "bias")]
    got = tape.gradient(loss, sources)
    grad_names = ["d" + n for n in names] + ["dkernel", "drecurrent_kernel", "dbias"]
    return [np.asarray(o) for o in outs], {n: np.asarray(g) for n, g in zip(grad_names, got)}


# Against TF: float64 to ~1e-9, float32 to ~1e-5 of each tensor's scale (measured:
# 7e-16 and 4e-7).
TF_TOL = {np.float32: (1e-5, 1e-5), np.float64: (1e-9, 1e-10)}


def _tf_id(case):
    return _fd_id(case)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", TF_CASES, ids=[_tf_id(c) for c in TF_CASES])
def test_gradients_match_tensorflow(backend, rng, case, dtype):
    cell, ra, gb, rs, act, ract = case
    B, T, C, H = 3, 5, 4, 6
    p = make_case(rng, cell, ra, B, T, C, H, dtype)
    up = upstream_grads(rng, cell, B, T, H, rs, dtype)
    k_outs, want = keras_grads(cell, p, up, act, ract, gb, rs, ra)
    rtol, atol = TF_TOL[dtype]
    label = f"{_tf_id(case)} {np.dtype(dtype).name}"
    outs, got = kernel_grads(cell, p, up, act, ract, gb, rs, ra, backend)
    for name, g, w in zip(("y", "h", "c"), outs, k_outs):
        check_tensor(f"{label} {backend} forward_train {name} vs keras", g, w, rtol, atol)
    for name in want:
        check_tensor(f"{label} {backend} {name} vs tf", got[name], want[name], rtol, atol)
    if dtype == np.float64:
        _, ref = ref_grads(cell, p, up, act, ract, gb, rs, ra)
        for name in want:
            check_tensor(f"{label} reference {name} vs tf", ref[name], want[name], rtol, atol)


# ----------------------------------------------------------------------------
# Keras's mask in the training passes (keep, zero_output_for_mask)

# Every masking pattern in one batch: leading and inner masked steps, trailing
# padding, a row with no valid step, a full row.
FD_MASK = np.array([[0, 1, 1, 0, 1],
                    [1, 1, 0, 0, 0],
                    [0, 0, 0, 0, 0],
                    [1, 1, 1, 1, 1]], bool)
MASK_FD_CASES = [(cell, ra, gb, rs, zofm) for cell, ra in CELL_VARIANTS for gb, rs in FLAGS for zofm in (0, 1)]


def _mask_id(case):
    cell, ra, gb, rs, zofm = case
    return f"{CELL_IDS[CELL_VARIANTS.index((cell, ra))]}-{FLAG_IDS[2 * gb + rs]}-zofm{zofm}"


@pytest.mark.parametrize("case", MASK_FD_CASES, ids=[_mask_id(c) for c in MASK_FD_CASES])
def test_reference_masked_backward_matches_finite_differences(rng, case):
    """The reference backward with a mask is the gradient of the reference
    masked forward (float64 central differences), which is Keras's masked
    recurrence (reference.masked_forward, checked below)."""
    cell, ra, gb, rs, zofm = case
    B, T, C, H = 4, 5, 2, 2
    p = make_case(rng, cell, ra, B, T, C, H)
    up = upstream_grads(rng, cell, B, T, H, rs)
    ups = [up["dy"], up["dh_n"]] + ([up["dc_n"]] if cell == "lstm" else [])

    def loss(q):
        outs = ref_forward_train(cell, q, "tanh", "sigmoid", gb, rs, ra, FD_MASK, zofm)[:-1]
        return sum(float((o * u).sum()) for o, u in zip(outs, ups))

    outs, grads = ref_grads(cell, p, up, "tanh", "sigmoid", gb, rs, ra, FD_MASK, zofm)
    from tests.kernels.test_kernels import run_reference

    want = run_reference(cell, p["x"], p["h0"], p["c0"], p["kernel"], p["recurrent_kernel"], p["bias"], "tanh",
                         "sigmoid", gb, rs, ra, FD_MASK, bool(zofm))
    for name, g, w in zip(("y", "h", "c"), outs, want):
        np.testing.assert_allclose(g, w, rtol=1e-14, atol=1e-14, err_msg=f"{_mask_id(case)} forward {name}")
    names = ["x", "h0"] + (["c0"] if cell == "lstm" else []) + ["kernel", "recurrent_kernel", "bias"]
    eps = 1e-6
    for name in names:
        numeric = np.zeros(p[name].shape)
        for idx in np.ndindex(p[name].shape):
            q = dict(p)
            for sign in (1.0, -1.0):
                w = p[name].copy()
                w[idx] += sign * eps
                q[name] = w
                numeric[idx] += sign * loss(q) / (2 * eps)
        check_tensor(f"{_mask_id(case)} d{name}", grads["d" + name], numeric, 1e-6, 1e-7)
    # the row with no valid step: no gradient reaches x or the weights through it
    assert not grads["dx"][2].any()
    assert not grads["dx"][~FD_MASK].any()


def _train_masks(rng, B, T):
    from tests.kernels.test_kernels import _masks

    masks = _masks(rng, B, T)
    masks["ones"] = np.ones((B, T), bool)
    masks["none"] = np.zeros((B, T), bool)
    return masks


MASK_TRAIN_SHAPES = [(1, 9, 3, 4), (4, 7, 5, 3), (9, 5, 3, 6)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,ra", CELL_VARIANTS, ids=CELL_IDS)
@pytest.mark.parametrize("shape", MASK_TRAIN_SHAPES, ids=lambda s: "B{}T{}C{}H{}".format(*s))
@pytest.mark.parametrize("gb,rs", FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("zofm", [0, 1], ids=["carry", "zero"])
def test_masked_training_kernels_match_reference(backend, rng, dtype, cell, ra, shape, gb, rs, zofm):
    """forward_train and backward with keep: outputs, final states and every
    gradient against the masked reference, for random holes, trailing and
    leading padding, all-masked rows, all-ones and all-zeros masks."""
    B, T, C, H = shape
    p = make_case(rng, cell, ra, B, T, C, H, dtype)
    up = upstream_grads(rng, cell, B, T, H, rs, dtype)
    rtol, atol = TOL[dtype]
    for kind, mask in _train_masks(rng, B, T).items():
        label = (f"{backend} {cell} ra={ra} gb={gb} rs={rs} zofm={zofm} {kind} {np.dtype(dtype).name} "
                 f"B{B}T{T}C{C}H{H}")
        outs, grads = kernel_grads(cell, p, up, "tanh", "sigmoid", gb, rs, ra, backend, mask=mask, zofm=zofm)
        want_outs, want = ref_grads(cell, p, up, "tanh", "sigmoid", gb, rs, ra, mask, zofm)
        for name, g, w in zip(("y", "h", "c"), outs, want_outs):
            check_tensor(f"{label} forward_train {name}", g, w, rtol, atol)
        for name in want:
            assert grads[name].dtype == dtype, name
            check_tensor(f"{label} {name}", grads[name], want[name], rtol, atol)
        assert not grads["dx"][~mask].any(), f"{label}: dx at a masked step"


@pytest.mark.parametrize("cell,ra", CELL_VARIANTS, ids=CELL_IDS)
@pytest.mark.parametrize("gb,rs", FLAGS, ids=FLAG_IDS)
def test_masked_forward_train_equals_masked_forward(backend, rng, cell, ra, gb, rs):
    """forward_train with keep gives what forward with keep gives."""
    from tests.kernels.test_kernels import run_kernel

    B, T, C, H = 5, 8, 3, 4
    p = make_case(rng, cell, ra, B, T, C, H, np.float64)
    up = upstream_grads(rng, cell, B, T, H, rs)
    for zofm in (0, 1):
        for kind, mask in _train_masks(rng, B, T).items():
            outs, _ = kernel_grads(cell, p, up, "tanh", "sigmoid", gb, rs, ra, backend, mask=mask, zofm=zofm)
            want = run_kernel(cell, backend, p["x"], p["h0"], p["c0"], p["kernel"], p["recurrent_kernel"],
                              p["bias"], "tanh", "sigmoid", gb, rs, ra, mask, bool(zofm))
            for name, a, b in zip(("y", "h", "c"), outs, want):
                np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13, err_msg=f"{cell} {kind} zofm={zofm} {name}")


def test_all_ones_mask_trains_as_no_mask(backend, rng):
    """An all-ones keep is the unmasked training pass, to rounding."""
    for cell, ra in CELL_VARIANTS:
        B, T, C, H = 6, 7, 3, 4
        p = make_case(rng, cell, ra, B, T, C, H)
        for gb, rs in FLAGS:
            up = upstream_grads(rng, cell, B, T, H, rs)
            outs_m, grads_m = kernel_grads(cell, p, up, "tanh", "sigmoid", gb, rs, ra, backend,
                                           mask=np.ones((B, T), bool))
            outs, grads = kernel_grads(cell, p, up, "tanh", "sigmoid", gb, rs, ra, backend)
            for a, b in zip(outs_m, outs):
                np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
            for name in grads:
                check_tensor(f"{cell} gb={gb} rs={rs} {name}", grads_m[name], grads[name], 1e-12, 1e-12)


@pytest.mark.parametrize("cell,ra", CELL_VARIANTS, ids=CELL_IDS)
def test_numba_masked_training_kernels_do_not_allocate(rng, cell, ra):
    from numba.core.runtime import _nrt_python

    p = make_case(rng, cell, ra, 3, 4, 5, 2)
    extra = {}

    def counting_call(fn, *args):
        fn(*args)
        n_arrays = sum(isinstance(a, np.ndarray) for a in args)
        before = rtsys.get_allocation_stats().alloc
        fn(*args)
        extra[fn.__name__] = rtsys.get_allocation_stats().alloc - before - n_arrays

    mask = np.array([[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]], bool)
    _nrt_python.memsys_enable_stats()
    try:
        for rs in (0, 1):
            up = upstream_grads(rng, cell, 3, 4, 2, rs)
            kernel_grads(cell, p, up, "tanh", "sigmoid", 1, rs, ra, call=counting_call, mask=mask, zofm=rs)
    finally:
        _nrt_python.memsys_disable_stats()
    assert extra and all(v == 0 for v in extra.values()), extra


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,ra", CELL_VARIANTS, ids=CELL_IDS)
@pytest.mark.parametrize("B", [1, 7])
@pytest.mark.parametrize("gb,rs", FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("zofm", [0, 1], ids=["carry", "zero"])
def test_cython_masked_training_kernels_match_numba(rng, dtype, cell, ra, B, gb, rs, zofm):
    """Every buffer of the masked training passes, Cython against Numba."""
    _require_cython()
    for kind, mask in _train_masks(rng, B, 6).items():
        label = (f"cython vs numba masked {kind} {cell} ra={ra} B={B} gb={gb} rs={rs} zofm={zofm} "
                 f"{np.dtype(dtype).name}")
        _compare_backends(cell, ra, B, 6, 4, 5, dtype, "tanh", "sigmoid", gb, rs, rng, label, mask=mask,
                          zofm=zofm)


@pytest.mark.parametrize("cell,ra", CELL_VARIANTS, ids=CELL_IDS)
def test_cython_masked_training_batch_split_across_threads(split_small_calls, rng, cell, ra):
    """A masked call split into per-thread row blocks (each block reads its rows
    of keep) gives what one thread gives, to float32 rounding."""
    import rnnengine

    _require_cython()
    B, T, C, H = 61, 20, 16, 48
    p = make_case(rng, cell, ra, B, T, C, H, np.float32)
    up = upstream_grads(rng, cell, B, T, H, 1, np.float32)
    mask = _train_masks(rng, B, T)["mixed"]
    previous = rnnengine.config.set_num_threads(1)
    try:
        outs_1, grads_1 = kernel_grads(cell, p, up, "tanh", "sigmoid", 1, 1, ra, "cython", mask=mask)
        rnnengine.config.set_num_threads(3)
        outs_3, grads_3 = kernel_grads(cell, p, up, "tanh", "sigmoid", 1, 1, ra, "cython", mask=mask)
    finally:
        rnnengine.config.set_num_threads(previous)
    for a, b in zip(outs_1, outs_3):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for name in grads_1:
        check_tensor(f"{cell} ra={ra} masked 3 threads vs 1 {name}", grads_3[name], grads_1[name], 1e-5, 1e-5)
