"""The recurrent-dropout training kernels (``*_forward_train_rdrop`` /
``*_backward_rdrop``) and the activations' backward (Dense, Activation), on
both backends: Cython against Numba buffer by buffer (float32 and float64, one
thread and split over threads), and with all-ones masks against the NumPy
reference of the plain training passes. The Keras oracle for recurrent
dropout with real masks is tests/training/test_recurrent_dropout.py (both
backends, GradientTape and float64 finite differences).
"""
import numpy as np
import pytest

from rnnengine import kernels
from rnnengine.kernels import _activations, contract, reference
from tests.kernels.test_backward import (CELL_IDS, CELL_VARIANTS, FLAG_IDS, FLAGS, K_OF, check_tensor,
                                         make_case, ref_grads, upstream_grads)

FWD, BWD = "forward_train_rdrop", "backward_rdrop"
SAVED = {"simple_rnn": ("h_tm1_seq", "preact", "gates"),
         "lstm": ("h_tm1_seq", "c_tm1_seq", "preact", "gates"),
         "gru": ("h_tm1_seq", "preact", "gates", "hh_rec_seq")}


def _require_cython():
    if not kernels.cython_available():
        pytest.fail(f"Cython kernels are not built: {kernels.CYTHON_IMPORT_ERROR}")


def make_masks(rng, cell, B, C, H, dtype, rate_x=0.3, rate_h=0.4):
    """Per-gate inverted-dropout masks dp (K, B, C) and rdp (K, B, H); rate 0: ones."""
    K = K_OF[cell]

    def one(shape, rate):
        if rate == 0:
            return np.ones(shape, dtype)
        return ((rng.random(shape) >= rate) / (1.0 - rate)).astype(dtype)

    dp, rdp = one((K, B, C), rate_x), one((K, B, H), rate_h)
    dp.setflags(write=False)  # the kernels must take read-only masks
    rdp.setflags(write=False)
    return dp, rdp


def rdrop_grads(cell, p, up, dp, rdp, act, ract, gb, rs, ra, backend):
    """Both rdrop passes through the contract (bound by name, checked), with
    fresh buffers: outputs, saved buffers and scratch start as NaN (the kernels
    must not read them before writing), accumulators at 0.25 (they must add).
    Returns (outputs, saved buffers, {grad name: array})."""
    x = p["x"]
    dtype = x.dtype
    B, T, C = x.shape
    H = p["h0"].shape[1]
    K = K_OF[cell]
    G = K * H
    dims = {"B": B, "T": T, "C": C, "H": H, "K": K, "G": G, "BT": B * T, "Ty": T if rs else 1,
            "W": max(C, H) * G}
    kernel, recurrent_kernel, bias = p["kernel"], p["recurrent_kernel"], p["bias"]
    kernel_g = np.ascontiguousarray(kernel.reshape(C, K, H).transpose(1, 0, 2))
    recurrent_kernel_g = np.ascontiguousarray(recurrent_kernel.reshape(H, K, H).transpose(1, 0, 2))
    for w in (kernel_g, recurrent_kernel_g):
        w.setflags(write=False)
    named = dict(x=x, kernel_g=kernel_g, recurrent_kernel_g=recurrent_kernel_g, dp=dp, rdp=rdp,
                 B=B, T=T, C=C, H=H, activation=_activations.ELEMENTWISE_CODES[act],
                 recurrent_activation=_activations.ELEMENTWISE_CODES[ract], go_backwards=int(gb),
                 return_sequences=int(rs), reset_after=int(ra), h=p["h0"].copy(), c=p["c0"].copy())
    if cell == "gru":
        if ra:
            named["input_bias"], named["recurrent_bias"] = np.ascontiguousarray(bias[0]), np.ascontiguousarray(bias[1])
        else:
            named["input_bias"], named["recurrent_bias"] = bias, np.zeros(G, dtype)
    else:
        named["bias"] = bias
    named.update(contract.allocate(cell, FWD, dims, dtype, roles=("out", "saved", "scratch"), fill=np.nan))

    def call(pass_):
        args = contract.bind(cell, pass_, **{n: named[n] for n in contract.NAMES[(cell, pass_)]})
        contract.check(cell, pass_, args)
        kernels.get_kernel(cell, pass_, backend)(*args)

    call(FWD)
    outs = [named["y_out"][:, 0] if not rs else named["y_out"], named["h"]] + \
        ([named["c"]] if cell == "lstm" else [])
    outs = [o.copy() for o in outs]
    saved = {n: named[n].copy() for n in SAVED[cell]}
    named.update(contract.allocate(cell, BWD, dims, dtype, roles=("out", "scratch"), fill=np.nan))
    named.update(contract.allocate(cell, BWD, dims, dtype, roles=("acc",), fill=0.25))
    named.update(dy=np.ascontiguousarray(up["dy"].reshape(B, T if rs else 1, H)), dh_n=up["dh_n"])
    if cell == "lstm":
        named["dc_n"] = up["dc_n"]
    call(BWD)
    quarter = dtype.type(0.25)
    grads = {n: named[n].copy() for n in ("dx", "dh0") + (("dc0",) if cell == "lstm" else ())}
    grads["dkernel"] = named["dkernel"] - quarter
    grads["drecurrent_kernel"] = named["drecurrent_kernel"] - quarter
    if cell != "gru":
        grads["dbias"] = named["dbias"] - quarter
    elif ra:
        grads["dbias"] = np.stack([named["dinput_bias"], named["drecurrent_bias"]]) - quarter
    else:
        assert (named["drecurrent_bias"] == quarter).all(), "drecurrent_bias touched without reset_after"
        grads["dbias"] = named["dinput_bias"] - quarter
    for name, v in saved.items():  # the backward reads the saved buffers unchanged
        np.testing.assert_array_equal(named[name], v, err_msg=f"backward wrote {name}")
    return outs, saved, grads


def test_every_rdrop_pass_runs_on_both_backends():
    _require_cython()
    kernels._numba_table()
    for cell in K_OF:
        for pass_ in (FWD, BWD):
            assert kernels.get_kernel(cell, pass_, "numba") is kernels._NUMBA[(cell, pass_)]
            assert kernels.get_kernel(cell, pass_, "cython") is kernels._CYTHON[(cell, pass_)]
            for B in (1, 64):  # auto runs Cython where it is built, as for every other pass
                assert kernels.get_kernel(cell, pass_, "auto", B) is kernels._CYTHON[(cell, pass_)]
    assert kernels.get_kernel("activation", "backward", "cython") is kernels._CYTHON[("activation", "backward")]
    assert kernels.get_kernel("activation", "backward", "auto") is kernels._CYTHON[("activation", "backward")]


# All-ones masks: the rdrop passes compute the plain ones, so the NumPy reference
# of forward_train/backward is their spec (same tolerances as test_backward's).
TOL = {np.float32: (1e-5, 1e-5), np.float64: (1e-11, 1e-12)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,ra", CELL_VARIANTS, ids=CELL_IDS)
@pytest.mark.parametrize("B", [1, 7])
@pytest.mark.parametrize("gb,rs", FLAGS, ids=FLAG_IDS)
def test_rdrop_with_ones_masks_matches_the_plain_reference(backend, rng, dtype, cell, ra, B, gb, rs):
    T, C, H = 5, 4, 6
    p = make_case(rng, cell, ra, B, T, C, H, dtype)
    up = upstream_grads(rng, cell, B, T, H, rs, dtype)
    dp, rdp = make_masks(rng, cell, B, C, H, dtype, 0, 0)
    outs, _, grads = rdrop_grads(cell, p, up, dp, rdp, "tanh", "sigmoid", gb, rs, ra, backend)
    want_outs, want = ref_grads(cell, p, up, "tanh", "sigmoid", gb, rs, ra)
    label = f"{backend} {cell} ra={ra} B={B} gb={gb} rs={rs} {np.dtype(dtype).name} ones masks"
    for name, g, w in zip(("y", "h", "c"), outs, want_outs):
        check_tensor(f"{label} {name}", g, w, *TOL[dtype])
    assert set(grads) == set(want)
    for name in want:
        assert grads[name].dtype == dtype, name
        check_tensor(f"{label} {name}", grads[name], want[name], *TOL[dtype])


# Cython against Numba, relative to each tensor's scale (as test_backward's
# CROSS_TOL: float32 gate blocks differ by ULPs, vectorized against libm).
CROSS_TOL = {np.float32: (1e-5, 1e-5), np.float64: (1e-12, 1e-12)}
CROSS_ACTS = [("tanh", "sigmoid"), ("gelu", "hard_sigmoid"), ("softsign", "swish")]


def _compare(rng, cell, ra, B, T, C, H, dtype, act, ract, gb, rs, label, rates=(0.3, 0.4), scale=1.0):
    p = make_case(rng, cell, ra, B, T, C, H, dtype, scale)
    up = upstream_grads(rng, cell, B, T, H, rs, dtype)
    dp, rdp = make_masks(rng, cell, B, C, H, dtype, *rates)
    outs_n, saved_n, grads_n = rdrop_grads(cell, p, up, dp, rdp, act, ract, gb, rs, ra, "numba")
    outs_c, saved_c, grads_c = rdrop_grads(cell, p, up, dp, rdp, act, ract, gb, rs, ra, "cython")
    rtol, atol = CROSS_TOL[dtype]
    for name, g in grads_n.items():  # a meaningful case: nothing overflowed
        assert np.isfinite(g).all(), f"{label}: numba {name} is not finite, rescale the case"
    for name, g, w in zip(("y", "h", "c"), outs_c, outs_n):
        check_tensor(f"{label} forward_train_rdrop {name}", g, w, rtol, atol)
    for name in saved_n:
        check_tensor(f"{label} saved {name}", saved_c[name], saved_n[name], rtol, atol)
    assert set(grads_c) == set(grads_n)
    for name in grads_n:
        assert grads_c[name].dtype == dtype, name
        check_tensor(f"{label} {name}", grads_c[name], grads_n[name], rtol, atol)
    return grads_c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,ra", CELL_VARIANTS, ids=CELL_IDS)
@pytest.mark.parametrize("B", [1, 7])
@pytest.mark.parametrize("gb,rs", FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("act,ract", CROSS_ACTS, ids=["-".join(a) for a in CROSS_ACTS])
def test_cython_rdrop_kernels_match_numba(rng, dtype, cell, ra, B, gb, rs, act, ract):
    """Every buffer the contract defines (outputs, final states, saved buffers,
    gradients) from the Cython rdrop kernels against the Numba ones, with masks."""
    _require_cython()
    label = f"cython vs numba {cell} ra={ra} B={B} gb={gb} rs={rs} {act}/{ract} {np.dtype(dtype).name}"
    _compare(rng, cell, ra, B, 5, 4, 6, dtype, act, ract, gb, rs, label)


@pytest.mark.parametrize("cell,ra", CELL_VARIANTS, ids=CELL_IDS)
@pytest.mark.parametrize("rates", [(0.0, 0.5), (0.5, 0.0), (0.9, 0.9)], ids=["rdp-only", "dp-only", "heavy"])
def test_cython_rdrop_kernels_match_numba_mask_mixes(rng, cell, ra, rates):
    """Input masks of ones (recurrent dropout alone), recurrent masks of ones,
    and masks that drop almost everything; one T=1 call (the masked sequence's
    step-by-step path)."""
    _require_cython()
    for dtype in (np.float32, np.float64):
        for T in (1, 6):
            label = f"cython vs numba {cell} ra={ra} rates={rates} T={T} {np.dtype(dtype).name}"
            _compare(rng, cell, ra, 5, T, 3, 4, dtype, "tanh", "sigmoid", 1, 1, label, rates)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,ra", CELL_VARIANTS, ids=CELL_IDS)
@pytest.mark.parametrize("deterministic", [False, True], ids=["default", "deterministic"])
def test_cython_rdrop_batch_split_across_threads(split_small_calls, rng, dtype, cell, ra, deterministic):
    """A large call splits its batch into per-thread row blocks (each block's rows
    of every gate's masks) and the weight gradients into per-thread column
    blocks: against Numba, and against one thread (the same bits in
    deterministic mode: row-invariant forward products, a one-thread backward)."""
    import rnnengine

    _require_cython()
    B, T, C, H = 61, 12, 16, 24  # odd B: uneven blocks
    label = f"{cell} ra={ra} {np.dtype(dtype).name} det={deterministic}"
    p = make_case(rng, cell, ra, B, T, C, H, dtype)
    up = upstream_grads(rng, cell, B, T, H, 1, dtype)
    dp, rdp = make_masks(rng, cell, B, C, H, dtype)
    previous = rnnengine.config.set_num_threads(1)
    try:
        with rnnengine.deterministic(deterministic):
            outs_1, saved_1, grads_1 = rdrop_grads(cell, p, up, dp, rdp, "tanh", "sigmoid", 1, 1, ra, "cython")
            rnnengine.config.set_num_threads(3)
            outs_3, saved_3, grads_3 = rdrop_grads(cell, p, up, dp, rdp, "tanh", "sigmoid", 1, 1, ra, "cython")
            outs_n, _, grads_n = rdrop_grads(cell, p, up, dp, rdp, "tanh", "sigmoid", 1, 1, ra, "numba")
    finally:
        rnnengine.config.set_num_threads(previous)
    rtol, atol = CROSS_TOL[dtype]
    for name, a, b, n in zip(("y", "h", "c"), outs_1, outs_3, outs_n):
        check_tensor(f"{label} 3 threads vs numba {name}", b, n, rtol, atol)
        if deterministic:
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            check_tensor(f"{label} 3 threads vs 1 {name}", b, a, rtol, atol)
    for name in saved_1:
        if deterministic:
            np.testing.assert_array_equal(saved_3[name], saved_1[name], err_msg=name)
    for name in grads_1:
        check_tensor(f"{label} 3 threads vs numba {name}", grads_3[name], grads_n[name], rtol, atol)
        if deterministic:
            np.testing.assert_array_equal(grads_3[name], grads_1[name], err_msg=name)
        else:
            check_tensor(f"{label} 3 threads vs 1 {name}", grads_3[name], grads_1[name], rtol, atol)


_ACT_NAMES = sorted({code: name for name, code in _activations.ELEMENTWISE_CODES.items()}.values())


@pytest.mark.parametrize("name", _ACT_NAMES)
def test_cython_rdrop_kernels_match_numba_every_activation(rng, name):
    """Every activation code in each slot, through both rdrop passes."""
    _require_cython()
    for cell, ra in CELL_VARIANTS:
        slots = ("activation",) if cell == "simple_rnn" else ("activation", "recurrent_activation")
        for slot in slots:
            act, ract = (name, "sigmoid") if slot == "activation" else ("tanh", name)
            for dtype in (np.float32, np.float64):
                label = f"cython vs numba {cell} ra={ra} {act}/{ract} {np.dtype(dtype).name}"
                # weights scaled down: exponential, relu and the like must not overflow
                _compare(rng, cell, ra, 6, 4, 3, 5, dtype, act, ract, 1, 1, label, scale=0.4)


# ----------------------------------------------------------------------------
# The activations' backward (Dense, Activation): "activation" "backward"

_ALL_CODES = sorted({**{code: n for n, code in _activations.ELEMENTWISE_CODES.items()},
                     **{code: n for n, code in _activations.ROWWISE_CODES.items()}}.items())


def _activation_case(rng, code, dtype, N=7, F=5):
    z = rng.uniform(-4.0, 4.0, (N, F)).astype(dtype)
    y = z.copy()
    kernels.get_kernel("activation", "forward", "numba")(y, code)
    dy = rng.standard_normal((N, F)).astype(dtype)
    return z, y, dy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("code,name", _ALL_CODES, ids=[n for _, n in _ALL_CODES])
def test_activation_backward_matches_reference_on_both_backends(backend, rng, dtype, code, name):
    z, y, dy = _activation_case(rng, code, dtype)
    # the reference Dense with an identity kernel and no bias: its dx is dz
    want, _, _ = reference.dense_backward(dy.astype(np.float64), z.astype(np.float64), np.eye(z.shape[1]),
                                          None, name)
    got = np.full_like(z, np.nan)
    args = contract.bind("activation", "backward", dz_out=got, dy=dy, z=z, y=y, activation=code)
    contract.check("activation", "backward", args)
    kernels.get_kernel("activation", "backward", backend)(*args)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    check_tensor(f"{backend} activation_backward {name} {np.dtype(dtype).name}", got, want, tol, tol)
    # dz_out may alias dy
    inplace = dy.copy()
    kernels.get_kernel("activation", "backward", backend)(inplace, inplace, z, y, code)
    np.testing.assert_array_equal(inplace, got, err_msg=f"{backend} {name}: dz_out aliasing dy")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cython_activation_backward_matches_numba(rng, dtype):
    """Every code, rows longer than one derivative block (src/_dense.pyx works
    in blocks of 256), against the Numba kernel."""
    _require_cython()
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for code, name in _ALL_CODES:
        z, y, dy = _activation_case(rng, code, dtype, N=9, F=301)
        got, want = np.full_like(z, np.nan), np.full_like(z, np.nan)
        kernels.get_kernel("activation", "backward", "cython")(got, dy, z, y, code)
        kernels.get_kernel("activation", "backward", "numba")(want, dy, z, y, code)
        check_tensor(f"cython vs numba activation_backward {name} {np.dtype(dtype).name}", got, want, tol, tol)
        empty = np.zeros((0, 5), dtype)
        kernels.get_kernel("activation", "backward", "cython")(empty, empty, empty, empty, code)
