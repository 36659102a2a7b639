"""``rnnengine bench``: the comparison runner works end to end without any peer.

One quick run in a subprocess (rnnengine's Cython runner alone, L2 LSTM, one
process, plus the GEMM peak, the chart and a cold-start process), then the
markdown is checked: the latency row, its agreement with the float64 reference,
the "% of peak" column and the cold-start row. The scaling and concurrency
sections are left out here (T1/T2 calls take seconds on a loaded machine); the
full run exercises them.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnnengine import kernels

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "RNNENGINE_KERNELS"):
        env.pop(k, None)
    return env


def _row(md, *first_cells):
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:len(first_cells)] == list(first_cells):
            return cells
    raise AssertionError(f"no row {first_cells} in:\n{md}")


@pytest.mark.skipif(not kernels.cython_available(), reason="the rnnengine-cython runner needs the build")
def test_quick_bench_runs_rnnengine_alone_and_agrees(tmp_path):
    out = tmp_path / "x.md"
    cmd = [sys.executable, "-m", "rnnengine.cli", "bench", "--quick", "--runners", "rnnengine-cython",
           "--workloads", "L2", "--cells", "lstm", "--skip", "scaling,concurrency", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    md = out.read_text()

    head = _row(md, "workload", "cell", "runner")
    row = dict(zip(head, _row(md, "L2", "LSTM", "rnnengine-cython")))
    assert float(row["median µs"]) > 0
    assert float(row["p90 µs"]) >= float(row["median µs"])
    assert float(row["max abs diff"].split()[0]) < TOL, row
    assert float(row["% of peak"]) > 0, row          # the GEMM peak was measured
    assert row["× best peer"] == "–"                  # no peer asked for: rnnengine alone
    assert "GEMM peak" in md and "GFLOP/s on 1 thread" in md

    cold = _row(md, "rnnengine")
    assert float(cold[2]) > 0 and float(cold[4]) > 0  # first output s, CPU s
    assert float(cold[7].split()[0]) < TOL            # the cold process's output agrees too

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib not importable" in md
    else:
        assert (tmp_path / "x.png").stat().st_size > 1000
        assert "![" in md and "x.png" in md

    raw = json.loads((tmp_path / "x.json").read_text())
    (run,) = raw["runs"]
    assert run["status"] == "ok"
    # the worker imported rnnengine (this checkout's) and no framework or JIT
    assert run["modules"] == ["rnnengine"], run["modules"]
    assert Path(run["rnnengine_path"]).resolve() == (REPO / "rnnengine").resolve()


def test_bench_help_from_the_cli_and_the_old_script():
    for cmd in ([sys.executable, "-m", "rnnengine.cli", "bench", "--help"],
                [sys.executable, str(REPO / "bench" / "compare.py"), "--help"]):
        proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "--quick" in proc.stdout and "--runners" in proc.stdout


def test_bench_rejects_an_unknown_runner(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rnnengine.cli", "bench", "--runners", "nope",
                           "--out", str(tmp_path / "x.md")],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown runner 'nope'" in proc.stderr
