"""Keras model files in, rnnengine models out: no TensorFlow, no Keras.

    model = rnnengine.load_keras("model.keras")     # or a legacy "model.h5"
    model.load_weights("model.weights.h5")          # rnnengine.io.load_weights(model, path)
    model = rnnengine.from_keras(keras_model)       # a live Keras model

Reads Keras 3 ``.keras`` archives (and tf_keras's), legacy HDF5 models
(Keras 3's legacy writer, tf.keras 2.x, Keras 2), Keras 3 ``.weights.h5`` and
legacy HDF5 weights. Only zipfile, json, h5py and NumPy are used: importing
this package or loading a file never imports TensorFlow or Keras.

Modules, in the order a load runs through them:

- ``loader``: recognise the file by its first bytes; ``load_keras``, ``load_weights``
- ``keras_v3``: ``.keras`` archives and the Keras 3 weights layout (``layers/<class key>/...``)
- ``h5``: guarded HDF5 reads; the legacy ``model_config`` / ``model_weights`` layout
- ``translate``: Keras configs -> layer specs, one table per Keras class;
  collects every unsupported layer and option
- ``weight_table``: Keras weight names, paths and shapes per class
- ``assemble``: specs + weights -> a built Sequential or functional Model
- ``live``: ``from_keras``; ``inspect``: ``rnnengine inspect PATH``
- ``untrusted``: ``load_keras_untrusted``, the file read in a child process
  under a timeout (libhdf5 can hang on a corrupt file)

Errors: ``UnsupportedKerasFeature`` lists everything the model uses that
rnnengine does not run; ``ModelFormatError`` names the file and the problem
when it is truncated, corrupt, not a Keras model, or its weights do not fit.
"""
from .live import from_keras
from .loader import load_keras, load_weights
from .untrusted import load_keras_untrusted

__all__ = ["load_keras", "load_keras_untrusted", "load_weights", "from_keras"]
