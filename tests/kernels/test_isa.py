"""Runtime CPU dispatch (kernels/_isa.py): the choice, the errors, and every
ISA build this CPU can run agreeing with the chosen one to float32 rounding."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import rnnengine
from rnnengine.kernels import _isa

ALL = {f: True for feats in _isa.REQUIRES.values() for f in feats}
ZEN3 = dict(ALL, avx512f=False, avx512bw=False, avx512cd=False, avx512dq=False, avx512vl=False)
NEHALEM = {f: f in ("sse4.2", "popcnt") for f in ALL}


def test_widest_supported_and_built_level_is_chosen(monkeypatch):
    monkeypatch.delenv("RNNENGINE_ISA", raising=False)
    built = ["baseline", "avx2", "avx512"]
    assert _isa.choose_isa(None, ALL, built) == "avx512"
    assert _isa.choose_isa(None, ZEN3, built) == "avx2"
    assert _isa.choose_isa(None, NEHALEM, built) == "baseline"
    assert _isa.choose_isa(None, ALL, ["baseline"]) == "baseline"
    assert _isa.choose_isa(None, ALL, ["native", "baseline"]) == "native"
    assert _isa.choose_isa(None, {}, built) == "baseline"  # not x86-64
    assert _isa.choose_isa(None, ZEN3, ["avx512"]) is None  # nothing this CPU runs: Numba


def test_forcing_a_level_the_cpu_lacks_or_an_unknown_one_raises_with_the_features():
    built = ["baseline", "avx2", "avx512"]
    assert _isa.choose_isa("avx2", ALL, built) == "avx2"
    with pytest.raises(RuntimeError, match=r"lacks avx512f.*has .*avx2"):
        _isa.choose_isa("avx512", ZEN3, built)
    with pytest.raises(ValueError, match=r"expected one of baseline, avx2, avx512, native.*has"):
        _isa.choose_isa("sse9", ALL, built)
    with pytest.raises(RuntimeError, match="no avx2 build"):
        _isa.choose_isa("avx2", ALL, ["baseline"])
    # features unknown (no build at all, or not x86-64): the missing build is the error
    with pytest.raises(RuntimeError, match="no avx2 build.*built: none"):
        _isa.choose_isa("avx2", {}, [])


def test_this_process_runs_the_chosen_build():
    from rnnengine import kernels

    info = rnnengine.info()
    assert info["isa"] == kernels.ISA == _isa.choose_isa()
    assert kernels._cy_lstm.__name__ == f"rnnengine.kernels._isa_{kernels.ISA}._cy_lstm"
    assert info["isa"] in info["isa_built"] and info["cython"]
    for key in ("kernels", "num_threads", "numba", "blas", "deterministic", "cpu_features"):
        assert key in info


def _run(code, **env):
    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full,
                          timeout=300)


def test_env_var_errors_clearly_at_import():
    done = _run("import rnnengine", RNNENGINE_ISA="sse9")
    assert done.returncode != 0 and "RNNENGINE_ISA='sse9'" in done.stderr
    missing = [isa for isa in _isa.ISAS if isa not in _isa.supported_isas()]
    if missing:  # a CPU without AVX-512 (or AVX2): forcing it names what lacks
        done = _run("import rnnengine", RNNENGINE_ISA=missing[-1])
        assert done.returncode != 0 and "this CPU lacks" in done.stderr


def test_cli_info_reports_the_forced_build():
    isa = _isa.supported_isas()[0]
    done = subprocess.run([sys.executable, "-m", "rnnengine.cli", "info", "--json"], capture_output=True,
                          text=True, env=dict(os.environ, RNNENGINE_ISA=isa), timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["isa"] == isa and data["isa_forced"] == isa
    assert any(lib["internal_api"] for lib in data["blas"])


PREDICT = """
import sys, numpy as np
import rnnengine
from rnnengine import layers
from rnnengine.models import Sequential
rng = np.random.default_rng(0)
m = Sequential([layers.Input(shape=(None, 9)), layers.LSTM(40, return_sequences=True),
                layers.GRU(24), layers.Dense(5, activation="softmax")])
m.set_weights([rng.uniform(-0.4, 0.4, w.shape).astype(w.dtype) for w in m.get_weights()])
outs = [m.predict_on_batch(rng.standard_normal((B, 11, 9)).astype(np.float32)) for B in (1, 5, 40)]
np.save(sys.argv[1], np.concatenate(outs))
print(rnnengine.info()["isa"])
"""


def test_every_supported_build_agrees_with_the_chosen_one(tmp_path):
    results = {}
    for isa in _isa.supported_isas():
        if isa not in _isa.built_isas():
            continue
        path = tmp_path / f"{isa}.npy"
        done = subprocess.run([sys.executable, "-c", PREDICT, str(path)], capture_output=True, text=True,
                              env=dict(os.environ, RNNENGINE_ISA=isa, RNNENGINE_KERNELS="cython"),
                              timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == isa
        results[isa] = np.load(path)
    assert len(results) >= 1
    first = next(iter(results.values()))
    for isa, y in results.items():
        np.testing.assert_allclose(y, first, rtol=1e-5, atol=1e-6, err_msg=isa)
