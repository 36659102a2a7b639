"""``rnnengine bench``: rnnengine against its peers on the standard workloads
(/work/shared/workloads.md).

Run it as (the two OpenBLAS variables force AVX2 kernels; this command unsets
nothing itself, it only records what it finds)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE rnnengine bench \
        [--workloads L1,L2,S1,T1,T2] [--cells simple_rnn,lstm,gru] [--runners ...] \
        [--min-time 1.0] [--processes 3] [--out bench/results/DATE.md] [--quick]

Method: float32, fixed-seed random non-zero weights and biases; every
(workload, cell, runner) is measured in a fresh subprocess, ``--processes`` times
(rounds: every combination once, then again), one subprocess at a time; each
subprocess warms up, then times each call with ``perf_counter_ns`` for at least
``--min-time`` seconds and reports the median and p90; the table quotes the
median process (by its median). Every runner's output is checked against a
float64 NumPy reference (``rnnengine.kernels.reference``).

Worker processes run this file by its path (``python -c <bootstrap> compare.py
...``), not ``python -m rnnengine.bench.compare``: ``-m`` would import the
rnnengine package, its compiled kernels and their OpenMP runtime into every
peer's process. A worker loads only this file, ``peers.py`` and the framework
it times; the copy of rnnengine that the parent runs is put on the workers'
``PYTHONPATH`` (unless it is installed in site-packages).

Internal modes (used by the parent, not for people): ``--worker`` times one
combination and writes JSON; ``--export-onnx`` exports the ONNX models.
"""
import argparse
import datetime
import importlib.util
import json
import os
import platform
import shlex
import shutil
import site
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))      # .../rnnengine/bench
PACKAGE_DIR = os.path.dirname(HERE)                     # .../rnnengine
PACKAGE_ROOT = os.path.dirname(PACKAGE_DIR)             # what puts this copy on sys.path


def _load_sibling(name):
    """``peers.py`` next to this file, loaded by path (worker processes do not
    import the rnnengine package)."""
    modname = f"_rnnengine_bench_{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, os.path.join(HERE, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    return mod


if __package__:
    from . import peers
else:
    peers = _load_sibling("peers")

TOL = 1e-4
ENV_KEYS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "RNNENGINE_KERNELS",
            "TF_ENABLE_ONEDNN_OPTS", "KMP_BLOCKTIME", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
DIST_NAMES = ("numpy", "scipy", "numba", "tensorflow", "tensorflow-cpu", "keras", "torch",
              "onnxruntime", "onnx", "threadpoolctl", "Cython", "rnnengine")


# --------------------------------------------------------------------------- helpers

def _data_path(tmp, wid, cell):
    return os.path.join(tmp, f"{wid}_{cell}.npz")


def _onnx_path(tmp, wid, cell):
    return os.path.join(tmp, f"{wid}_{cell}.onnx")


def _load_data(path):
    d = np.load(path)
    weights = (d["kernel"], d["recurrent_kernel"], d["bias"])
    args = tuple(d[f"arg{i}"] for i in range(int(d["n_args"])))
    expected = tuple(d[f"ref{i}"] for i in range(int(d["n_ref"])))
    expected0 = tuple(d[f"ref0_{i}"] for i in range(int(d["n_ref0"])))
    return weights, args, expected, expected0


def _threadpools():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl not installed"}]
    keep = ("user_api", "internal_api", "prefix", "version", "architecture",
            "threading_layer", "num_threads", "filepath")
    return [{k: str(v) for k, v in info.items() if k in keep} for info in threadpool_info()]


def _versions():
    from importlib import metadata
    out = {}
    for name in DIST_NAMES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _cpu_info():
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown":
                    model = val.strip()
                elif key == "flags" and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
            if f in flags]
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {"model": model, "simd": simd, "cpu_count": os.cpu_count(), "affinity": affinity}


def _git():
    """The commit of the checkout this rnnengine runs from (none when installed)."""
    def git(*args):
        return subprocess.run(["git", "-C", PACKAGE_ROOT, *args], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    try:
        top = git("rev-parse", "--show-toplevel")
        if not top or os.path.realpath(top) != os.path.realpath(PACKAGE_ROOT):
            return "not a git checkout (installed package)"
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return head + (" (working tree modified)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------- worker

def worker(opts):
    """Time one (workload, cell, runner) in this fresh process; write JSON to --result."""
    wl = peers.WORKLOADS[opts.workload]
    cell, name = opts.cell, opts.runner
    res = {"workload": wl.id, "cell": cell, "runner": name, "pid": os.getpid()}
    try:
        weights, args, expected, expected0 = _load_data(opts.data)
        t0 = time.perf_counter()
        try:
            runner = peers.build_runner(name, cell, wl, weights,
                                        onnx_path=opts.onnx if opts.onnx else None)
        except peers.PeerUnavailable as exc:
            res.update(status="unavailable", reason=str(exc))
            return res
        res["build_s"] = time.perf_counter() - t0
        res["note"] = runner.note
        res["takes_state"] = runner.takes_state
        f = runner.f
        a = args if runner.takes_state else args[:1]

        # first call (compiles where there is a JIT) and the numerical check
        t0 = time.perf_counter()
        out = f(*a)
        res["first_call_s"] = time.perf_counter() - t0
        res["max_abs_diff"] = peers.max_abs_diff(out, expected if runner.takes_state else expected0)

        # warm-up: at least 5 calls and a quarter of --min-time (0.1 s to 1 s)
        warm = min(1.0, max(0.1, opts.min_time / 4))
        t_end = time.perf_counter() + warm
        n = 0
        while n < 5 or time.perf_counter() < t_end:
            f(*a)
            n += 1
        res["warmup_calls"] = n

        # timed calls
        pc = time.perf_counter_ns
        times = []
        append = times.append
        deadline = pc() + int(opts.min_time * 1e9)
        while True:
            t0 = pc()
            f(*a)
            t1 = pc()
            append(t1 - t0)
            if t1 >= deadline and len(times) >= opts.min_calls:
                break
        us = np.asarray(times, dtype=np.float64) / 1e3
        res.update(status="ok", calls=len(times), median_us=float(np.median(us)),
                   p90_us=float(np.percentile(us, 90)), min_us=float(us.min()))
        res["loadavg"] = list(os.getloadavg())
        res["threadpools"] = _threadpools()
        res["modules"] = sorted(m for m in ("tensorflow", "keras", "torch", "onnxruntime",
                                            "numba", "rnnengine") if m in sys.modules)
        if "rnnengine" in sys.modules:
            res["rnnengine_path"] = os.path.dirname(sys.modules["rnnengine"].__file__)
    except Exception as exc:  # reported in the table, never fatal to the suite
        import traceback
        res.update(status="error", reason=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc())
    return res


def export_all(tmp, items):
    """Export every (workload, cell) torch module to ONNX, in this one process."""
    out = {}
    for item in items:
        wid, cell = item.split(":")
        wl = peers.WORKLOADS[wid]
        weights, _, _, _ = _load_data(_data_path(tmp, wid, cell))
        try:
            out[item] = {"status": "ok",
                         "note": peers.export_onnx(cell, wl, weights, _onnx_path(tmp, wid, cell))}
        except peers.PeerUnavailable as exc:
            out[item] = {"status": "unavailable", "reason": str(exc)}
        except Exception as exc:
            out[item] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    return out


# --------------------------------------------------------------------------- parent

# A worker runs this file by path: `python -m rnnengine.bench.compare` would
# import the rnnengine package (its kernels, libgomp, its OpenBLAS setting) into
# every peer's process.
_BOOTSTRAP = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_rnnengine_bench_compare', sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = mod\n"
    "spec.loader.exec_module(mod)\n"
    "sys.exit(mod.main(sys.argv[2:]))\n"
)


def _site_dirs():
    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    try:
        dirs.append(site.getusersitepackages())
    except Exception:  # pragma: no cover
        pass
    return {os.path.realpath(d) for d in dirs}


def _child_env(extra=None):
    """The parent's environment; this copy of rnnengine first on PYTHONPATH
    unless it is the installed one (so workers import what the parent runs)."""
    env = dict(os.environ)
    if os.path.realpath(PACKAGE_ROOT) not in _site_dirs():
        rest = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + rest if rest else "")
    if extra:
        env.update(extra)
    return env


def _run_child(argv, timeout, cwd, env_extra=None, script=None):
    """Run this file (or ``script``, a ``-c`` program) in a fresh interpreter,
    in ``cwd`` (a temporary folder: no ``rnnengine/`` there to shadow the
    parent's copy); returns (rc, output tail)."""
    if script is None:
        cmd = [sys.executable, "-c", _BOOTSTRAP, os.path.abspath(__file__)] + argv
    else:
        cmd = [sys.executable, "-c", script] + argv
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, cwd=cwd, env=_child_env(env_extra))
        return p.returncode, (p.stdout + p.stderr)[-3000:]
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout} s"


def _fmt_us(v):
    if v is None:
        return "–"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _median_process(results):
    """The process whose median is the median of the process medians (lower middle)."""
    ok = sorted((r for r in results if r.get("status") == "ok"), key=lambda r: r["median_us"])
    return ok[(len(ok) - 1) // 2] if ok else None


def build_table(combos, runs, runners):
    rows = []
    for wid, cell in combos:
        wl = peers.WORKLOADS[wid]
        chosen = {}
        for r in runners:
            res = runs.get((wid, cell, r), [])
            chosen[r] = (_median_process(res), res)
        peer_meds = [c[0]["median_us"] for r, c in chosen.items()
                     if r in peers.PEER_RUNNERS and c[0] is not None]
        best = min(peer_meds) if peer_meds else None
        for r in runners:
            med, res = chosen[r]
            if not res:
                continue
            if med is None:
                first = res[0]
                if first.get("status") == "unavailable":
                    continue  # listed once under "Skipped"
                rows.append([wid, peers.CELL_TITLES[cell], r, "error", "", "", "", "", "",
                             first.get("reason", "")[:120]])
                continue
            gflops = wl.flops(cell) / (med["median_us"] * 1e3)
            oks = [x["median_us"] for x in res if x.get("status") == "ok"]
            spread = f"{min(oks):.3g}–{max(oks):.3g}" if len(oks) > 1 else ""
            ratio = f"{med['median_us'] / best:.2f}" if best else "–"
            if best and r in peers.PEER_RUNNERS and med["median_us"] == best:
                ratio += " (best peer)"
            diff = med.get("max_abs_diff")
            diff_s = f"{diff:.1e}" + (" ⚠" if diff is None or diff > TOL else "")
            note = med.get("note", "") if (wl.stream and not med.get("takes_state", True)) else ""
            rows.append([wid, peers.CELL_TITLES[cell], r, _fmt_us(med["median_us"]),
                         _fmt_us(med["p90_us"]), f"{gflops:.2f}", ratio, diff_s, spread, note])
    head = ["workload", "cell", "runner", "median µs", "p90 µs", "GFLOP/s",
            "× best peer", "max abs diff", "process medians µs", "note"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * 6 + ["---"]) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def default_out_dir():
    """bench/results/ in a source checkout (the current folder has bench/),
    else ./rnnengine-bench-results/."""
    if os.path.isdir("bench"):
        return os.path.join("bench", "results")
    return "rnnengine-bench-results"


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=",".join(peers.WORKLOADS))
    ap.add_argument("--cells", default=",".join(peers.CELLS))
    ap.add_argument("--runners", default=",".join(peers.ALL_RUNNERS),
                    help=f"comma list from {', '.join(peers.ALL_RUNNERS)}")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="seconds of timed calls per process (default 1.0)")
    ap.add_argument("--min-calls", type=int, default=10,
                    help="at least this many timed calls per process (default 10)")
    ap.add_argument("--processes", type=int, default=3,
                    help="fresh processes per (workload, cell, runner); median one quoted")
    ap.add_argument("--out", default=None,
                    help="markdown output (default bench/results/YYYY-MM-DD[-HHMMSS].md in a source "
                         "checkout, else ./rnnengine-bench-results/...); "
                         "raw per-process JSON goes next to it")
    ap.add_argument("--child-timeout", type=float, default=None,
                    help="seconds before a worker process is abandoned "
                         "(default 300 + 4 × --min-time)")
    # internal
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--export-onnx", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--cell", help=argparse.SUPPRESS)
    ap.add_argument("--runner", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--onnx", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--items", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    cli_args = list(sys.argv[1:] if argv is None else argv)

    if opts.worker:
        res = worker(opts)
        with open(opts.result, "w") as fh:
            json.dump(res, fh)
        return 0
    if opts.export_onnx:
        res = export_all(opts.tmp, opts.items.split(","))
        with open(opts.result, "w") as fh:
            json.dump(res, fh)
        return 0

    wids = [w.strip() for w in opts.workloads.split(",") if w.strip()]
    cells = [c.strip() for c in opts.cells.split(",") if c.strip()]
    runners = [r.strip() for r in opts.runners.split(",") if r.strip()]
    for w in wids:
        if w not in peers.WORKLOADS:
            ap.error(f"unknown workload {w!r}; expected from {', '.join(peers.WORKLOADS)}")
    for c in cells:
        if c not in peers.CELLS:
            ap.error(f"unknown cell {c!r}; expected from {', '.join(peers.CELLS)}")
    for r in runners:
        if r not in peers.ALL_RUNNERS:
            ap.error(f"unknown runner {r!r}; expected from {', '.join(peers.ALL_RUNNERS)}")
    combos = [(w, c) for w in wids for c in cells]
    child_timeout = opts.child_timeout or (300 + 4 * opts.min_time)

    now = datetime.datetime.now()
    out_md = opts.out
    if out_md is None:
        out_dir = default_out_dir()
        out_md = os.path.join(out_dir, now.strftime("%Y-%m-%d") + ".md")
        if os.path.exists(out_md):
            out_md = os.path.join(out_dir, now.strftime("%Y-%m-%d-%H%M%S") + ".md")
    os.makedirs(os.path.dirname(os.path.abspath(out_md)), exist_ok=True)

    env_seen = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if k in os.environ:
            print(f"WARNING: {k}={os.environ[k]} is set: OpenBLAS may be forced onto slower "
                  "kernels. Run as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python "
                  "rnnengine bench ...` (recorded in the output).", file=sys.stderr)

    load_start = os.getloadavg()
    if load_start[0] > 0.5:
        print(f"WARNING: load average {load_start[0]:.2f} at start: other processes are "
              "running; with 2 cores their load shows up directly in the numbers (threaded "
              "runners can turn bimodal, e.g. 2-thread OpenMP/BLAS waits of a time slice).",
              file=sys.stderr)

    tmp = tempfile.mkdtemp(prefix="rnnengine-bench-")
    print(f"data and ONNX models in {tmp}", flush=True)
    # data: weights, inputs and float64 references, made once, shared by every runner
    for wid, cell in combos:
        wl = peers.WORKLOADS[wid]
        weights = peers.make_weights(cell, wl.C, wl.H)
        args = peers.make_args(wl, cell)
        ref = peers.reference(wl, cell, weights, args)
        ref0 = peers.reference(wl, cell, weights, args, zero_state=True)
        arrays = {"kernel": weights[0], "recurrent_kernel": weights[1], "bias": weights[2],
                  "n_args": len(args), "n_ref": len(ref), "n_ref0": len(ref0)}
        arrays.update({f"arg{i}": a for i, a in enumerate(args)})
        arrays.update({f"ref{i}": a for i, a in enumerate(ref)})
        arrays.update({f"ref0_{i}": a for i, a in enumerate(ref0)})
        np.savez(_data_path(tmp, wid, cell), **arrays)

    skipped = {}   # runner -> reason (framework missing: skipped everywhere)
    onnx_notes = {}
    if "onnxruntime" in runners:
        print("exporting ONNX models (torch, one process) ...", flush=True)
        res_path = os.path.join(tmp, "export.json")
        items = ",".join(f"{w}:{c}" for w, c in combos)
        rc, tail = _run_child(["--export-onnx", "--tmp", tmp, "--items", items,
                               "--result", res_path], timeout=600, cwd=tmp)
        if rc != 0 or not os.path.exists(res_path):
            skipped["onnxruntime"] = f"ONNX export process failed (rc {rc}): {tail[-300:]}"
        else:
            with open(res_path) as fh:
                onnx_notes = json.load(fh)
            bad = {k: v for k, v in onnx_notes.items() if v["status"] != "ok"}
            if bad and len(bad) == len(onnx_notes):
                skipped["onnxruntime"] = "; ".join(f"{k}: {v['reason']}" for k, v in bad.items())

    runs = {}
    failed = set()  # combinations that errored once: not retried
    total = opts.processes * len(combos) * len(runners)
    k = 0
    t_start = time.time()
    for rnd in range(opts.processes):
        for wid, cell in combos:
            for r in runners:
                k += 1
                key = (wid, cell, r)
                if r in skipped or key in failed:
                    continue
                wargv = ["--worker", "--workload", wid, "--cell", cell, "--runner", r,
                        "--data", _data_path(tmp, wid, cell), "--min-time", str(opts.min_time),
                        "--min-calls", str(opts.min_calls)]
                res_path = os.path.join(tmp, f"res_{wid}_{cell}_{r}_{rnd}.json")
                wargv += ["--result", res_path]
                if r == "onnxruntime":
                    item = onnx_notes.get(f"{wid}:{cell}", {})
                    if item.get("status") != "ok":
                        runs.setdefault(key, []).append(
                            {"status": "error", "reason": "ONNX export: " + item.get("reason", "?")})
                        failed.add(key)
                        continue
                    wargv += ["--onnx", _onnx_path(tmp, wid, cell)]
                rc, tail = _run_child(wargv, timeout=child_timeout, cwd=tmp)
                try:
                    with open(res_path) as fh:
                        res = json.load(fh)
                except (OSError, ValueError):
                    res = {"status": "error", "reason": f"worker died (rc {rc}): {tail[-300:]}"}
                res["round"] = rnd
                runs.setdefault(key, []).append(res)
                st = res.get("status")
                if st == "unavailable":
                    skipped[r] = res["reason"]
                    msg = f"skipped: {res['reason']}"
                elif st == "ok":
                    d = res["max_abs_diff"]
                    msg = (f"median {_fmt_us(res['median_us'])} µs, p90 "
                           f"{_fmt_us(res['p90_us'])} µs, {res['calls']} calls, max abs diff "
                           f"{d:.1e}{'  <-- > %g' % TOL if d > TOL else ''}")
                else:
                    failed.add(key)
                    msg = f"ERROR: {res.get('reason')}"
                    if res.get("traceback"):
                        print(res["traceback"], file=sys.stderr)
                print(f"[{k}/{total}] round {rnd + 1} {wid} {cell:10s} {r:18s} {msg}", flush=True)

    table = build_table(combos, runs, runners)

    # ---------------------------------------------------------------- report
    cpu = _cpu_info()
    versions = _versions()
    parent_pools = _threadpools()
    pools_by_runner = {}
    for (wid, cell, r), res in runs.items():
        for x in res:
            if x.get("status") == "ok" and r not in pools_by_runner:
                pools_by_runner[r] = x.get("threadpools", [])
    try:
        import rnnengine  # noqa: F401  (only to say which copy was measured)
        rnn_path = os.path.dirname(sys.modules["rnnengine"].__file__)
    except Exception as exc:  # pragma: no cover
        rnn_path = f"not importable ({exc})"

    md = [f"# rnnengine vs peers — {now.strftime('%Y-%m-%d %H:%M')}", ""]
    md.append("Command: `" + " ".join(
        (["env"] + [f"{k}={shlex.quote(env_seen[k])}" for k in env_seen] if env_seen else [])
        + ["rnnengine", "bench"] + [shlex.quote(a) for a in cli_args])
        + "`")
    md.append("")
    md.append(f"- CPU: {cpu['model']}; {cpu['cpu_count']} logical CPUs "
              f"({cpu['affinity']} usable); SIMD: {', '.join(cpu['simd']) or 'none listed'}")
    load_end = os.getloadavg()
    busy = [x.get("loadavg", [0])[0] for v in runs.values() for x in v if "loadavg" in x]
    md.append(f"- Load average (1 min): {load_start[0]:.2f} at start, {load_end[0]:.2f} at end"
              + (f", highest seen by a worker {max(busy):.2f}" if busy else "")
              + " (this benchmark itself adds about 1.0 while it runs)"
              + (" — **the machine was not idle: treat the numbers with care**"
                 if load_start[0] > 0.5 or max(busy + [load_end[0]]) > 1.6 else ""))
    md.append(f"- Python {platform.python_version()} on {platform.platform()}")
    md.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    md.append(f"- rnnengine measured from: {rnn_path}; git {_git()}")
    md.append("- Environment: " + (", ".join(f"{k}={v}" for k, v in env_seen.items())
                                   or "none of " + ", ".join(ENV_KEYS[:4]) + " … set"))
    if any(k in env_seen for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")):
        md.append("- **WARNING: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE were set for this run; "
                  "NumPy's OpenBLAS may have used slower kernels.**")
    md.append(f"- Method: {opts.processes} fresh process(es) per row, run one at a time in "
              f"rounds; per process ≥ {opts.min_time} s and ≥ {opts.min_calls} timed calls "
              "after warm-up (≥ 5 calls and ¼ of the min time, 0.1–1 s), "
              "perf_counter_ns per call, gc left on; the median process (by median) is quoted. "
              f"FLOPs = 2·B·T·(C+H)·K·H. '× best peer' = median / best peer median "
              "(< 1 is faster). max abs diff vs the float64 NumPy reference "
              f"(⚠ above {TOL:g}).")
    md.append("- Peers: Keras `predict_on_batch`, Keras model in `tf.function`, the same with "
              "`jit_compile=True` (XLA); PyTorch nn.RNN/LSTM/GRU (batch_first, inference_mode, "
              f"{peers.TORCH_THREADS} threads); ONNX Runtime on the same PyTorch module exported "
              f"to ONNX ({peers.ORT_THREADS} intra-op threads, ORT_ENABLE_ALL).")
    md.append("")
    md.append("| id | B | T | C | H | output |")
    md.append("|---|---:|---:|---:|---:|---|")
    for wid in wids:
        w = peers.WORKLOADS[wid]
        outp = ("step + new state" if w.stream else
                "every step" if w.return_sequences else "last step")
        md.append(f"| {wid} | {w.B} | {w.T} | {w.C} | {w.H} | {outp} |")
    md.append("")
    md.append(table)
    md.append("")
    if skipped:
        md.append("Skipped runners:")
        md += [f"- {r}: {why}" for r, why in skipped.items()]
        md.append("")
    exporters = sorted({v.get("note", "") for v in onnx_notes.values() if v.get("status") == "ok"})
    if exporters:
        md.append("ONNX export: " + "; ".join(exporters))
        md.append("")
    md.append("## Thread pools / BLAS (threadpoolctl)")
    md.append("")

    def pool_lines(pools):
        out = []
        for p in pools:
            if "note" in p:
                out.append(f"  - {p['note']}")
                continue
            out.append(f"  - {p.get('internal_api', '?')} {p.get('version', '')} "
                       f"({p.get('user_api', '')}), architecture {p.get('architecture', '–')}, "
                       f"threading {p.get('threading_layer', '–')}, "
                       f"{p.get('num_threads', '?')} threads — "
                       f"{os.path.basename(p.get('filepath', ''))}")
        return out or ["  - (none reported)"]

    md.append("- this script's process (NumPy):")
    md += pool_lines(parent_pools)
    for r, pools in pools_by_runner.items():
        md.append(f"- worker for {r}:")
        md += pool_lines(pools)
    md.append("")
    md.append(f"Wall time: {time.time() - t_start:.0f} s for {total} scheduled processes.")
    text = "\n".join(md) + "\n"

    print()
    print(text)
    with open(out_md, "w") as fh:
        fh.write(text)
    raw = os.path.splitext(out_md)[0] + ".json"
    with open(raw, "w") as fh:
        json.dump({"argv": cli_args, "cpu": cpu, "versions": versions,
                   "env": env_seen, "parent_threadpools": parent_pools,
                   "onnx_export": onnx_notes, "skipped": skipped,
                   "runs": [dict(r, key=list(k)) for k, v in runs.items() for r in v]},
                  fh, indent=1)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {out_md} and {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
