"""Worker for the mutation fuzz test: loads each mutated file in turn.

    python -m tests.io.fuzz_worker CASES.json START

For each case from START on it prints ``START i`` before loading and
``END i <outcome>`` after, flushing each line, so that the parent can tell
which case crashed the interpreter or hung. Outcomes: ``OK``,
``ModelFormatError``, ``UnsupportedKerasFeature``, or ``BAD <exception>``
for anything else (a bug).
"""
import json
import sys


def main():
    cases = json.load(open(sys.argv[1]))
    start = int(sys.argv[2])
    import rnnengine
    from rnnengine.errors import ModelFormatError, UnsupportedKerasFeature

    for i in range(start, len(cases)):
        case = cases[i]
        print(f"START {i}", flush=True)
        try:
            if case["kind"] == "model":
                rnnengine.load_keras(case["path"])
            else:
                model = rnnengine.load_keras(case["base"])
                rnnengine.io.load_weights(model, case["path"])
            outcome = "OK"
        except (ModelFormatError, UnsupportedKerasFeature) as exc:
            outcome = type(exc).__name__
        except BaseException as exc:  # noqa: BLE001 - anything else is what the fuzz looks for
            outcome = "BAD " + f"{type(exc).__name__}: {exc}".replace("\n", " ")[:400]
        print(f"END {i} {outcome}", flush=True)


if __name__ == "__main__":
    main()
