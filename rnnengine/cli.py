"""The ``rnnengine`` command line: ``rnnengine demo``."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="rnnengine", description="Fast, Keras-faithful RNN inference on the CPU.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the founding document's SimpleRNN -> Dense model on shipped "
                                "Keras-trained weights and print accuracy and latency")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main

        demo_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
