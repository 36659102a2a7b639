"""Checks at the Python boundary, done once per call before any kernel runs.

Input contract: float32 and float64 arrays are used as they are when they
match the layer's dtype and cast to it otherwise; float16, integer and bool
arrays are cast; complex, object and string arrays raise ``TypeError``.
Fortran-ordered or strided arrays are copied to C order. NaN and inf are
allowed and propagate as they do in Keras. A float64 value beyond float32's
range cast to float32 becomes +-inf, as TensorFlow's cast makes it in Keras,
and then propagates like any inf: every cast goes through ``cast``/``cast_into``,
which keep NumPy's "overflow encountered in cast" RuntimeWarning in (under
``-W error`` it would turn a documented inf into an exception). An empty batch
or an empty sequence raises ``ValueError``.
"""
import numpy as np


def aligned_empty(shape, dtype, alignment=64):
    """An uninitialized C-contiguous array whose data starts on an ``alignment``-byte
    boundary. A layer's weights use it: NumPy puts large arrays 16 bytes past a
    page (malloc's header), and a kernel that reads a slice of columns (the
    batch-1 split, src/_split.pxd) then starts each row mid cache line."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(n * dtype.itemsize + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + n * dtype.itemsize].view(dtype).reshape(shape)


def cast(x, dtype):
    """``x`` as a C-contiguous array of ``dtype``; out-of-range values cast
    quietly (float -> float32: +-inf; NaN or huge float -> an integer index:
    some out-of-range index, which the layer then rejects by name)."""
    if x.dtype == dtype:
        return np.ascontiguousarray(x)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(x, dtype=dtype)


def cast_into(dest, src):
    """``np.copyto(dest, src, casting="unsafe")``, quietly as ``cast``."""
    if getattr(src, "dtype", None) == dest.dtype:
        np.copyto(dest, src)
        return
    with np.errstate(over="ignore", invalid="ignore"):
        np.copyto(dest, src, casting="unsafe")


def format_shape(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def as_input_array(x, dtype, layer_name, expected_shape, what="Input 0"):
    """``x`` as a C-contiguous array of ``dtype``, checked against
    ``expected_shape`` (the shape without the batch axis; None matches any)."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except ValueError as exc:
            raise ValueError(f"{what} of layer \"{layer_name}\" could not be read as an array: {exc}") from None
    if x.dtype.kind not in "fiub":
        raise TypeError(
            f"{what} of layer \"{layer_name}\" has dtype {x.dtype}: expected a float, integer "
            "or bool array (float32/float64 are used as they are, others are cast)."
        )
    expected_ndim = len(expected_shape) + 1
    if x.ndim != expected_ndim:
        raise ValueError(
            f"{what} of layer \"{layer_name}\" is incompatible with the layer: expected "
            f"ndim={expected_ndim}, found ndim={x.ndim}. Full shape received: {format_shape(x.shape)}"
        )
    for axis, want in enumerate(expected_shape, start=1):
        if want is not None and x.shape[axis] != want:
            raise ValueError(
                f"{what} of layer \"{layer_name}\" is incompatible with the layer: expected "
                f"axis {axis - expected_ndim} of input shape to have value {want}, but received "
                f"input with shape {format_shape(x.shape)}"
            )
    if x.shape[0] == 0:
        raise ValueError(f"{what} of layer \"{layer_name}\" received an empty batch: shape {format_shape(x.shape)}")
    if 0 in x.shape[1:]:
        raise ValueError(
            f"{what} of layer \"{layer_name}\" received an input with a zero-length axis: "
            f"shape {format_shape(x.shape)}"
        )
    return cast(x, dtype)


def state_array(value, shape, dtype, where):
    """``value`` as a new C-contiguous ``dtype`` array of ``shape`` (None in it
    matches any size), for a state setter: every array is converted with this
    before any state changes, so a bad one leaves the old state whole."""
    try:
        a = np.asarray(value)
    except ValueError as exc:
        raise ValueError(f"{where}: could not be read as an array: {exc}") from None
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{where}: has dtype {a.dtype}; expected a float, integer or bool array.")
    if a.ndim != len(shape) or any(want is not None and got != want for got, want in zip(a.shape, shape)):
        raise ValueError(f"{where}: expected shape {format_shape(shape)}, received {format_shape(a.shape)}.")
    out = np.empty(a.shape, dtype)
    cast_into(out, a)
    return out


def check_out(out, shape, dtype):
    """A caller-provided output buffer must match exactly: no silent copies."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"`out` must be a NumPy array, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != np.dtype(dtype):
        raise ValueError(
            f"`out` has shape {out.shape} and dtype {out.dtype}; expected shape "
            f"{tuple(shape)} and dtype {np.dtype(dtype)}"
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("`out` must be a writeable C-contiguous array")
    return out


def positive_int(value, arg, cls_name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(
            f"Received an invalid value for argument `{arg}` of {cls_name}, expected a "
            f"positive integer, got {value!r}."
        )
    return int(value)


def rate(value, arg, cls_name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not 0 <= value <= 1:
        raise ValueError(
            f"Invalid value received for argument `{arg}` of {cls_name}. Expected a float "
            f"value between 0 and 1. Received: {arg}={value!r}"
        )
    return float(value)
