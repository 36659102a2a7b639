"""The ``rnnengine`` command line: ``rnnengine demo``, ``rnnengine info [--json]``,
``rnnengine inspect PATH``, ``rnnengine bench [options]``."""
import argparse
import sys


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after `bench` is the benchmark's own options
        from .bench import main as bench_main

        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(prog="rnnengine", description="Fast, Keras-faithful RNN inference on the CPU.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the founding document's SimpleRNN -> Dense model on shipped "
                                "Keras-trained weights and print accuracy and latency")
    info = sub.add_parser("info", help="show the kernel build (ISA) chosen for this CPU, the backend, "
                                       "threads, Numba's target and the BLAS libraries")
    info.add_argument("--json", action="store_true", help="print the rnnengine.info() dict as JSON")
    inspect = sub.add_parser("inspect", help="show a Keras model file's layers, shapes, parameter counts, "
                                             "what rnnengine supports of it, and a quick latency figure")
    inspect.add_argument("path", help="a .keras, .h5 or .weights.h5 file")
    sub.add_parser("bench", help="time rnnengine against Keras, PyTorch and ONNX Runtime on the "
                                 "standard workloads (peers optional); see `rnnengine bench --help`")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main

        demo_main()
        return 0
    if args.command == "info":
        from ._info import info_main

        return info_main(as_json=args.json)
    from .io.inspect import inspect_main

    return inspect_main(args.path)


if __name__ == "__main__":
    sys.exit(main())
