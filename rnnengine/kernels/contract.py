"""Every kernel call by name: argument order, role and shape, written once.

Both backends (Numba ``numba_*.py``, Cython ``src/_*.pyx``) implement these
calls with exactly these parameter names in this order
(``tests/kernels/test_contract.py`` compares them); the layers, the call plans
(``models/plan.py``), the tests and the bench build argument tuples with
``bind`` instead of spelling them out, and ``check`` validates a tuple against
the shapes below (tests, and ``RNNENGINE_CHECK_CALLS=1`` debugging).

An argument is ``(name, role, shape)``:

- role: ``out`` (written), ``inout`` (read, then written: states), ``acc``
  (accumulated with ``+=``), ``saved`` (written by ``forward_train``, read by
  ``backward``), ``scratch`` (contents on entry irrelevant), ``in``,
  ``weight``, ``dim``, ``code`` (an activation code from ``_activations``) or
  ``flag`` (an int 0/1);
- shape: axis sizes in the call's dims: ``B T C H`` as passed, ``G`` the gate
  columns (K*H: K = 1, 4, 3 for SimpleRNN, LSTM, GRU), ``Ty`` (T with
  ``return_sequences``, else 1), ``BT`` (B*T), ``K``, ``W`` (max(C, H) * G);
  Dense: ``N`` rows, ``C`` in, ``F`` out. ``keep`` may also be empty (no mask).

The semantics of each call (what is read, written, in which order) are in
``kernels/__init__.py``; ``reference.py`` is their NumPy spec.
"""
import numpy as np

GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
ARRAY_ROLES = ("out", "inout", "acc", "saved", "scratch", "in", "weight")


def _args(text):
    """'name:role:shape ...' -> ((name, role, shape tuple), ...)."""
    out = []
    for item in text.split():
        name, role, *shape = item.split(":")
        out.append((name, role, tuple(shape[0].split(",")) if shape and shape[0] else ()))
    return tuple(out)


_DIMS = "B:dim T:dim C:dim H:dim"
_RNN_FLAGS = "go_backwards:flag return_sequences:flag"
_CODES = {"simple_rnn": "activation:code", "lstm": "activation:code recurrent_activation:code",
          "gru": "activation:code recurrent_activation:code"}
_TAIL = {cell: f"{_DIMS} {_CODES[cell]} {_RNN_FLAGS}" + (" reset_after:flag" if cell == "gru" else "")
         for cell in GATES}
# The mask of forward, forward_train and backward: keep[b, t] is Keras's mask
# at input time t (1 = the step runs; 0 = the state carries through and the
# output repeats, or is zero with zero_output_for_mask; the backward routes the
# gradients accordingly); an empty keep means no mask.
_MASK_IN = "keep:in:B,T"
_MASK_FLAG = " zero_output_for_mask:flag"

CALLS = {
    ("simple_rnn", "forward"): _args(
        "y_out:out:B,Ty,H h:inout:B,H xproj:scratch:B,T,G rec:scratch:B,G x:in:B,T,C " + _MASK_IN +
        " kernel:weight:C,G recurrent_kernel:weight:H,G bias:weight:G " + _TAIL["simple_rnn"] + _MASK_FLAG),
    ("lstm", "forward"): _args(
        "y_out:out:B,Ty,H h:inout:B,H c:inout:B,H xproj:scratch:B,T,G rec:scratch:B,G x:in:B,T,C " + _MASK_IN +
        " kernel:weight:C,G recurrent_kernel:weight:H,G bias:weight:G " + _TAIL["lstm"] + _MASK_FLAG),
    ("gru", "forward"): _args(
        "y_out:out:B,Ty,H h:inout:B,H xproj:scratch:B,T,G rec:scratch:B,G rec_h:scratch:B,H rh:scratch:B,H "
        "x:in:B,T,C " + _MASK_IN + " kernel:weight:C,G recurrent_kernel:weight:H,G "
        "recurrent_kernel_h:weight:H,H input_bias:weight:G recurrent_bias:weight:G " + _TAIL["gru"] + _MASK_FLAG),
    ("simple_rnn", "forward_train"): _args(
        "y_out:out:B,Ty,H h:inout:B,H h_tm1_seq:saved:B,T,H preact:saved:B,T,G gates:saved:B,T,G "
        "rec:scratch:B,G x:in:B,T,C " + _MASK_IN + " kernel:weight:C,G recurrent_kernel:weight:H,G bias:weight:G "
        + _TAIL["simple_rnn"] + _MASK_FLAG),
    ("lstm", "forward_train"): _args(
        "y_out:out:B,Ty,H h:inout:B,H c:inout:B,H h_tm1_seq:saved:B,T,H c_tm1_seq:saved:B,T,H "
        "preact:saved:B,T,G gates:saved:B,T,G rec:scratch:B,G x:in:B,T,C " + _MASK_IN + " kernel:weight:C,G "
        "recurrent_kernel:weight:H,G bias:weight:G " + _TAIL["lstm"] + _MASK_FLAG),
    ("gru", "forward_train"): _args(
        "y_out:out:B,Ty,H h:inout:B,H h_tm1_seq:saved:B,T,H preact:saved:B,T,G gates:saved:B,T,G "
        "hh_rec_seq:saved:B,T,H rec:scratch:B,G rec_h:scratch:B,H rh:scratch:B,H x:in:B,T,C " + _MASK_IN +
        " kernel:weight:C,G recurrent_kernel:weight:H,G recurrent_kernel_h:weight:H,H input_bias:weight:G "
        "recurrent_bias:weight:G " + _TAIL["gru"] + _MASK_FLAG),
    ("simple_rnn", "backward"): _args(
        "dx:out:B,T,C dh0:out:B,H dkernel:acc:C,G drecurrent_kernel:acc:H,G dbias:acc:G dgates:scratch:B,T,G "
        "dgates_t:scratch:B,G dh_rec:scratch:B,H dcarry:scratch:B,H dw:scratch:W dy:in:B,Ty,H dh_n:in:B,H "
        "h_tm1_seq:saved:B,T,H preact:saved:B,T,G gates:saved:B,T,G x:in:B,T,C " + _MASK_IN +
        " kernel:weight:C,G recurrent_kernel:weight:H,G " + _TAIL["simple_rnn"] + _MASK_FLAG),
    ("lstm", "backward"): _args(
        "dx:out:B,T,C dh0:out:B,H dc0:out:B,H dkernel:acc:C,G drecurrent_kernel:acc:H,G dbias:acc:G "
        "dgates:scratch:B,T,G dgates_t:scratch:B,G dh_rec:scratch:B,H dcarry:scratch:B,H dw:scratch:W "
        "dy:in:B,Ty,H dh_n:in:B,H dc_n:in:B,H h_tm1_seq:saved:B,T,H c_tm1_seq:saved:B,T,H preact:saved:B,T,G "
        "gates:saved:B,T,G x:in:B,T,C " + _MASK_IN + " kernel:weight:C,G recurrent_kernel:weight:H,G "
        + _TAIL["lstm"] + _MASK_FLAG),
    ("gru", "backward"): _args(
        "dx:out:B,T,C dh0:out:B,H dkernel:acc:C,G drecurrent_kernel:acc:H,G dinput_bias:acc:G "
        "drecurrent_bias:acc:G dgates:scratch:B,T,G dhh_rec_seq:scratch:B,T,H dgates_t:scratch:B,G "
        "dh_rec:scratch:B,H dhh_t:scratch:B,H dcarry:scratch:B,H dw:scratch:W dy:in:B,Ty,H dh_n:in:B,H "
        "h_tm1_seq:saved:B,T,H preact:saved:B,T,G gates:saved:B,T,G hh_rec_seq:saved:B,T,H x:in:B,T,C "
        + _MASK_IN + " kernel:weight:C,G recurrent_kernel:weight:H,G recurrent_kernel_h:weight:H,H "
        + _TAIL["gru"] + _MASK_FLAG),
    ("dense", "forward"): _args(
        "y_out:out:N,F x:in:N,C kernel:weight:C,F bias:weight:F N:dim C:dim F:dim activation:code use_bias:flag"),
}

# Recurrent dropout: the plain training passes with per-gate weights and
# masks, without Keras's mask (keep, zero_output_for_mask and the masked
# backward's scratch dh_rec and dcarry; GRU's dh_rec is its own); see
# kernels/__init__.py.
_RDROP_IN = "dp:in:K,B,C rdp:in:K,B,H xm:scratch:BT,C pm:scratch:BT,H hm:scratch:B,H recg:scratch:B,H"


def _rdrop(cell, pass_):
    out = []
    mask_only = ("keep", "zero_output_for_mask", "dcarry") + (("dh_rec",) if cell != "gru" else ())
    for name, role, shape in CALLS[(cell, pass_)]:
        if name in mask_only:
            continue
        if name in ("kernel", "recurrent_kernel"):
            out.append((name + "_g", role, ("K", "C", "H") if name == "kernel" else ("K", "H", "H")))
        elif name == "recurrent_kernel_h":
            continue
        elif name == "B":  # the masks and their scratch go before the dims
            out.extend(_args(_RDROP_IN + (" hseq:scratch:BT,H" if pass_ == "backward" else "")))
            out.append((name, role, shape))
        else:
            out.append((name, role, shape))
    return tuple(out)


for _cell in GATES:
    for _pass in ("forward_train", "backward"):
        CALLS[(_cell, _pass + "_rdrop")] = _rdrop(_cell, _pass)
CALLS[("activation", "forward")] = _args("y:inout activation:code")
# The activations' backward (Dense, Activation): four (N, F) arrays, dz_out may alias dy.
CALLS[("activation", "backward")] = _args("dz_out:out dy:in z:in y:in activation:code")

NAMES = {key: tuple(a[0] for a in args) for key, args in CALLS.items()}


def bind(cell, pass_, **values):
    """The positional tuple for ``cell``'s ``pass_`` kernel from its arguments
    by name; a missing or unknown name raises TypeError."""
    names = NAMES[(cell, pass_)]
    try:
        args = tuple(values[n] for n in names)
    except KeyError as exc:
        raise TypeError(f"{cell}_{pass_}: missing argument {exc.args[0]!r}") from None
    if len(values) != len(names):
        extra = sorted(set(values) - set(names))
        raise TypeError(f"{cell}_{pass_}: unknown arguments {extra}")
    return args


def dims_of(cell, pass_, args):
    """The axis sizes of a bound call (for ``check`` and workspace specs)."""
    named = dict(zip(NAMES[(cell, pass_)], args))
    if cell == "dense":
        return {k: named[k] for k in ("N", "C", "F")}
    if cell == "activation":
        return {}
    B, T, C, H = (int(named[k]) for k in "BTCH")
    K = GATES[cell]
    return {"B": B, "T": T, "C": C, "H": H, "K": K, "G": K * H, "BT": B * T,
            "Ty": T if named["return_sequences"] else 1, "W": max(C, H) * K * H}


def shape_of(shape, dims):
    return tuple(int(a) if a.isdigit() else dims[a] for a in shape)


def check(cell, pass_, args):
    """Raise ValueError naming the first argument of a bound call whose shape,
    dtype or layout breaks the contract; the kernels themselves never check."""
    spec = CALLS[(cell, pass_)]
    if len(args) != len(spec):
        raise ValueError(f"{cell}_{pass_}: {len(args)} arguments, expected {len(spec)}")
    dims = dims_of(cell, pass_, args)
    dtype = None
    for (name, role, shape), a in zip(spec, args):
        if role not in ARRAY_ROLES:
            continue
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
            raise ValueError(f"{cell}_{pass_}: {name} must be a C-contiguous ndarray")
        if name == "keep":
            if a.dtype != np.uint8 or (a.size and a.shape != shape_of(shape, dims)):
                raise ValueError(f"{cell}_{pass_}: keep must be uint8 {shape_of(shape, dims)} or empty")
            continue
        if shape and a.shape != shape_of(shape, dims):
            raise ValueError(f"{cell}_{pass_}: {name} has shape {a.shape}, expected {shape_of(shape, dims)}")
        if dtype is None:
            dtype = a.dtype
        elif a.dtype != dtype:
            raise ValueError(f"{cell}_{pass_}: {name} is {a.dtype}, the call's arrays are {dtype}")
        if role in ("out", "inout", "acc", "saved", "scratch") and not a.flags.writeable:
            raise ValueError(f"{cell}_{pass_}: {name} must be writeable")
    return dims


NO_MASK = np.zeros((0, 0), np.uint8)  # ``keep`` for a call without a mask (nothing to write)

PACKED = {"simple_rnn": ("kernel", "recurrent_kernel", "bias"), "lstm": ("kernel", "recurrent_kernel", "bias"),
          "gru": ("kernel", "recurrent_kernel", "recurrent_kernel_h", "input_bias", "recurrent_bias")}
STATES = {"simple_rnn": ("h",), "lstm": ("h", "c"), "gru": ("h",)}


def allocate(cell, pass_, dims, dtype, roles=("scratch",), fill=0):
    """{name: array} for the arguments of ``roles`` in a call, shaped from the
    contract (``dims`` as ``dims_of`` gives them) and filled with ``fill``."""
    return {name: np.full(shape_of(shape, dims), fill, dtype)
            for name, role, shape in CALLS[(cell, pass_)] if role in roles}


def forward_args(cell, x, states, weights, activation, recurrent_activation=0, go_backwards=0,
                 return_sequences=0, reset_after=1, keep=NO_MASK, zero_output_for_mask=0, y_out=None,
                 fill=0, scratch=None):
    """A recurrent forward call's tuple, for callers without a workspace (tests,
    the bench): ``states`` are written in place, ``weights`` are the packed
    tuple in ``PACKED`` order, ``y_out`` and the scratch are allocated from the
    contract's shapes when not given (scratch filled with ``fill``; pass the
    ``scratch`` dict of an earlier call to reuse its buffers)."""
    B, T, C = x.shape
    H = states[0].shape[1]
    K = GATES[cell]
    dims = {"B": B, "T": T, "C": C, "H": H, "K": K, "G": K * H, "BT": B * T,
            "Ty": T if return_sequences else 1, "W": max(C, H) * K * H}
    named = dict(allocate(cell, "forward", dims, x.dtype, fill=fill) if scratch is None else scratch)
    named.update(zip(STATES[cell], states))
    named.update(zip(PACKED[cell], weights))
    named.update(y_out=np.full(shape_of(("B", "Ty", "H"), dims), fill, x.dtype) if y_out is None else y_out,
                 x=x, keep=keep, B=B, T=T, C=C, H=H, activation=activation, go_backwards=int(go_backwards),
                 return_sequences=int(return_sequences), zero_output_for_mask=int(zero_output_for_mask))
    if cell != "simple_rnn":
        named["recurrent_activation"] = recurrent_activation
    if cell == "gru":
        named["reset_after"] = int(reset_after)
    return bind(cell, "forward", **named)
