"""The kernel contract (kernels/contract.py) is what both backends implement:
each kernel's parameter names, in order, are the contract's; ``bind`` and
``check`` reject what breaks it."""
import inspect

import numpy as np
import pytest

from rnnengine import kernels
from rnnengine.kernels import activation_codes as codes
from rnnengine.kernels import contract


def _parameter_names(fn):
    fn = getattr(fn, "py_func", fn)  # a Numba dispatcher keeps its Python function
    return tuple(inspect.signature(fn).parameters)


@pytest.mark.parametrize("key", sorted(kernels._numba_table()), ids="_".join)
def test_numba_kernels_take_the_contract_arguments(key):
    assert _parameter_names(kernels._numba_table()[key]) == contract.NAMES[key]


@pytest.mark.parametrize("key", sorted(kernels._CYTHON), ids="_".join)
def test_cython_kernels_take_the_contract_arguments(key):
    assert _parameter_names(kernels._CYTHON[key]) == contract.NAMES[key]


def test_every_call_has_a_kernel():
    assert set(kernels._numba_table()) == set(contract.CALLS)
    # Cython: every pass too, recurrent-dropout training and the activations' backward included
    assert set(kernels._CYTHON) == set(contract.CALLS)


def test_bind_names_missing_and_unknown_arguments():
    with pytest.raises(TypeError, match="missing argument 'bias'"):
        contract.bind("dense", "forward", y_out=0, x=0, kernel=0, N=1, C=1, F=1, activation=0, use_bias=0)
    with pytest.raises(TypeError, match=r"unknown arguments \['bogus'\]"):
        contract.bind("dense", "forward", y_out=0, x=0, kernel=0, bias=0, N=1, C=1, F=1, activation=0,
                      use_bias=0, bogus=1)


def _lstm_call(B=2, T=3, C=4, H=5, dtype=np.float32, **over):
    x = np.ones((B, T, C), dtype)
    states = [np.zeros((B, H), dtype), np.zeros((B, H), dtype)]
    weights = (np.zeros((C, 4 * H), dtype), np.zeros((H, 4 * H), dtype), np.zeros(4 * H, dtype))
    args = dict(zip(contract.NAMES[("lstm", "forward")],
                    contract.forward_args("lstm", x, states, weights, codes.TANH, codes.SIGMOID)))
    args.update(over)
    return tuple(args.values())


def test_check_accepts_a_bound_call_and_returns_its_dims():
    dims = contract.check("lstm", "forward", _lstm_call())
    assert (dims["B"], dims["T"], dims["G"], dims["Ty"]) == (2, 3, 20, 1)
    contract.check("lstm", "forward", _lstm_call(keep=np.ones((2, 3), np.uint8)))


@pytest.mark.parametrize("over, message", [
    ({"rec": np.zeros((2, 19), np.float32)}, "rec has shape"),
    ({"h": np.zeros((2, 5))}, "h is float64"),
    ({"x": np.ones((2, 4, 3), np.float32).transpose(0, 2, 1)}, "x must be a C-contiguous"),
    ({"keep": np.ones((2, 4), np.uint8)}, "keep must be uint8"),
    ({"keep": np.ones((2, 3), np.bool_)}, "keep must be uint8"),
    ({"y_out": np.zeros((2, 3, 5), np.float32)}, "y_out has shape"),  # Ty is 1 without return_sequences
])
def test_check_names_the_argument_that_breaks_the_contract(over, message):
    with pytest.raises(ValueError, match=message):
        contract.check("lstm", "forward", _lstm_call(**over))


def test_check_rejects_read_only_outputs():
    h = np.zeros((2, 5), np.float32)
    h.flags.writeable = False
    with pytest.raises(ValueError, match="h must be writeable"):
        contract.check("lstm", "forward", _lstm_call(h=h))


@pytest.mark.parametrize("cell", sorted(contract.GATES))
def test_training_passes_take_the_mask_and_rdrop_passes_do_not(cell):
    """forward_train and backward take Keras's mask as the forward does (keep
    after x, zero_output_for_mask last; the backward's masked scratch dh_rec
    and dcarry); the recurrent-dropout passes take none of it."""
    mask_only = {"keep", "zero_output_for_mask", "dcarry"} | ({"dh_rec"} if cell != "gru" else set())
    for pass_ in ("forward_train", "backward"):
        names = contract.NAMES[(cell, pass_)]
        assert names[names.index("x") + 1] == "keep"
        assert names[-1] == "zero_output_for_mask"
        if pass_ == "backward":
            assert {"dh_rec", "dcarry"} <= set(names)
            assert dict((n, s) for n, _, s in contract.CALLS[(cell, pass_)])["dcarry"] == ("B", "H")
        rdrop = contract.NAMES[(cell, pass_ + "_rdrop")]
        assert not mask_only & set(rdrop)
        plain = [n for n in names if n not in mask_only]
        assert [n for n in rdrop if n in plain] == [n for n in plain if n in rdrop]


def test_check_accepts_a_masked_training_call():
    B, T, C, H = 2, 3, 4, 5
    dims = {"B": B, "T": T, "C": C, "H": H, "K": 4, "G": 4 * H, "BT": B * T, "Ty": T, "W": max(C, H) * 4 * H}
    named = contract.allocate("lstm", "backward", dims, np.float32,
                              roles=("out", "inout", "acc", "saved", "scratch", "in", "weight"))
    named.update(B=B, T=T, C=C, H=H, activation=codes.TANH, recurrent_activation=codes.SIGMOID, go_backwards=0,
                 return_sequences=1, zero_output_for_mask=1, keep=np.ones((B, T), np.uint8))
    args = contract.bind("lstm", "backward", **named)
    assert contract.check("lstm", "backward", args)["Ty"] == T
    named["keep"] = np.ones((B, T + 1), np.uint8)
    with pytest.raises(ValueError, match="keep must be uint8"):
        contract.check("lstm", "backward", contract.bind("lstm", "backward", **named))
