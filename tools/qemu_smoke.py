"""Smoke test of the kernel build an older CPU gets: import, load Keras-made
models, predict at batch 5 and 320 with the Cython kernels, compare with
Keras's own outputs (tests/io/fixtures, made by tools/make_keras_fixtures.py).

    qemu-x86_64 -cpu Haswell  "$(python3 -c 'import sys; print(sys.executable)')" tools/qemu_smoke.py avx2
    qemu-x86_64 -cpu Nehalem  ... tools/qemu_smoke.py baseline

Under qemu-user an instruction the emulated CPU lacks (AVX-512 on Haswell,
AVX on Nehalem) is an illegal instruction: the process dies. The argument is
the ISA build the CPU must get (kernels/_isa.py); .ci/run runs both."""
import os
import sys

import numpy as np

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "io", "fixtures")
MODELS = ("k3_lstm_stack", "k3_gru", "k3_bidirectional", "k2_sequential")


def main(expected_isa):
    os.environ["RNNENGINE_KERNELS"] = "cython"
    import rnnengine

    info = rnnengine.info()
    print(f"qemu smoke: isa={info['isa']} features={','.join(info['cpu_features'])}")
    if info["isa"] != expected_isa:
        sys.exit(f"qemu smoke: expected the {expected_isa} build, got {info['isa']}")
    for name in MODELS:
        model = rnnengine.load_keras(os.path.join(FIXTURES, name + ".keras"))
        data = np.load(os.path.join(FIXTURES, name + ".npz"))
        x, y = data["x0"], data["y0"]
        for reps in (1, 64):  # batch 5 and 320
            xb = np.concatenate([x] * reps)
            got = model.predict(xb, batch_size=len(xb))
            err = float(np.max(np.abs(got - np.concatenate([y] * reps))))
            print(f"qemu smoke: {name} batch {len(xb)}: max |rnnengine - keras| = {err:.2e}")
            if not err <= 1e-5:
                sys.exit(f"qemu smoke: {name} differs from Keras by {err}")
    print("qemu smoke: ok")


if __name__ == "__main__":
    main(sys.argv[1])
