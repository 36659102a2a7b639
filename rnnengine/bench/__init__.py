"""``rnnengine bench``: rnnengine against Keras, PyTorch and ONNX Runtime on the
standard workloads (see ``compare``; the runners are in ``peers``).

Nothing is imported here: the benchmark's worker processes load ``compare.py``
and ``peers.py`` by path so that a peer's process never imports rnnengine.
"""


def main(argv=None):
    """Run the benchmark command line (``rnnengine bench ...``)."""
    from .compare import main as _main

    return _main(argv, prog="rnnengine bench")
