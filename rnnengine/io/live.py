"""``from_keras``: convert a live Keras model (Keras 3, or tf.keras / tf_keras 2.x).

The model is read only through its public API, ``get_config()`` and each
layer's ``get_weights()``, then translated and built exactly as a file is:
the same tables, the same checks, the same errors. Keras itself is never
imported here; the model object brings it.
"""
import json
import sys

import numpy as np

from ..errors import UnsupportedKerasFeature
from . import assemble, loader, weight_table


def _jsonable(obj):
    """The config as JSON would store it (tuples -> lists, NumPy scalars -> numbers)."""
    def default(o):
        if hasattr(o, "tolist"):
            return o.tolist()
        if hasattr(o, "as_list"):  # TensorShape
            return o.as_list()
        raise TypeError(f"cannot serialise {type(o).__name__}")

    try:
        return json.loads(json.dumps(obj, default=default))
    except TypeError as exc:
        raise UnsupportedKerasFeature(f"the model's config holds objects rnnengine cannot read: {exc}") from None


def _keras_version(model):
    root = type(model).__module__.split(".")[0]
    module = sys.modules.get(root)
    version = getattr(module, "__version__", None)
    if root == "tensorflow":  # tf.keras bundled with TensorFlow (Keras 2)
        return "2"
    return version


def from_keras(keras_model):
    """Convert a live Keras model into an rnnengine model with the same weights.

    Parameters
    ----------
    keras_model : keras.Sequential or functional keras.Model
        Built (it must have weights). Subclassed models are not supported.

    Returns
    -------
    rnnengine.models.Sequential or rnnengine.models.Model

    Raises
    ------
    UnsupportedKerasFeature
        Listing every layer and option rnnengine does not run.
    """
    name = getattr(keras_model, "name", "model")
    where = f'Keras model "{name}"'
    cls = type(keras_model).__name__
    if not hasattr(keras_model, "get_config") or not hasattr(keras_model, "layers"):
        raise TypeError(f"from_keras expects a Keras model; received {type(keras_model).__name__}")
    try:
        config = keras_model.get_config()
    except NotImplementedError:
        config = None
    if cls == "Sequential":
        class_name = "Sequential"
    elif isinstance(config, dict) and "input_layers" in config and "layers" in config:
        class_name = "Functional"
    else:
        raise UnsupportedKerasFeature(f"{where}: model class {cls}: subclassed models are not supported "
                                      "(only Sequential and functional models)")
    config = _jsonable({"class_name": class_name, "config": config})
    version = _keras_version(keras_model)
    spec = loader._spec(config, version, where)
    if spec.issues:
        raise loader.unsupported_error(where, spec.issues)
    weights = {}
    for layer in keras_model.layers:
        arrays = [np.asarray(w) for w in layer.get_weights()]
        if not arrays:
            continue
        try:
            names = [n for n, _, _ in weight_table.expected_weights(spec.layer(layer.name))]
        except KeyError:
            names = []
        if len(names) != len(arrays):
            names = [f"weight {k}" for k in range(len(arrays))]
        weights[layer.name] = list(zip(names, arrays))
    return assemble.build_model(spec, weights, where)
