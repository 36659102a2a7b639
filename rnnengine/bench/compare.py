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

Besides the latency table: the machine's float32 GEMM peak (a NumPy process,
1 thread and all cores), a PNG chart, T1 on 1 vs 2 threads, two Python threads
calling ``predict`` at once vs one, and cold start (fresh processes: import,
load a saved model, first prediction) against ONNX Runtime, PyTorch and Keras.

Internal modes (used by the parent, not for people): ``--worker`` times one
combination and writes JSON; ``--export-onnx`` exports the ONNX (and
TorchScript) models; ``--gemm-peak`` measures the GEMM peak;
``--concurrency`` measures threads calling ``predict``.
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
            "RNNENGINE_ISA", "RNNENGINE_DETERMINISTIC", "RNNENGINE_NUM_THREADS", "NUMBA_CPU_NAME",
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
        cpu0, wall0 = time.process_time(), time.perf_counter()
        deadline = pc() + int(opts.min_time * 1e9)
        while True:
            t0 = pc()
            f(*a)
            t1 = pc()
            append(t1 - t0)
            if t1 >= deadline and len(times) >= opts.min_calls:
                break
        # cores this process kept busy while timed (its CPU time / wall time, every
        # thread): under 2 for a 2-thread runner means it did not get two cores (or
        # did not use them); spin-waiting threads count as busy
        res["cores_used"] = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        us = np.asarray(times, dtype=np.float64) / 1e3
        res.update(status="ok", calls=len(times), median_us=float(np.median(us)),
                   p90_us=float(np.percentile(us, 90)), min_us=float(us.min()))
        res["loadavg"] = list(os.getloadavg())
        res["threadpools"] = _threadpools()
        res["modules"] = sorted(m for m in ("tensorflow", "keras", "torch", "onnxruntime",
                                            "numba", "rnnengine") if m in sys.modules)
        if "rnnengine" in sys.modules:
            res["rnnengine_path"] = os.path.dirname(sys.modules["rnnengine"].__file__)
            kernels_mod = sys.modules.get("rnnengine.kernels")
            res["rnnengine_isa"] = getattr(kernels_mod, "ISA", None)
            res["rnnengine_deterministic"] = sys.modules["rnnengine"].config.get_deterministic()
    except Exception as exc:  # reported in the table, never fatal to the suite
        import traceback
        res.update(status="error", reason=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc())
    return res


def export_all(tmp, items):
    """Export the torch modules, in this one process: ``WID:CELL`` to ONNX for the
    onnxruntime runner; ``cold:WID:CELL`` to ONNX and TorchScript for cold start."""
    out = {}
    for item in items:
        parts = item.split(":")
        if parts[0] == "cold":
            wid, cell = parts[1:]
            wl = peers.WORKLOADS[wid]
            weights, _, _, _ = _load_data(_data_path(tmp, wid, cell))
            for kind, fn, path in (("onnxruntime", peers.export_onnx, _cold_path(tmp, "onnx")),
                                   ("torch", peers.export_torchscript, _cold_path(tmp, "pt"))):
                out[f"cold-{kind}"] = _try_export(fn, cell, wl, weights, path)
            continue
        wid, cell = parts
        wl = peers.WORKLOADS[wid]
        weights, _, _, _ = _load_data(_data_path(tmp, wid, cell))
        out[item] = _try_export(peers.export_onnx, cell, wl, weights, _onnx_path(tmp, wid, cell))
    return out


def _try_export(fn, cell, wl, weights, path):
    try:
        return {"status": "ok", "note": fn(cell, wl, weights, path)}
    except peers.PeerUnavailable as exc:
        return {"status": "unavailable", "reason": str(exc)}
    except Exception as exc:
        return {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gemm_peak(n, reps):
    """float32 GEMM (NumPy's BLAS, ``n``³) in GFLOP/s, best of ``reps``, with
    threadpoolctl limiting the BLAS to 1 thread and then to every usable core."""
    import contextlib
    res = {"n": n, "reps": reps, "cores": _usable_cpus()}
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
        res["note"] = "threadpoolctl not installed: BLAS threads not limited"
    res["threadpools"] = _threadpools()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    flops = 2.0 * n ** 3
    for key, threads in (("one", 1), ("all", res["cores"])):
        if key == "all" and res["cores"] == 1:
            res["all_gflops"] = res["one_gflops"]
            continue
        ctx = (threadpool_limits(limits=threads, user_api="blas") if threadpool_limits
               else contextlib.nullcontext())
        with ctx:
            np.matmul(a, b, out=c)  # warm-up: pages, the BLAS's thread pool
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                np.matmul(a, b, out=c)
                best = min(best, time.perf_counter() - t0)
        res[f"{key}_gflops"] = flops / best / 1e9
    res["loadavg"] = list(os.getloadavg())
    res["status"] = "ok"
    return res


def concurrency_worker(opts):
    """Throughput (calls/s) of ``model.predict`` from one Python thread, then from
    two Python threads at once (one model, each thread its own input), in
    alternating stretches of ``--duration``/2 seconds, twice each."""
    import threading
    wl = peers.WORKLOADS[opts.workload]
    res = {"workload": wl.id, "cell": opts.cell, "runner": "rnnengine-cython", "pid": os.getpid()}
    try:
        weights, args, expected, _ = _load_data(opts.data)
        try:
            model = peers.rnnengine_model(opts.cell, wl, weights, "cython")
        except peers.PeerUnavailable as exc:
            res.update(status="unavailable", reason=str(exc))
            return res
        import rnnengine.config
        res["num_threads"] = rnnengine.config.get_num_threads()
        x = args[0]
        xs = [x, np.random.default_rng(7).standard_normal(x.shape).astype(np.float32)]
        res["max_abs_diff"] = peers.max_abs_diff(model.predict(x), expected)

        def loop(xi, i, counts, barrier, stop):
            predict = model.predict
            barrier.wait()
            n = 0
            while not stop.is_set():
                predict(xi)
                n += 1
            counts[i] = n

        def stretch(k, seconds):
            counts = [0] * k
            barrier = threading.Barrier(k + 1)
            stop = threading.Event()
            threads = [threading.Thread(target=loop, args=(xs[i], i, counts, barrier, stop))
                       for i in range(k)]
            for t in threads:
                t.start()
            barrier.wait()
            t0, c0 = time.perf_counter(), time.process_time()
            time.sleep(seconds)
            stop.set()
            for t in threads:
                t.join()
            return sum(counts), time.perf_counter() - t0, time.process_time() - c0

        stretch(1, 0.1)  # warm-up: each thread's first call builds its plan and buffers
        stretch(2, 0.1)
        tot = {1: [0, 0.0, 0.0], 2: [0, 0.0, 0.0]}
        for _ in range(2):
            for k in (1, 2):
                for i, v in enumerate(stretch(k, opts.duration / 2)):
                    tot[k][i] += v
        one, two = (tot[k][0] / tot[k][1] for k in (1, 2))
        res.update(cores_one=tot[1][2] / tot[1][1], cores_two=tot[2][2] / tot[2][1])
        res.update(status="ok", calls_one=tot[1][0], calls_two=tot[2][0],
                   one_thread_calls_s=one, two_threads_calls_s=two, ratio=two / one,
                   loadavg=list(os.getloadavg()))
    except Exception as exc:
        import traceback
        res.update(status="error", reason=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc())
    return res


# A fresh process: import, load a saved model, first prediction. t0 is taken as
# the first thing the program does (after the interpreter's own start, which
# the parent's whole-process wall time includes); CPU time is the process's
# (every thread, user + system) at the first output.
COLD_SCRIPT = r"""
import time
t0 = time.perf_counter()
import json, resource, sys
kind, model_path, x_path, y_path = sys.argv[1:5]
if kind == "rnnengine":
    import numpy as np
    import rnnengine
    model = rnnengine.load_keras(model_path)
    y = model.predict(np.load(x_path))
elif kind == "onnxruntime":
    import numpy as np
    import onnxruntime
    sess = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: np.load(x_path)})[0]
elif kind == "torch":
    import numpy as np
    import torch
    model = torch.jit.load(model_path)
    with torch.inference_mode():
        y = model(torch.from_numpy(np.load(x_path))).numpy()
elif kind == "keras":
    import numpy as np
    import keras
    model = keras.saving.load_model(model_path)
    y = np.asarray(model.predict_on_batch(np.load(x_path)))
else:
    raise SystemExit("unknown kind " + kind)
t1 = time.perf_counter()
ru = resource.getrusage(resource.RUSAGE_SELF)
np.save(y_path, y)
print("COLD " + json.dumps({"first_output_s": t1 - t0, "cpu_s": ru.ru_utime + ru.ru_stime,
                            "maxrss_mb": ru.ru_maxrss / 1024}), flush=True)
"""
COLD_KINDS = ("rnnengine", "onnxruntime", "torch", "keras")
COLD_WHAT = {
    "rnnengine": "`import rnnengine; rnnengine.load_keras(path)` (.keras saved by rnnengine); "
                 "`model.predict(x)`",
    "onnxruntime": "`import onnxruntime; InferenceSession(path)` (default options); `sess.run`",
    "torch": "`import torch; torch.jit.load(path)` (traced); call under `inference_mode`",
    "keras": "`import keras; keras.saving.load_model(path)` (the same .keras); "
             "`predict_on_batch(x)`",
}


def _cold_path(tmp, ext):
    return os.path.join(tmp, f"cold_L1_lstm.{ext}")


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


# T1 and T2 run on every core (rnnengine splits the batch, PyTorch/ONNX Runtime
# use 2 threads): their "% of peak" is against the all-cores GEMM peak; the
# batch-1 workloads' against the 1-thread peak.
THROUGHPUT_WORKLOADS = ("T1", "T2")
SECTIONS = ("peak", "scaling", "concurrency", "cold-start", "chart")
SCALING_THREADS = (1, 2)
TARGET_SCALING = 1.7
TARGET_COLD_S = 0.5
TARGET_COLD_VS_ORT = 1.5


def _peak_for(wid, peak):
    if not peak or peak.get("status") != "ok":
        return None
    return peak["all_gflops"] if wid in THROUGHPUT_WORKLOADS else peak["one_gflops"]


def build_table(combos, runs, runners, peak=None):
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
        pk = _peak_for(wid, peak)
        for r in runners:
            med, res = chosen[r]
            if not res:
                continue
            if med is None:
                first = res[0]
                if first.get("status") == "unavailable":
                    continue  # listed once under "Skipped"
                rows.append([wid, peers.CELL_TITLES[cell], r, "error", "", "", "", "", "", "",
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
                         _fmt_us(med["p90_us"]), f"{gflops:.2f}",
                         f"{100 * gflops / pk:.1f}" if pk else "–", ratio, diff_s, spread, note])
    head = ["workload", "cell", "runner", "median µs", "p90 µs", "GFLOP/s", "% of peak",
            "× best peer", "max abs diff", "process medians µs", "note"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * 7 + ["---"]) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def build_summary(combos, runs, runners):
    """rnnengine's public API against the best peer, one row per (workload, cell)."""
    ours = [r for r in ("rnnengine-cython", "rnnengine-numba", *peers.VARIANT_RUNNERS) if r in runners]
    if not ours:
        return None
    head = ["workload", "cell", "best peer", "its median µs"]
    for r in ours:
        head += [f"{r} µs", "×"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    any_peer = False
    for wid, cell in combos:
        peer_meds = [(m["median_us"], r) for r in runners if r in peers.PEER_RUNNERS
                     for m in [_median_process(runs.get((wid, cell, r), []))] if m]
        best = min(peer_meds) if peer_meds else None
        any_peer = any_peer or best is not None
        row = [wid, peers.CELL_TITLES[cell], best[1] if best else "–",
               _fmt_us(best[0]) if best else "–"]
        for r in ours:
            m = _median_process(runs.get((wid, cell, r), []))
            row.append(_fmt_us(m["median_us"]) if m else "–")
            row.append(f"**{m['median_us'] / best[0]:.2f}**" if (m and best) else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) if any_peer else None


def make_chart(png_path, wids, cells, runs, runners, title):
    """One panel per workload: grouped bars per cell, one bar per runner (median
    µs, whisker up to p90), log y-axis. Returns None, or why there is no chart."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        return f"matplotlib not importable ({type(exc).__name__}: {exc}): no chart"
    present = [r for r in runners
               if any(_median_process(runs.get((w, c, r), [])) for w in wids for c in cells)]
    if not present:
        return "no runner measured anything: no chart"
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(wids), figsize=(max(4.2 * len(wids), 6.5), 5.2),
                             squeeze=False)
    width = 0.84 / len(present)
    for ax, wid in zip(axes[0], wids):
        wl = peers.WORKLOADS[wid]
        lo, hi = float("inf"), 0.0
        for j, r in enumerate(present):
            xs, meds, ups = [], [], []
            for i, c in enumerate(cells):
                m = _median_process(runs.get((wid, c, r), []))
                if m is None:
                    continue
                xs.append(i - 0.42 + width * (j + 0.5))
                meds.append(m["median_us"])
                ups.append(max(m["p90_us"] - m["median_us"], 0.0))
                lo, hi = min(lo, m["median_us"]), max(hi, m["p90_us"])
            if xs:
                color = cmap(peers.ALL_RUNNERS.index(r) % 10)  # one colour per runner, every run
                ax.bar(xs, meds, width, yerr=[[0.0] * len(ups), ups], color=color,
                       label=r, capsize=1.5, error_kw={"elinewidth": 0.8, "ecolor": "0.25"})
        ax.set_yscale("log")
        if hi > 0:  # at least a decade, whole decades below the shortest bar
            bottom = 10 ** np.floor(np.log10(lo * 0.6))
            ax.set_ylim(bottom, max(hi * 1.6, bottom * 10))
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([peers.CELL_TITLES[c] for c in cells])
        ax.set_title(f"{wid}: B={wl.B} T={wl.T} C={wl.C} H={wl.H}", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.25)
        ax.set_axisbelow(True)
    axes[0][0].set_ylabel("µs per call (bar: median, whisker: p90; log)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:  # a runner absent from the first panel
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=9,
               frameon=False)
    fig.suptitle(title, fontsize=11)
    rows = -(-len(labels) // 5)
    fig.tight_layout(rect=(0, 0.04 + 0.045 * rows, 1, 0.96))
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return None


def default_out_dir():
    """bench/results/ in a source checkout (the current folder has bench/),
    else ./rnnengine-bench-results/."""
    if os.path.isdir("bench"):
        return os.path.join("bench", "results")
    return "rnnengine-bench-results"


QUICK = {"workloads": "L2,S1", "processes": 1, "min_time": 0.2, "min_calls": 5,
         "runners": "keras-tf-function,torch,onnxruntime,rnnengine-numba,rnnengine-cython",
         "gemm_n": 2048, "gemm_reps": 2, "cold_processes": 1, "concurrency_time": 0.4}
DEFAULTS = {"workloads": ",".join(peers.WORKLOADS), "processes": 3, "min_time": 1.0,
            "min_calls": 10, "runners": ",".join(peers.ALL_RUNNERS), "gemm_n": 4096,
            "gemm_reps": 3, "cold_processes": 5, "concurrency_time": 1.0}


def _parser(prog):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=None,
                    help=f"comma list from {', '.join(peers.WORKLOADS)} (default all; --quick: L2,S1)")
    ap.add_argument("--cells", default=",".join(peers.CELLS),
                    help=f"comma list from {', '.join(peers.CELLS)} (default all)")
    ap.add_argument("--runners", default=None,
                    help=f"comma list from {', '.join(peers.ALL_RUNNERS)} (default all; --quick: "
                         f"{QUICK['runners']}); a runner whose framework is missing is skipped")
    ap.add_argument("--min-time", type=float, default=None,
                    help="seconds of timed calls per process (default 1.0; --quick 0.2)")
    ap.add_argument("--min-calls", type=int, default=None,
                    help="at least this many timed calls per process (default 10; --quick 5)")
    ap.add_argument("--processes", type=int, default=None,
                    help="fresh processes per (workload, cell, runner); median one quoted "
                         "(default 3; --quick 1)")
    ap.add_argument("--out", default=None,
                    help="markdown output (default bench/results/YYYY-MM-DD[-HHMMSS].md in a source "
                         "checkout, else ./rnnengine-bench-results/...); the PNG chart and the raw "
                         "per-process JSON go next to it")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run of about a minute or two: L2 and S1, one process each, 0.2 s, "
                         "rnnengine and one runner per installed peer framework, extra sections "
                         "shortened and on LSTM only; explicit options still win")
    ap.add_argument("--skip", default="",
                    help=f"comma list of sections to leave out: {', '.join(SECTIONS)}")
    ap.add_argument("--gemm-n", type=int, default=None,
                    help="GEMM peak matrix size n (n³ sgemm; default 4096, --quick 2048)")
    ap.add_argument("--cold-processes", type=int, default=None,
                    help="fresh processes per cold-start runner (default 5; --quick 1)")
    ap.add_argument("--concurrency-time", type=float, default=None,
                    help="seconds of each of one-thread and two-thread predict loops "
                         "(default 1.0; --quick 0.4)")
    ap.add_argument("--child-timeout", type=float, default=None,
                    help="seconds before a worker process is abandoned "
                         "(default 300 + 4 × --min-time)")
    # internal
    for name in ("--workload", "--cell", "--runner", "--data", "--onnx", "--tmp", "--items",
                 "--result"):
        ap.add_argument(name, help=argparse.SUPPRESS)
    for name in ("--worker", "--export-onnx", "--gemm-peak", "--concurrency"):
        ap.add_argument(name, action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gemm-reps", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--duration", type=float, default=1.0, help=argparse.SUPPRESS)
    return ap


def _write_json(path, obj):
    with open(path, "w") as fh:
        json.dump(obj, fh)


def _read_result(path, rc, tail):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {"status": "error", "reason": f"worker died (rc {rc}): {tail[-300:]}"}


def _run_cold(kind, model_path, x_path, y_path, cwd, timeout):
    """One cold-start process; its numbers plus the whole-process wall time."""
    cmd = [sys.executable, "-c", COLD_SCRIPT, kind, model_path, x_path, y_path]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, cwd=cwd, env=_child_env())
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"timed out after {timeout} s"}
    wall = time.perf_counter() - t0
    for line in p.stdout.splitlines():
        if line.startswith("COLD "):
            res = json.loads(line[5:])
            res.update(status="ok", process_wall_s=wall, loadavg=list(os.getloadavg()))
            return res
    tail = (p.stdout + p.stderr)[-400:]
    if "ModuleNotFoundError" in tail or "ImportError" in tail:
        return {"status": "unavailable", "reason": tail.strip().splitlines()[-1]}
    return {"status": "error", "reason": f"rc {p.returncode}: {tail}"}


def _med(values):
    return float(np.median(values)) if values else None


def main(argv=None, prog=None):
    ap = _parser(prog)
    opts = ap.parse_args(argv)
    cli_args = list(sys.argv[1:] if argv is None else argv)
    base = QUICK if opts.quick else DEFAULTS
    for key, value in DEFAULTS.items():
        if getattr(opts, key, None) is None:
            setattr(opts, key, base[key])

    # ---------------------------------------------------------------- internal modes
    if opts.worker:
        _write_json(opts.result, worker(opts))
        return 0
    if opts.export_onnx:
        _write_json(opts.result, export_all(opts.tmp, opts.items.split(",")))
        return 0
    if opts.gemm_peak:
        _write_json(opts.result, gemm_peak(opts.gemm_n, opts.gemm_reps))
        return 0
    if opts.concurrency:
        _write_json(opts.result, concurrency_worker(opts))
        return 0

    wids = [w.strip() for w in opts.workloads.split(",") if w.strip()]
    cells = [c.strip() for c in opts.cells.split(",") if c.strip()]
    runners = [r.strip() for r in opts.runners.split(",") if r.strip()]
    skip = {x.strip() for x in opts.skip.split(",") if x.strip()}
    for w in wids:
        if w not in peers.WORKLOADS:
            ap.error(f"unknown workload {w!r}; expected from {', '.join(peers.WORKLOADS)}")
    for c in cells:
        if c not in peers.CELLS:
            ap.error(f"unknown cell {c!r}; expected from {', '.join(peers.CELLS)}")
    for r in runners:
        if r not in peers.ALL_RUNNERS:
            ap.error(f"unknown runner {r!r}; expected from {', '.join(peers.ALL_RUNNERS)}")
    for x in skip:
        if x not in SECTIONS:
            ap.error(f"unknown section {x!r} for --skip; expected from {', '.join(SECTIONS)}")
    if opts.processes < 1 or opts.cold_processes < 1:
        ap.error("--processes and --cold-processes must be at least 1")
    combos = [(w, c) for w in wids for c in cells]
    # the extra sections (scaling, concurrency) run every cell; --quick: LSTM only
    section_cells = cells
    if opts.quick and len(cells) > 1:
        section_cells = ["lstm"] if "lstm" in cells else cells[:1]
    child_timeout = opts.child_timeout or (300 + 4 * opts.min_time)
    do = {s: s not in skip for s in SECTIONS}
    cold_kinds = ["rnnengine"]
    if "onnxruntime" in runners:
        cold_kinds.append("onnxruntime")
    if "torch" in runners:
        cold_kinds.append("torch")
    if any(r.startswith("keras") for r in runners):
        cold_kinds.append("keras")

    now = datetime.datetime.now()
    out_md = opts.out
    if out_md is None:
        out_dir = default_out_dir()
        out_md = os.path.join(out_dir, now.strftime("%Y-%m-%d") + ".md")
        if os.path.exists(out_md):
            out_md = os.path.join(out_dir, now.strftime("%Y-%m-%d-%H%M%S") + ".md")
    os.makedirs(os.path.dirname(os.path.abspath(out_md)), exist_ok=True)
    out_png = os.path.splitext(out_md)[0] + ".png"

    env_seen = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if k in os.environ:
            print(f"WARNING: {k}={os.environ[k]} is set: OpenBLAS may be forced onto slower "
                  "kernels. Run as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "
                  "rnnengine bench ...` (recorded in the output).", file=sys.stderr)

    load_start = os.getloadavg()
    if load_start[0] > 0.5:
        print(f"WARNING: load average {load_start[0]:.2f} at start: other processes are "
              "running; with 2 cores their load shows up directly in the numbers (threaded "
              "runners can turn bimodal, e.g. 2-thread OpenMP/BLAS waits of a time slice).",
              file=sys.stderr)
    t_start = time.time()

    tmp = tempfile.mkdtemp(prefix="rnnengine-bench-")
    print(f"data and exported models in {tmp}", flush=True)
    # data: weights, inputs and float64 references, made once, shared by every runner
    needed = list(combos)
    if do["scaling"]:
        needed += [("T1", c) for c in section_cells]
    if do["concurrency"]:
        needed += [(w, c) for w in ("L1", "T2") for c in section_cells]
    if do["cold-start"]:
        needed.append(("L1", "lstm"))
    for wid, cell in dict.fromkeys(needed):
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

    # ---------------------------------------------------------------- GEMM peak
    # Measured now and again at the end, each in a fresh NumPy-only process; the
    # best of the two is the peak (a busy moment only ever lowers it).
    peak_runs = []

    def measure_peak(when):
        print(f"GEMM peak ({when}): NumPy float32 {opts.gemm_n}³, best of {opts.gemm_reps}, "
              "1 thread and all cores ...", flush=True)
        res_path = os.path.join(tmp, f"peak_{when}.json")
        rc, tail = _run_child(["--gemm-peak", "--gemm-n", str(opts.gemm_n), "--gemm-reps",
                               str(opts.gemm_reps), "--result", res_path], timeout=600, cwd=tmp)
        res = _read_result(res_path, rc, tail)
        res["when"] = when
        peak_runs.append(res)
        if res.get("status") == "ok":
            print(f"  {res['one_gflops']:.0f} GFLOP/s on 1 thread, {res['all_gflops']:.0f} on "
                  f"{res['cores']}", flush=True)
        else:
            print(f"  failed: {res.get('reason')}", flush=True)

    if do["peak"]:
        measure_peak("start")

    # ---------------------------------------------------------------- exports
    skipped = {}   # runner -> reason (framework missing: skipped everywhere)
    onnx_notes = {}
    items = []
    if "onnxruntime" in runners:
        items += [f"{w}:{c}" for w, c in combos]
    if do["cold-start"] and ("onnxruntime" in cold_kinds or "torch" in cold_kinds):
        items.append("cold:L1:lstm")
    if items:
        print("exporting ONNX / TorchScript models (torch, one process) ...", flush=True)
        res_path = os.path.join(tmp, "export.json")
        rc, tail = _run_child(["--export-onnx", "--tmp", tmp, "--items", ",".join(items),
                               "--result", res_path], timeout=600, cwd=tmp)
        if rc != 0 or not os.path.exists(res_path):
            why = f"ONNX export process failed (rc {rc}): {tail[-300:]}"
            if "onnxruntime" in runners:
                skipped["onnxruntime"] = why
            onnx_notes = {k: {"status": "error", "reason": why}
                          for k in ("cold-onnxruntime", "cold-torch")}
        else:
            with open(res_path) as fh:
                onnx_notes = json.load(fh)
            bad = {k: v for k, v in onnx_notes.items()
                   if v["status"] != "ok" and not k.startswith("cold-")}
            n_main = sum(1 for k in onnx_notes if not k.startswith("cold-"))
            if bad and len(bad) == n_main:
                skipped["onnxruntime"] = "; ".join(f"{k}: {v['reason']}" for k, v in bad.items())

    # ---------------------------------------------------------------- latency table
    runs = {}
    failed = set()  # combinations that errored once: not retried
    total = opts.processes * len(combos) * len(runners)
    k = 0

    def run_worker(wid, cell, r, rnd, tag="", env_extra=None):
        wargv = ["--worker", "--workload", wid, "--cell", cell, "--runner", r,
                 "--data", _data_path(tmp, wid, cell), "--min-time", str(opts.min_time),
                 "--min-calls", str(opts.min_calls)]
        res_path = os.path.join(tmp, f"res{tag}_{wid}_{cell}_{r}_{rnd}.json")
        wargv += ["--result", res_path]
        if r == "onnxruntime":
            wargv += ["--onnx", _onnx_path(tmp, wid, cell)]
        env_extra = dict(peers.VARIANT_RUNNERS.get(r, {}), **(env_extra or {}))
        rc, tail = _run_child(wargv, timeout=child_timeout, cwd=tmp, env_extra=env_extra)
        res = _read_result(res_path, rc, tail)
        res["round"] = rnd
        return res

    def describe(res):
        st = res.get("status")
        if st == "unavailable":
            return f"skipped: {res['reason']}"
        if st == "ok":
            d = res["max_abs_diff"]
            return (f"median {_fmt_us(res['median_us'])} µs, p90 {_fmt_us(res['p90_us'])} µs, "
                    f"{res['calls']} calls, max abs diff "
                    f"{d:.1e}{'  <-- > %g' % TOL if d > TOL else ''}")
        if res.get("traceback"):
            print(res["traceback"], file=sys.stderr)
        return f"ERROR: {res.get('reason')}"

    for rnd in range(opts.processes):
        for wid, cell in combos:
            for r in runners:
                k += 1
                key = (wid, cell, r)
                if r in skipped or key in failed:
                    continue
                if r == "onnxruntime":
                    item = onnx_notes.get(f"{wid}:{cell}", {})
                    if item.get("status") != "ok":
                        runs.setdefault(key, []).append(
                            {"status": "error", "reason": "ONNX export: " + item.get("reason", "?")})
                        failed.add(key)
                        continue
                res = run_worker(wid, cell, r, rnd)
                runs.setdefault(key, []).append(res)
                if res.get("status") == "unavailable":
                    skipped[r] = res["reason"]
                elif res.get("status") != "ok":
                    failed.add(key)
                print(f"[{k}/{total}] round {rnd + 1} {wid} {cell:10s} {r:18s} {describe(res)}",
                      flush=True)
    t_latency = time.time() - t_start

    # ---------------------------------------------------------------- scaling: T1, 1 vs 2 threads
    scaling = {}  # (cell, threads) -> [results]
    if do["scaling"]:
        for rnd in range(opts.processes):
            for cell in section_cells:
                for nt in SCALING_THREADS:
                    if any(x.get("status") not in ("ok", None) for x in scaling.get((cell, nt), [])):
                        continue
                    res = run_worker("T1", cell, "rnnengine-cython", rnd, tag=f"_scal{nt}",
                                     env_extra={"RNNENGINE_NUM_THREADS": str(nt)})
                    scaling.setdefault((cell, nt), []).append(res)
                    print(f"scaling round {rnd + 1} T1 {cell:10s} RNNENGINE_NUM_THREADS={nt} "
                          f"{describe(res)}", flush=True)

    # ---------------------------------------------------------------- concurrency
    conc = {}  # (wid, cell, setting) -> [results]
    conc_settings = [("L1", "1"), ("L1", None), ("T2", "1"), ("T2", None)]
    if do["concurrency"]:
        for rnd in range(opts.processes):
            for wid, setting in conc_settings:
                for cell in section_cells:
                    key = (wid, cell, setting)
                    if any(x.get("status") != "ok" for x in conc.get(key, [])):
                        continue
                    res_path = os.path.join(tmp, f"conc_{wid}_{cell}_{setting}_{rnd}.json")
                    rc, tail = _run_child(
                        ["--concurrency", "--workload", wid, "--cell", cell,
                         "--data", _data_path(tmp, wid, cell), "--duration",
                         str(opts.concurrency_time), "--result", res_path],
                        timeout=child_timeout, cwd=tmp,
                        env_extra={"RNNENGINE_NUM_THREADS": setting} if setting else None)
                    res = _read_result(res_path, rc, tail)
                    conc.setdefault(key, []).append(res)
                    if res.get("status") == "ok":
                        msg = (f"1 thread {res['one_thread_calls_s']:.0f} calls/s, 2 threads "
                               f"{res['two_threads_calls_s']:.0f} calls/s, × {res['ratio']:.2f}")
                    else:
                        msg = f"{res.get('status')}: {res.get('reason')}"
                    print(f"concurrency round {rnd + 1} {wid} {cell:10s} "
                          f"threads per call {setting or 'default'}: {msg}", flush=True)

    # ---------------------------------------------------------------- cold start
    cold = {}  # kind -> [results]
    cold_model = {}
    if do["cold-start"]:
        wl = peers.WORKLOADS["L1"]
        weights, args, expected, _ = _load_data(_data_path(tmp, "L1", "lstm"))
        x_path = os.path.join(tmp, "cold_x.npy")
        np.save(x_path, args[0])
        try:
            m = peers.rnnengine_model("lstm", wl, weights)
            m.save(_cold_path(tmp, "keras"))
            cold_model["rnnengine"] = cold_model["keras"] = _cold_path(tmp, "keras")
        except Exception as exc:
            cold["rnnengine"] = [{"status": "error", "reason": f"save: {exc}"}]
        for kind, ext in (("onnxruntime", "onnx"), ("torch", "pt")):
            if kind in cold_kinds:
                note = onnx_notes.get(f"cold-{kind}", {"status": "error", "reason": "not exported"})
                if note.get("status") == "ok":
                    cold_model[kind] = _cold_path(tmp, ext)
                else:
                    cold[kind] = [{"status": note["status"], "reason": "export: " + note["reason"]}]
        # pip install byte-compiles a package; a source checkout run under
        # PYTHONDONTWRITEBYTECODE=1 (set on this machine) never has .pyc files,
        # and would pay ~75 ms compiling its ~45 modules in every fresh process.
        # The peers measured are installed, so compile ours as pip would.
        import compileall

        import rnnengine
        compileall.compile_dir(os.path.dirname(rnnengine.__file__), quiet=1)
        for rnd in range(opts.cold_processes):
            for kind in cold_kinds:
                if kind not in cold_model or any(x["status"] != "ok" for x in cold.get(kind, [])):
                    continue
                y_path = os.path.join(tmp, f"cold_y_{kind}.npy")
                res = _run_cold(kind, cold_model[kind], x_path, y_path, tmp, child_timeout)
                if res["status"] == "ok":
                    res["max_abs_diff"] = peers.max_abs_diff(np.load(y_path), expected)
                    msg = (f"first output {res['first_output_s']:.3f} s, process "
                           f"{res['process_wall_s']:.3f} s, CPU {res['cpu_s']:.3f} s")
                else:
                    msg = f"{res['status']}: {res['reason']}"
                cold.setdefault(kind, []).append(res)
                print(f"cold start {rnd + 1} {kind:12s} {msg}", flush=True)

    peak = None
    if do["peak"]:
        measure_peak("end")
        ok = [x for x in peak_runs if x.get("status") == "ok"]
        peak = dict(ok[0]) if ok else dict(peak_runs[0])
        if ok:
            for key in ("one_gflops", "all_gflops"):
                peak[key] = max(x[key] for x in ok)
            peak["measurements"] = [(x["when"], x["one_gflops"], x["all_gflops"]) for x in ok]

    shutil.rmtree(tmp, ignore_errors=True)

    # ---------------------------------------------------------------- report
    table = build_table(combos, runs, runners, peak)
    summary = build_summary(combos, runs, runners)
    chart_note = None
    if do["chart"] and combos:
        try:
            chart_note = make_chart(out_png, wids, cells, runs, runners,
                                    f"rnnengine bench — {now.strftime('%Y-%m-%d %H:%M')}, "
                                    f"{_cpu_info()['model']}")
        except Exception as exc:  # a chart is never worth losing the results
            chart_note = f"chart failed ({type(exc).__name__}: {exc})"
    elif not do["chart"]:
        chart_note = "chart skipped (--skip chart)"

    cpu = _cpu_info()
    versions = _versions()
    parent_pools = _threadpools()
    pools_by_runner = {}
    for (wid, cell, r), res in runs.items():
        for x in res:
            if x.get("status") == "ok" and r not in pools_by_runner:
                pools_by_runner[r] = x.get("threadpools", [])
    rnn_path = PACKAGE_DIR

    md = [f"# rnnengine vs peers — {now.strftime('%Y-%m-%d %H:%M')}", ""]
    md.append("Command: `" + " ".join(
        (["env"] + [f"{k}={shlex.quote(env_seen[k])}" for k in env_seen] if env_seen else [])
        + ["rnnengine", "bench"] + [shlex.quote(a) for a in cli_args]) + "`")
    md.append("")
    isas = sorted({(str(x.get("rnnengine_isa")), bool(x.get("rnnengine_deterministic")))
                   for res in runs.values() for x in res
                   if x.get("status") == "ok" and "rnnengine_isa" in x})
    if isas:
        md.append("- rnnengine kernel build (ISA, kernels/_isa.py) and mode: " + ", ".join(
            f"{isa}{' deterministic' if det else ''}" for isa, det in isas))
    md.append(f"- CPU: {cpu['model']}; {cpu['cpu_count']} logical CPUs "
              f"({cpu['affinity']} usable); SIMD: {', '.join(cpu['simd']) or 'none listed'}")
    if peak and peak.get("status") == "ok":
        blas = [p for p in peak.get("threadpools", []) if p.get("user_api") == "blas"]
        blas_s = ", ".join(f"{p.get('internal_api')} {p.get('version', '')} "
                           f"{p.get('architecture', '')} kernels" for p in blas) or "BLAS unknown"
        each = "; ".join(f"{w}: {a:.0f} / {b:.0f}" for w, a, b in peak["measurements"])
        md.append(f"- Machine float32 GEMM peak (NumPy `matmul`, {peak['n']}³, best of "
                  f"{peak['reps']}, threadpoolctl-limited; {blas_s}; the better of a fresh "
                  f"process at the start and one at the end — {each}): "
                  f"**{peak['one_gflops']:.0f} GFLOP/s on 1 thread, {peak['all_gflops']:.0f} on "
                  f"{peak['cores']} threads**" + (f" ({peak['note']})" if peak.get("note") else ""))
        if peak["cores"] > 1 and peak["all_gflops"] < 1.5 * peak["one_gflops"]:
            md.append("  - **The all-cores peak is under 1.5× the 1-thread peak: other processes "
                      "held the other core(s) while it was measured, so '% of peak' for "
                      f"{', '.join(THROUGHPUT_WORKLOADS)} is overstated (and every 2-thread "
                      "number below is suspect).**")
        over = sorted({f"{w} {peers.CELL_TITLES[c]} {r}" for (w, c, r), res in runs.items()
                       for m in [_median_process(res)] if m and _peak_for(w, peak)
                       and peers.WORKLOADS[w].flops(c) / (m["median_us"] * 1e3)
                       > _peak_for(w, peak)})
        if over:
            md.append(f"  - '% of peak' above 100 ({len(over)} rows, e.g. {over[0]}): those runs "
                      "met a quieter machine than both peak measurements did; read them as "
                      "a measure of the load, not of the code.")
    elif do["peak"]:
        md.append(f"- Machine GEMM peak: measurement failed ({(peak or {}).get('reason', '?')})")
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
              f"FLOPs = 2·B·T·(C+H)·K·H. '% of peak' = GFLOP/s / the machine's GEMM peak: the "
              f"all-cores peak for {', '.join(THROUGHPUT_WORKLOADS)} (rnnengine splits the batch "
              "over every core, PyTorch and ONNX Runtime use 2 threads), the 1-thread peak for "
              "the batch-1 workloads (where an LSTM or GRU step of rnnengine's, as ONNX Runtime's "
              "and PyTorch's, may use a second core). '× best peer' = median / best peer median "
              "(< 1 is faster). max abs diff vs the float64 NumPy reference "
              f"(⚠ above {TOL:g}).")
    md.append("- Peers: Keras `predict_on_batch`, Keras model in `tf.function`, the same with "
              "`jit_compile=True` (XLA); PyTorch nn.RNN/LSTM/GRU (batch_first, inference_mode, "
              f"{peers.TORCH_THREADS} threads); ONNX Runtime on the same PyTorch module exported "
              f"to ONNX ({peers.ORT_THREADS} intra-op threads, ORT_ENABLE_ALL).")
    md.append("")
    md.append("| id | B | T | C | H | output |")
    md.append("|---|---:|---:|---:|---:|---|")
    for wid in dict.fromkeys(wids + ([w for w, _ in needed])):
        w = peers.WORKLOADS[wid]
        outp = ("step + new state" if w.stream else
                "every step" if w.return_sequences else "last step")
        md.append(f"| {wid} | {w.B} | {w.T} | {w.C} | {w.H} | {outp} |")
    md.append("")
    if combos:
        md.append("## Latency")
        md.append("")
        md.append(table)
        md.append("")
        if summary:
            md.append("### rnnengine against the best peer (× < 1: faster than every peer)")
            md.append("")
            md.append(summary)
            md.append("")
        else:
            md.append("No peer ran: rnnengine alone (install tensorflow, torch, onnxruntime for "
                      "the comparison).")
            md.append("")
        if chart_note is None:
            md.append(f"![median and p90 latency per workload]({os.path.basename(out_png)})")
        else:
            md.append(f"Chart: {chart_note}.")
        md.append("")

    if do["scaling"]:
        md.append("## Scaling: T1 on 1 and 2 threads (rnnengine-cython)")
        md.append("")
        md.append("`RNNENGINE_NUM_THREADS=1` vs `=2` in fresh worker processes, as the latency "
                  f"table (median process of {opts.processes}); speed-up = median on 1 thread / "
                  f"median on 2. Target: ≥ {TARGET_SCALING}×. 'cores used': the worker's CPU time / "
                  "wall time over its timed calls (all threads): near 2 on 2 threads means it "
                  "got both cores; near 1 means another process held one, and the speed-up "
                  "then says nothing about rnnengine.")
        md.append("")
        md.append("| cell | 1 thread median µs (p90) | 2 threads median µs (p90) | "
                  "GFLOP/s on 2 | speed-up | target | cores used (1 / 2 threads) | "
                  "load avg (1 / 2 threads) |")
        md.append("|---|---:|---:|---:|---:|---|---:|---:|")
        for cell in section_cells:
            m1 = _median_process(scaling.get((cell, 1), []))
            m2 = _median_process(scaling.get((cell, 2), []))
            if not (m1 and m2):
                bad = [x for nt in SCALING_THREADS for x in scaling.get((cell, nt), [])
                       if x.get("status") != "ok"]
                md.append(f"| {peers.CELL_TITLES[cell]} | – | – | – | – | "
                          f"{(bad[0].get('reason', '') if bad else 'not run')[:100]} | | |")
                continue
            sp = m1["median_us"] / m2["median_us"]
            gf = peers.WORKLOADS["T1"].flops(cell) / (m2["median_us"] * 1e3)
            md.append(f"| {peers.CELL_TITLES[cell]} | {_fmt_us(m1['median_us'])} "
                      f"({_fmt_us(m1['p90_us'])}) | {_fmt_us(m2['median_us'])} "
                      f"({_fmt_us(m2['p90_us'])}) | {gf:.1f} | **{sp:.2f}×** | "
                      f"{'met' if sp >= TARGET_SCALING else 'not met'} | "
                      f"{m1.get('cores_used', 0):.2f} / {m2.get('cores_used', 0):.2f} | "
                      f"{m1['loadavg'][0]:.1f} / {m2['loadavg'][0]:.1f} |")
        md.append("")

    if do["concurrency"]:
        md.append("## Concurrency: two Python threads calling `predict` (rnnengine-cython)")
        md.append("")
        md.append("One model; `model.predict(x)` in a loop from one Python thread, then from two "
                  "at once (each its own input), alternating stretches of "
                  f"{opts.concurrency_time / 2:g} s, twice each, after a warm-up; throughput = "
                  "calls completed / seconds. Median process (by ratio) of "
                  f"{opts.processes}. 'threads per call': what one call may split its work "
                  "over (`RNNENGINE_NUM_THREADS`; default = the CPU count): a large batch's rows, "
                  "or at batch 1 an LSTM or GRU step's units over two threads (so L1 is shown "
                  "both ways: batch-1 calls on 1 thread are what scale with Python threads; a "
                  f"split one leaves a second thread no core). Target: ≥ {TARGET_SCALING}×. "
                  "'cores used': the process's CPU time / wall time in the one-thread and the "
                  "two-thread stretches (2 threads given only ~1 core means the machine had no "
                  "second core free).")
        md.append("")
        md.append("| workload | cell | threads per call | 1 thread calls/s | 2 threads calls/s | "
                  "ratio | target | cores used (1 / 2 threads) | load avg |")
        md.append("|---|---|---|---:|---:|---:|---|---:|---:|")
        for wid, setting in conc_settings:
            for cell in section_cells:
                res = conc.get((wid, cell, setting), [])
                ok = sorted((x for x in res if x.get("status") == "ok"), key=lambda x: x["ratio"])
                tps = (f"{setting}" if setting else
                       f"default ({ok[0]['num_threads'] if ok else '?'})")
                if not ok:
                    why = res[0].get("reason", "") if res else "not run"
                    md.append(f"| {wid} | {peers.CELL_TITLES[cell]} | {tps} | – | – | – | "
                              f"{why[:100]} | | |")
                    continue
                m = ok[(len(ok) - 1) // 2]
                # One Python thread whose calls already kept ~2 cores busy leaves
                # a second thread nothing to add: the target is for calls on one.
                verdict = ("n/a: one thread's calls already use the cores"
                           if m["cores_one"] >= 1.5 else
                           "met" if m["ratio"] >= TARGET_SCALING else "not met")
                md.append(f"| {wid} | {peers.CELL_TITLES[cell]} | {tps} | "
                          f"{m['one_thread_calls_s']:.0f} | {m['two_threads_calls_s']:.0f} | "
                          f"**{m['ratio']:.2f}×** | {verdict} | "
                          f"{m['cores_one']:.2f} / {m['cores_two']:.2f} | "
                          f"{m['loadavg'][0]:.1f} |")
        md.append("")

    if do["cold-start"]:
        md.append("## Cold start: a fresh process's import, model load and first prediction")
        md.append("")
        md.append(f"LSTM L1 (batch 1, 50 steps, 32 → 128), {opts.cold_processes} fresh "
                  "process(es) per runner, one at a time in rounds; medians. 'first output': "
                  "wall time from the program's first line to the first prediction (imports "
                  "included; the interpreter's own start is not); 'process': the whole process, "
                  "spawn to exit; 'CPU': the process's user + system time at the first output "
                  "(all threads; less inflated than wall time on a loaded machine). rnnengine's "
                  "modules are byte-compiled first, as `pip install` does. Targets: "
                  f"rnnengine < {TARGET_COLD_S} s and ≤ {TARGET_COLD_VS_ORT}× ONNX Runtime.")
        md.append("")
        md.append("| runner | what | first output s | process s | CPU s | × ORT (first output) "
                  "| × ORT (CPU) | max abs diff | load avg |")
        md.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        meds = {}
        for kind in cold_kinds:
            ok = [x for x in cold.get(kind, []) if x.get("status") == "ok"]
            if ok:
                meds[kind] = {f: _med([x[f] for x in ok])
                              for f in ("first_output_s", "process_wall_s", "cpu_s")}
                meds[kind]["diff"] = max(x["max_abs_diff"] for x in ok)
                meds[kind]["load"] = _med([x["loadavg"][0] for x in ok])
                meds[kind]["range"] = (min(x["first_output_s"] for x in ok),
                                       max(x["first_output_s"] for x in ok))
        ort = meds.get("onnxruntime")
        for kind in cold_kinds:
            if kind not in meds:
                res = cold.get(kind, [])
                why = res[0].get("reason", "") if res else "not run"
                md.append(f"| {kind} | {COLD_WHAT[kind]} | – | – | – | – | – | {why[:120]} | |")
                continue
            m = meds[kind]
            lo, hi = m["range"]
            rng_s = f" ({lo:.3f}–{hi:.3f})" if len(cold[kind]) > 1 else ""
            r1 = f"{m['first_output_s'] / ort['first_output_s']:.2f}" if ort else "–"
            r2 = f"{m['cpu_s'] / ort['cpu_s']:.2f}" if ort else "–"
            md.append(f"| {kind} | {COLD_WHAT[kind]} | {m['first_output_s']:.3f}{rng_s} | "
                      f"{m['process_wall_s']:.3f} | {m['cpu_s']:.3f} | {r1} | {r2} | "
                      f"{m['diff']:.1e}{' ⚠' if m['diff'] > TOL else ''} | {m['load']:.1f} |")
        md.append("")
        if "rnnengine" in meds:
            m = meds["rnnengine"]
            verdict = [f"first output {m['first_output_s']:.3f} s "
                       f"({'<' if m['first_output_s'] < TARGET_COLD_S else '≥'} {TARGET_COLD_S} s: "
                       f"{'met' if m['first_output_s'] < TARGET_COLD_S else 'not met'})"]
            if ort:
                for f, what in (("first_output_s", "first output"), ("cpu_s", "CPU")):
                    ratio = m[f] / ort[f]
                    verdict.append(f"{ratio:.2f}× ONNX Runtime by {what} "
                                   f"({'met' if ratio <= TARGET_COLD_VS_ORT else 'not met'})")
            md.append("rnnengine cold start: " + "; ".join(verdict) + ".")
            md.append("")

    if skipped:
        md.append("Skipped runners:")
        md += [f"- {r}: {why}" for r, why in skipped.items()]
        md.append("")
    exporters = sorted({v.get("note", "") for v in onnx_notes.values() if v.get("status") == "ok"})
    if exporters:
        md.append("Exports: " + "; ".join(exporters))
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

    md.append("- this command's process (NumPy, rnnengine):")
    md += pool_lines(parent_pools)
    if peak and peak.get("status") == "ok":
        md.append("- the GEMM peak process (NumPy alone; before threadpoolctl's limits):")
        md += pool_lines(peak.get("threadpools", []))
    for r, pools in pools_by_runner.items():
        md.append(f"- worker for {r}:")
        md += pool_lines(pools)
    md.append("")
    md.append(f"Wall time: {time.time() - t_start:.0f} s ({t_latency:.0f} s for the "
              f"{total} scheduled latency processes).")
    text = "\n".join(md) + "\n"

    print()
    print(text)
    with open(out_md, "w") as fh:
        fh.write(text)
    raw = os.path.splitext(out_md)[0] + ".json"
    with open(raw, "w") as fh:
        json.dump({"argv": cli_args, "cpu": cpu, "versions": versions,
                   "env": env_seen, "parent_threadpools": parent_pools,
                   "gemm_peak": peak, "gemm_peak_runs": peak_runs, "onnx_export": onnx_notes, "skipped": skipped,
                   "runs": [dict(r, key=list(k)) for k, v in runs.items() for r in v],
                   "scaling": [dict(r, cell=c, threads=nt) for (c, nt), v in scaling.items()
                               for r in v],
                   "concurrency": [dict(r, setting=st) for (w, c, st), v in conc.items()
                                   for r in v],
                   "cold_start": {k: v for k, v in cold.items()}},
                  fh, indent=1)
    wrote = [out_md, raw] + ([out_png] if chart_note is None and combos else [])
    print("wrote " + ", ".join(wrote))
    return 0


if __name__ == "__main__":
    sys.exit(main())
