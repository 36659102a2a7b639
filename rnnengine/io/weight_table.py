"""The one table from Keras weights to rnnengine layer fields, per Keras class.

For each layer this gives, in Keras's ``get_weights()`` order, every weight's
Keras name, where a Keras 3 file keeps it (relative to the layer's group
``layers/<key>/`` in ``model.weights.h5``), and the shape the layer's config
implies (``None`` where it depends on the input: a kernel's ``input_dim``).

Nothing is transposed and nothing is repacked: rnnengine keeps every weight
in Keras's layout (gates i f c o for LSTM, z r h for GRU, kernel
``(input_dim, units)``), so a weight is copied as it is, after its shape has
been checked here, before any layer is built, and again by ``set_weights``
against the built layer (which then knows ``input_dim``).

===============  ==================  =======================  ============================
Keras class      weight              Keras 3 path             shape
===============  ==================  =======================  ============================
SimpleRNN        kernel              cell/vars/0              (input_dim, units)
                 recurrent_kernel    cell/vars/1              (units, units)
                 bias (use_bias)     cell/vars/2              (units,)
LSTM             kernel              cell/vars/0              (input_dim, 4*units)   i f c o
                 recurrent_kernel    cell/vars/1              (units, 4*units)
                 bias (use_bias)     cell/vars/2              (4*units,)
GRU              kernel              cell/vars/0              (input_dim, 3*units)   z r h
                 recurrent_kernel    cell/vars/1              (units, 3*units)
                 bias (use_bias)     cell/vars/2              (2, 3*units) reset_after, else (3*units,)
Dense            kernel              vars/0                   (input_dim, units)
                 bias (use_bias)     vars/1                   (units,)
Embedding        embeddings          vars/0                   (input_dim, output_dim)
Bidirectional    forward layer's     forward_layer/<its path>
                 backward layer's    backward_layer/<its path>
TimeDistributed  inner layer's       layer/<its path>
(all others)     none
===============  ==================  =======================  ============================

Legacy HDF5 files (``.h5``) list each layer's weights by name in its
``weight_names`` attribute (``lstm/lstm_cell/kernel:0`` in Keras 2,
``lstm/lstm_cell/kernel`` in Keras 3's legacy writer), in the same order as
this table.
"""

_RNN_GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}


def expected_weights(spec):
    """[(keras_name, keras3_path, shape)] for a translated layer ``spec``
    (``translate.LayerSpec``); shape has ``None`` for the input dimension."""
    cls, kw = spec.keras_class, spec.kwargs
    if cls in _RNN_GATES:
        units = kw["units"]
        kh = _RNN_GATES[cls] * units
        out = [("kernel", "cell/vars/0", (None, kh)),
               ("recurrent_kernel", "cell/vars/1", (units, kh))]
        if kw.get("use_bias", True):
            bias = (2, kh) if cls == "GRU" and kw.get("reset_after", True) else (kh,)
            out.append(("bias", "cell/vars/2", bias))
        return out
    if cls == "Dense":
        units = kw["units"]
        out = [("kernel", "vars/0", (None, units))]
        if kw.get("use_bias", True):
            out.append(("bias", "vars/1", (units,)))
        return out
    if cls == "Embedding":
        return [("embeddings", "vars/0", (kw["input_dim"], kw["output_dim"]))]
    if cls == "Bidirectional":
        forward, backward = spec.children["layer"], spec.children.get("backward_layer", spec.children["layer"])
        return ([(n, "forward_layer/" + p, s) for n, p, s in expected_weights(forward)] +
                [(n, "backward_layer/" + p, s) for n, p, s in expected_weights(backward)])
    if cls == "TimeDistributed":
        return [(n, "layer/" + p, s) for n, p, s in expected_weights(spec.children["layer"])]
    return []


def shape_matches(expected, actual):
    """Whether ``actual`` fits ``expected`` (``None`` matches any size)."""
    return len(expected) == len(actual) and all(e is None or e == a for e, a in zip(expected, actual))


def format_shape(shape):
    return "(" + ", ".join("input_dim" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"
