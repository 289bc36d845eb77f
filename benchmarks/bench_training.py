"""Training throughput of cnn_lib (fast and reference kernels), the tutorial's per-pixel loops and
PyTorch, side by side in one run; then where the time goes, layer by layer (LeNet-style net,
cnn_lib vs PyTorch, benchmarks/layer_times.py); then an accuracy-vs-time and memory run on
full MNIST.

Run from the repository root:

    python benchmarks/bench_training.py            # full run, ~6 minutes, writes benchmarks/RESULTS.md
    python benchmarks/bench_training.py --quick    # smoke run, ~1 minute, writes nothing by default

Subsets: ``--nets lenet --batches 32,128 --dtypes float32 --impls fast,torch --no-layers --no-mnist
--output /tmp/subset.md`` (without ``--output`` a run that is not ``--quick`` overwrites
benchmarks/RESULTS.md).

What is timed: one training step = forward + softmax cross-entropy + backward + plain SGD
update, on real MNIST digits (the sample shipped in data/), float32 and float64, batch 1, 32
and 128, for the tutorial's network and a LeNet-style one:

* ``fast``      cnn_lib's vectorised kernels with cnn_lib's own threads (its default:
                ``--threads`` of them, NumPy's BLAS kept to one thread while they work);
* ``fast_blas`` the same kernels with ``CNN_LIB_NUM_THREADS=1``: OpenBLAS threads inside each
                matrix product, everything else on one core;
* ``torch``     the same network in PyTorch (when installed), same dtype,
                ``torch.set_num_threads(--threads)``;
* ``reference`` cnn_lib's loop kernels (batch 1 only, a few steps: they are loops);
* ``loops``     the tutorial's code style, one image at a time (benchmarks/tutorial_loops.py),
                tutorial network only.

Each kind runs in its own *worker process*, so libraries never share a process or its BLAS /
OpenMP threads. The configurations are interleaved: each round measures every configuration
once, for about ``--block`` seconds, with a short pause in between (OpenBLAS and OpenMP worker
threads keep spinning for a while after a call and would slow whatever runs next). A result
is the median over rounds of each block's images/s (block value = batch size / median step
time), shown with the min-max over rounds. Ratios compare medians; the bracket is the min-max
of the per-round ratios (the sides of a pair run back to back).

Machines of this course's CI set OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for old OpenBLAS
builds; a student's machine does not, and they slow large float32 matrix products down, so
this script restarts itself without them (and says so in the report). The only other change
to the environment: OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and MKL_NUM_THREADS are set to
``--threads`` (and each worker's CNN_LIB_NUM_THREADS as described above), so that every library
gets the same number of cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout even when cnn_lib is not installed
sys.path.insert(0, str(Path(__file__).resolve().parent))

BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _restart_without_blas_overrides() -> None:
    """Re-exec this script with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed from the
    environment (they must be gone before NumPy loads OpenBLAS)."""
    found = [k for k in BLAS_OVERRIDES if k in os.environ]
    if not found:
        return
    env = {k: v for k, v in os.environ.items() if k not in BLAS_OVERRIDES}
    env["CNN_BENCH_REMOVED_ENV"] = " ".join(f"{k}={os.environ[k]}" for k in found)
    print(f"restarting without {', '.join(found)} (set for old OpenBLAS builds on CI machines)",
          flush=True)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


if __name__ == "__main__":
    _restart_without_blas_overrides()

import numpy as np  # noqa: E402  (after the restart above: OpenBLAS reads the environment once)

NETS = ("tutorial", "lenet")
NET_TEXT = {
    "tutorial": "tutorial net: conv 8x3x3 -> max-pool 2 -> linear 10",
    "lenet": "LeNet-style net: conv 32x3x3 pad 1 -> ReLU -> pool -> conv 64x3x3 pad 1 -> ReLU -> pool "
             "-> linear 128 -> ReLU -> linear 10",
}
LR, MOMENTUM = 0.005, 0.0  # plain SGD at the tutorial's learning rate (stable even at batch 1)
MNIST_LR, MNIST_MOMENTUM = 0.05, 0.9  # the full-MNIST run: SGD with momentum


# ----------------------------------------------------------------------------- the networks


def cnn_lib_net(name, dtype, seed=0):
    """The course's network of that name (cnn_lib.models), with PyTorch's default initialisation."""
    from cnn_lib import models

    return models.build(name, rng=seed, dtype=dtype)


def torch_net(name):
    import torch.nn as nn

    if name == "tutorial":
        return nn.Sequential(nn.Conv2d(1, 8, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 13 * 13, 10))
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def sample_batches(batch, dtype, count=32, seed=0):
    """``count`` batches of real digits from the MNIST sample shipped in data/ (standardised)."""
    from cnn_lib.data import load_mnist

    x, y, _, _ = load_mnist(normalize="standard", dtype=dtype)
    order = np.random.default_rng(seed).permutation(len(y))
    need = batch * count
    order = np.resize(order, need)  # repeats the permutation if the sample is too small
    return [(np.ascontiguousarray(x[order[i:i + batch]]), y[order[i:i + batch]])
            for i in range(0, need, batch)]


# ----------------------------------------------------------------------------- one training step


class CnnLibStep:
    """forward + loss + backward + SGD step with cnn_lib (``impl`` "fast" or "reference")."""

    def __init__(self, net, batch, dtype, impl):
        self.net, self.dtype, self.impl = net, dtype, impl
        self.batches, self.i = sample_batches(batch, dtype), 0
        self.restarts = 0
        self._build()

    def _build(self):
        from cnn_lib import SGD, SoftmaxCrossEntropy

        self.model = cnn_lib_net(self.net, self.dtype, seed=self.restarts)
        self.model.impl = self.impl
        self.loss = SoftmaxCrossEntropy()
        self.loss.impl = self.impl
        self.opt = SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)

    def __call__(self):
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        try:
            self.opt.zero_grad()  # backward adds into grads (PyTorch's peer: zero_grad(set_to_none=True))
            self.loss.forward(self.model.forward(x), y)
            # the images need no gradient: the first layer skips dL/dx (PyTorch does the same)
            self.model.backward(self.loss.backward(), need_input_grad=False)
            self.opt.step()
        except (ValueError, FloatingPointError) as e:  # diverged (cnn_lib refuses NaN): start again
            if "NaN or inf" not in str(e):
                raise
            self.restarts += 1
            self._build()


class TorchStep:
    def __init__(self, net, batch, dtype):
        import torch

        torch.manual_seed(0)
        tdtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
        self.torch, self.f = torch, torch.nn.functional
        self.model = torch_net(net).to(tdtype)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in sample_batches(batch, dtype)]
        self.i = 0

    def __call__(self):
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        self.opt.zero_grad(set_to_none=True)
        self.f.cross_entropy(self.model(x), y).backward()
        self.opt.step()


class LoopStep:
    """The tutorial's per-pixel loops: one image per step."""

    def __init__(self, net, batch, dtype):
        from tutorial_loops import TutorialLoopNet

        assert net == "tutorial" and batch == 1
        self.net = TutorialLoopNet(0, dtype)
        self.batches, self.i = sample_batches(1, dtype), 0

    def __call__(self):
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        self.net.train_step(x[0, 0], int(y[0]))


# ----------------------------------------------------------------------------- worker processes


def _blas_runtime_info():
    """What NumPy's BLAS really runs with: library, kernel (core) and thread count."""
    import ctypes

    info = {}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
        info["numpy_blas_config"] = blas.get("openblas configuration", "")
    except Exception as e:  # older NumPy: no mode="dicts"
        info["numpy_blas"] = f"unknown ({type(e).__name__})"
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
        lib = ctypes.CDLL(paths[0])
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                if hasattr(lib, f"{prefix}get_num_threads{suffix}"):
                    threads = getattr(lib, f"{prefix}get_num_threads{suffix}")
                    corename = getattr(lib, f"{prefix}get_corename{suffix}")
                    corename.restype = ctypes.c_char_p
                    info["openblas_threads"] = int(threads())
                    info["openblas_core"] = corename().decode()
                    return info
    except Exception as e:  # not OpenBLAS, or not Linux
        info["openblas_threads"] = f"unknown ({type(e).__name__})"
    return info


def _worker(kind, threads, conn):
    """Serve measurement requests: ("measure", config) -> list of step times in seconds."""
    info = _blas_runtime_info()
    if kind == "torch":
        import torch

        torch.set_num_threads(threads)
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    torch_cpu=torch.backends.cpu.get_cpu_capability(),
                    torch_blas=next((line.strip(" -") for line in torch.__config__.show().splitlines()
                                     if "Math Kernel" in line or "OpenBLAS" in line), "?"))
    else:
        from cnn_lib import get_num_threads

        info["cnn_lib_threads"] = get_num_threads()
    conn.send(info)
    steps = {}
    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            key = (task["impl"], task["net"], task["batch"], task["dtype"], task.get("layer"))
            dtype = np.dtype(task["dtype"]).type
            first = key not in steps
            if first:
                impl, net, batch = key[:3]
                if task.get("layer"):  # one layer of the LeNet-style net (layer_times.py)
                    import layer_times

                    kind = layer_times.TorchLayer if impl == "torch" else layer_times.CnnLibLayer
                    steps[key] = kind(task["layer"], batch, dtype)
                elif impl == "torch":
                    steps[key] = TorchStep(net, batch, dtype)
                elif impl == "loops":
                    steps[key] = LoopStep(net, batch, dtype)
                else:  # "fast" and "fast_blas" differ only in their worker's threads
                    steps[key] = CnnLibStep(net, batch, dtype, "reference" if impl == "reference" else "fast")
            step = steps[key]
            for _ in range(task["warmup"] if first else 1):
                step()
            times, start = [], time.perf_counter()
            while len(times) < task["max_steps"] and (
                    len(times) < task["min_steps"] or time.perf_counter() - start < task["seconds"]):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            conn.send(("ok", times))
        except Exception:
            conn.send(("error", traceback.format_exc()))


class Worker:
    """A process that runs measurements; ``env`` is set for it only (read when NumPy loads)."""

    def __init__(self, kind, threads, env):
        self.conn, child = mp.get_context("spawn").Pipe()
        self.process = _spawn(_worker, (kind, threads, child), env)
        self.info = self.conn.recv()

    def measure(self, task):
        self.conn.send(task)
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"worker failed on {task}:\n{value}")
        return value

    def close(self):
        self.conn.send(None)
        self.process.join(timeout=10)


# ----------------------------------------------------------------------------- the throughput run


def plan():
    """Every configuration to measure: (impl, net, batch, dtype) plus its step budget."""
    batches = (1, 32, 128)
    configs = []
    for net in NETS:
        for dtype in ("float32", "float64"):
            for batch in batches:
                for impl in ("fast", "torch") + (("fast_blas",) if batch > 1 else ()):
                    configs.append(dict(impl=impl, net=net, batch=batch, dtype=dtype))
            # loops: one image at a time, a Python iteration per pixel; reference: loop kernels
            configs.append(dict(impl="reference", net=net, batch=1, dtype=dtype, warmup=1, min_steps=1,
                                max_steps=3, seconds=1.0))
            if net == "tutorial":
                configs.append(dict(impl="loops", net=net, batch=1, dtype=dtype, warmup=1, min_steps=3))
    return configs


WORKER_OF = {"fast": "numpy", "reference": "numpy", "loops": "numpy", "fast_blas": "numpy_blas",
             "torch": "torch"}


def fast_env(args, cnn_lib_threads=None):
    """Environment of a cnn_lib worker. By default cnn_lib's own setting: its threads, one per
    core, each running whole slices of the batch, with BLAS kept to one thread meanwhile
    (cnn_lib.kernels.fast.single_threaded_blas)."""
    t = str(args.threads)
    return {"OPENBLAS_NUM_THREADS": t, "CNN_LIB_NUM_THREADS": str(cnn_lib_threads or t)}


def run_throughput(args, torch_available):
    workers = {
        "numpy": Worker("numpy", args.threads, fast_env(args)),
        # the other way: BLAS threads inside each matrix product, everything else on one core
        "numpy_blas": Worker("numpy", args.threads, fast_env(args, cnn_lib_threads=1)),
    }
    if torch_available:
        workers["torch"] = Worker("torch", args.threads, {})
    configs = [c for c in plan() if (torch_available or c["impl"] != "torch") and c["net"] in args.nets
               and c["batch"] in args.batches and c["dtype"] in args.dtypes and c["impl"] in args.impls]
    results = {}
    reference_rounds = 1 if args.quick else min(args.rounds, 3)
    for r in range(args.rounds):
        order = configs if r % 2 == 0 else _swap_pairs(configs)  # alternate who goes first
        for c in order:
            if c["impl"] == "reference" and r >= reference_rounds:
                continue
            task = dict(warmup=2, min_steps=3, max_steps=10_000, seconds=args.block)
            task.update(c)
            worker = workers[WORKER_OF[c["impl"]]]
            times = worker.measure(task)
            key = (c["impl"], c["net"], c["batch"], c["dtype"])
            results.setdefault(key, {})[r] = c["batch"] / float(np.median(times))
            time.sleep(args.pause)
        done = sum(len(v) for v in results.values())
        print(f"  round {r + 1}/{args.rounds} done ({done} blocks)", flush=True)
    info = {kind: w.info for kind, w in workers.items()}
    for w in workers.values():
        w.close()
    return results, info


def _swap_pairs(configs):
    """The same list with each (fast, torch) pair reversed."""
    out = list(configs)
    for i in range(len(out) - 1):
        if out[i]["impl"] == "fast" and out[i + 1]["impl"] == "torch":
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def run_layers(args, torch_available):
    """Each layer of the LeNet-style net on its own, cnn_lib vs PyTorch (layer_times.py):
    {(impl, batch, layer): [seconds per forward + backward, one median per round]}."""
    from layer_times import LAYERS

    workers = {"fast": Worker("numpy", args.threads, fast_env(args))}
    if torch_available:
        workers["torch"] = Worker("torch", args.threads, {})
    batches = [b for b in args.batches if b > 1]
    results = {}
    for r in range(args.layer_rounds):
        for batch in batches:
            for name, _ in LAYERS:
                for impl in (list(workers) if r % 2 == 0 else list(workers)[::-1]):
                    task = dict(impl=impl, net="lenet", batch=batch, dtype="float32", layer=name,
                                warmup=3, min_steps=5, max_steps=10_000, seconds=args.block / 3)
                    times = workers[impl].measure(task)
                    results.setdefault((impl, batch, name), []).append(float(np.median(times)))
                    time.sleep(args.pause / 4)
        print(f"  round {r + 1}/{args.layer_rounds} done", flush=True)
    for w in workers.values():
        w.close()
    return results


# ----------------------------------------------------------------------------- full MNIST run


def _mnist_worker(path, epochs, batch, subset, conn):
    """Train the LeNet-style net with cnn_lib on full MNIST; report accuracy, time and memory.

    Memory: the peak resident set size (VmHWM) of this process, reset at the start of every
    epoch and read before each test evaluation, so "training peak" covers training steps only.
    """
    import resource

    from cnn_lib import SGD, SoftmaxCrossEntropy
    from cnn_lib.data import find_dataset_dir, iterate_minibatches, load_mnist

    def status_mb(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB -> MiB
        return float("nan")

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # Linux: resets VmHWM to the current RSS
            return True
        except OSError:
            return False

    try:
        folder = find_dataset_dir("mnist", path)
    except FileNotFoundError as e:  # its message says where it looked and how to get the files
        conn.send(("missing", str(e)))
        return
    x_train, y_train, x_test, y_test = load_mnist("full", path=folder, normalize="standard",
                                                  dtype=np.float32, subset=subset)
    model = cnn_lib_net("lenet", np.float32, seed=0)
    loss_fn = SoftmaxCrossEntropy()
    opt = SGD(model.parameters(), lr=MNIST_LR, momentum=MNIST_MOMENTUM)
    rng = np.random.default_rng(0)
    eval_batch = 250
    peaks = {"train": 0.0, "eval": 0.0}

    def test_accuracy():
        peaks["train"] = max(peaks["train"], status_mb("VmHWM"))
        correct = 0
        for start in range(0, len(y_test), eval_batch):
            logits = model.forward(x_test[start:start + eval_batch])
            correct += int((logits.argmax(axis=1) == y_test[start:start + eval_batch]).sum())
        peaks["eval"] = max(peaks["eval"], status_mb("VmHWM"))
        reset_peak()
        return correct / len(y_test)

    out = dict(path=str(folder), n_train=len(y_train), n_test=len(y_test), batch=batch,
               eval_batch=eval_batch, lr=MNIST_LR, momentum=MNIST_MOMENTUM,
               rss_after_load_mb=status_mb("VmRSS"), points=[], epochs=[],
               peak_resets=reset_peak())
    n_batches = math.ceil(len(y_train) / batch)
    checkpoints = {n_batches // 4, n_batches // 2}  # two extra points in the first epoch
    train_time = 0.0
    for epoch in range(1, epochs + 1):
        peaks["train"] = peaks["eval"] = 0.0
        reset_peak()
        epoch_start = time.perf_counter()
        t0 = time.perf_counter()
        for b, (xb, yb) in enumerate(iterate_minibatches(x_train, y_train, batch, shuffle=True, rng=rng)):
            opt.zero_grad()  # backward adds into grads
            loss_fn.forward(model.forward(xb), yb)
            model.backward(loss_fn.backward(), need_input_grad=False)
            opt.step()
            if epoch == 1 and b + 1 in checkpoints:
                train_time += time.perf_counter() - t0
                out["points"].append(dict(epoch=round((b + 1) / n_batches, 2), train_seconds=train_time,
                                          test_accuracy=test_accuracy()))
                t0 = time.perf_counter()
        train_time += time.perf_counter() - t0
        out["points"].append(dict(epoch=epoch, train_seconds=train_time, test_accuracy=test_accuracy()))
        out["epochs"].append(dict(epoch=epoch, seconds=time.perf_counter() - epoch_start,
                                  train_peak_mb=peaks["train"], eval_peak_mb=peaks["eval"],
                                  rss_mb=status_mb("VmRSS"),
                                  maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        conn.send(("progress", out["points"][-1]))
    conn.send(("ok", out))


def _spawn(target, args, env):
    """Start ``target(*args)`` in a fresh process with ``env`` added to its environment."""
    ctx = mp.get_context("spawn")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        process = ctx.Process(target=target, args=args, daemon=True)
        process.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return process


def run_mnist(args):
    # --mnist-dir; else the course machines' copy next to the repository, when it is there;
    # else (None) wherever load_mnist looks: $CNN_LIB_MNIST_DIR and the folder that
    # `python -m cnn_lib.data download` fills
    path = args.mnist_dir
    course_copy = ROOT.parent / "shared" / "data" / "mnist"
    if path is None and not os.environ.get("CNN_LIB_MNIST_DIR") and course_copy.is_dir():
        path = str(course_copy)
    conn, child = mp.get_context("spawn").Pipe()
    subset = (2000, 1000) if args.quick else None
    # the same threads as the "cnn_lib fast" column
    process = _spawn(_mnist_worker, (path, args.mnist_epochs, 128, subset, child), fast_env(args))
    while True:
        status, value = conn.recv()
        if status == "progress":
            print(f"  epoch {value['epoch']}: {value['train_seconds']:.0f} s, "
                  f"test accuracy {value['test_accuracy']:.4f}", flush=True)
            continue
        break
    process.join(timeout=30)
    if status == "missing":
        raise FileNotFoundError(value)
    if status != "ok":
        raise RuntimeError(value)
    return value


# ----------------------------------------------------------------------------- report


def _fmt_rate(per_round):
    """{round: images/s} -> "median (min–max)"."""
    if not per_round:
        return "—"
    v = sorted(per_round.values())
    med = float(np.median(v))
    if len(v) == 1:
        return _num(med)
    return f"{_num(med)} ({_num(v[0])}–{_num(v[-1])})"


def _num(x):
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.0f}"
    return f"{x:.2g}" if x < 1 else f"{x:.1f}"


def _ratio(results, a, b):
    """median(a) / median(b), with the min-max of per-round ratios when both ran each round."""
    if a not in results or b not in results:
        return "—"
    ra, rb = results[a], results[b]
    main = float(np.median(list(ra.values()))) / float(np.median(list(rb.values())))
    common = sorted(set(ra) & set(rb))
    per_round = [ra[r] / rb[r] for r in common]
    fmt = "{:.2f}" if main < 10 else "{:,.0f}"
    text = f"**{fmt.format(main)}**"
    if len(per_round) > 1:
        text += f" ({fmt.format(min(per_round))}–{fmt.format(max(per_round))})"
    return text


def machine_info():
    cpu = platform.processor() or "?"
    flags, family, model, cache = "", "", "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name":
                    cpu = value
                elif key == "cpu family":
                    family = value
                elif key == "model":
                    model = value
                elif key == "cache size":
                    cache = value
                elif key == "flags":
                    flags = " " + value
                    break
    except OSError:
        pass
    if family:  # model names of virtual machines are often vague ("AMD EPYC"); this is not
        cpu += f" (cpu family {family}, model {model}" + (f", cache size {cache}" if cache else "") + ")"
    simd = [s for s in ("avx512f", "avx2", "fma") if f" {s}" in flags]
    mem = "?"
    try:
        mem = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    commit = "?"
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        pass
    return dict(cpu=cpu, cores=os.cpu_count(), simd=" ".join(simd) or "?", memory=mem,
                os=platform.platform(), python=platform.python_version(), numpy=np.__version__,
                commit=commit)


def _ms(x):
    return "" if x is None else f"{x:.3f}" if x < 1 else f"{x:.2f}"


def _layer_report(layers, results):
    """The per-layer section: where a LeNet-style training step spends its time."""
    from layer_times import LAYERS

    torch_ok = any(k[0] == "torch" for k in layers)
    lines = ["## Where the time goes: the LeNet-style net layer by layer (float32)", "",
             "Each layer on its own, at the shape it has in the net: forward + backward, in "
             "milliseconds (median over rounds; each round's value is a median over calls). "
             "conv1 skips dL/dx on both sides; `loss` is softmax cross-entropy, `sgd` the optimizer "
             "step over all parameters. In a training step `Sequential` runs conv1, relu1 and pool1 "
             "as one pass, and conv2, relu2 and pool2 as another; here each layer runs alone. The "
             "sum is not the step time of the table above: there the layers also pass their outputs "
             "through the CPU caches to one another, and the memory each array needs is fresh.", ""]
    batches = sorted({k[1] for k in layers})
    head, sep = "| layer |", "|---|"
    for b in batches:
        head += f" cnn_lib, batch {b} |" + (f" PyTorch, batch {b} | cnn_lib / PyTorch |" if torch_ok else "")
        sep += "---:|" + ("---:|---:|" if torch_ok else "")
    lines += [head, sep]
    total = {}
    for name, _ in LAYERS + (("sum", None),):
        row = f"| {'**sum**' if name == 'sum' else name} |"
        for b in batches:
            ms = {}
            for impl in ("fast", "torch"):
                if name == "sum":
                    ms[impl] = total.get((impl, b))
                elif (impl, b, name) in layers:
                    ms[impl] = 1000 * float(np.median(layers[(impl, b, name)]))
                    total[(impl, b)] = total.get((impl, b), 0.0) + ms[impl]
            row += f" {_ms(ms.get('fast'))} |"
            if torch_ok:
                ratio = (f"{ms['fast'] / ms['torch']:.2f}" if ms.get("fast") and ms.get("torch") else "")
                row += f" {_ms(ms.get('torch'))} | {ratio} |"
        lines.append(row)
    steps = []
    for b in batches:
        for impl, label in (("fast", "cnn_lib"), ("torch", "PyTorch")):
            rates = results.get((impl, "lenet", b, "float32"))
            if rates:
                step_ms = 1000 * b / float(np.median(list(rates.values())))
                steps.append(f"{label} {step_ms:.2f} ms at batch {b}")
    lines += ["", "cnn_lib / PyTorch is a ratio of *times*: above 1, cnn_lib is slower on that layer."
              + (f" Whole training steps, from the table above: {'; '.join(steps)}." if steps else ""), ""]
    return lines


def build_report(args, results, info, mnist, machine, started, load, layers=None):
    torch_ok = "torch" in info
    lines = []
    cmd = "python benchmarks/bench_training.py" + (" --quick" if args.quick else "")
    extra = [a for a in sys.argv[1:] if a != "--quick"]
    if extra:
        cmd += " " + " ".join(extra)
    np_info = info["numpy"]
    lines += [
        "# Training throughput: cnn_lib vs PyTorch vs loops",
        "",
        f"Command (from the repository root): `{cmd}`  ",
        f"Date: {started:%Y-%m-%d %H:%M} UTC, git `{machine['commit']}`  ",
        f"Machine: {machine['cpu']}, {machine['cores']} cores ({machine['simd']}), {machine['memory']} RAM, "
        f"{machine['os']}  ",
        f"Python {machine['python']}, NumPy {machine['numpy']} with {np_info.get('numpy_blas')} "
        f"(kernel {np_info.get('openblas_core', '?')})"
        + (f"; PyTorch {info['torch']['torch']} ({info['torch']['torch_blas']}, "
           f"CPU capability {info['torch']['torch_cpu']}, {info['torch']['torch_threads']} threads)"
           if torch_ok else "; PyTorch not installed") + "  ",
        f"Load average (1 min) before / after: {load[0]:.2f} / {load[1]:.2f}"
        + (f"; removed from the environment: `{os.environ['CNN_BENCH_REMOVED_ENV']}`"
           if os.environ.get("CNN_BENCH_REMOVED_ENV") else ""),
        "",
        f"One step = forward + softmax cross-entropy + backward + plain SGD (lr {LR}) on MNIST digits. "
        f"Images per second: median over {args.rounds} interleaved rounds (min–max); ratios: median / median "
        f"(min–max of the per-round ratios). cnn_lib's first layer skips dL/dx "
        f"(`model.backward(dy, need_input_grad=False)`), as PyTorch does for an input that needs no grad.",
        "",
        f"Threads: {args.threads} on every side. **cnn_lib fast**: cnn_lib's default, "
        f"{np_info.get('cnn_lib_threads')} threads of its own, each on slices of the batch, with NumPy's "
        f"BLAS kept to one thread while they work. **cnn_lib fast, BLAS threads**: the other way to use "
        f"the cores (`CNN_LIB_NUM_THREADS=1`): OpenBLAS with {info['numpy_blas'].get('openblas_threads')} "
        f"threads inside each matrix product and everything else on one core. **PyTorch**: "
        f"`torch.set_num_threads({args.threads})`.",
        "",
    ]
    for net in NETS:
        lines += [f"## {NET_TEXT[net]}", ""]
        head = ("| dtype | batch | cnn_lib fast | PyTorch | fast / PyTorch | cnn_lib fast, BLAS threads "
                "| BLAS threads / PyTorch | cnn_lib reference | fast / reference |")
        sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        if net == "tutorial":
            head += " tutorial loops | fast / loops |"
            sep += "---:|---:|"
        lines += [head, sep]
        for dtype in ("float32", "float64"):
            for batch in (1, 32, 128):
                fast, torch_ = ("fast", net, batch, dtype), ("torch", net, batch, dtype)
                blas = ("fast_blas", net, batch, dtype)
                ref, loops = ("reference", net, 1, dtype), ("loops", net, 1, dtype)
                if not any(k in results for k in (fast, torch_, blas)):
                    continue
                row = (f"| {dtype} | {batch} | {_fmt_rate(results.get(fast))} | "
                       f"{_fmt_rate(results.get(torch_))} | {_ratio(results, fast, torch_)} | "
                       f"{_fmt_rate(results.get(blas))} | {_ratio(results, blas, torch_)} | ")
                row += (f"{_fmt_rate(results.get(ref))} | {_ratio(results, fast, ref)} |" if batch == 1
                        else " | |")
                if net == "tutorial":
                    row += f" {_fmt_rate(results.get(loops))} | {_ratio(results, fast, loops)} |"
                lines.append(row)
        lines.append("")
    lines += ["fast / loops compares cnn_lib at each batch size with the loops at batch 1 (they train on "
              "one image at a time); the reference kernels are timed at batch 1 only, in the first "
              f"{min(args.rounds, 3)} round(s).", "",
              "Reading the numbers: every value is a median over rounds that alternate between the "
              "libraries, and the brackets show how far single rounds strayed. Other processes on the "
              "machine (see the load average) slow whichever side happens to run at that moment, and "
              "threads that wait for each other suffer most; compare ratios, not single values. The "
              "**cnn_lib fast** column is what `cnn_lib` does with no setting at all; "
              "`CNN_LIB_NUM_THREADS` changes its number of threads.", ""]
    if layers:
        lines += _layer_report(layers, results)
    if mnist:
        ep = mnist["epochs"]
        lines += [
            "## Full MNIST: accuracy vs training time, and memory (cnn_lib fast, LeNet-style net, float32)",
            "",
            f"{mnist['n_train']:,} training / {mnist['n_test']:,} test images, batch {mnist['batch']}, "
            f"SGD lr {mnist['lr']} momentum {mnist['momentum']}, standardised inputs, run in a fresh "
            "process. Training time excludes the test evaluations.",
            "",
            "| epochs | training time (s) | test accuracy |",
            "|---:|---:|---:|",
        ]
        lines += [f"| {p['epoch']} | {p['train_seconds']:.1f} | {p['test_accuracy']:.4f} |"
                  for p in mnist["points"]]
        lines += [
            "",
            f"Resident memory of that process (MiB; evaluation in batches of {mnist['eval_batch']}):",
            "",
            "| | training steps: peak | test evaluation: peak | at the end of the epoch |",
            "|---|---:|---:|---:|",
            f"| after loading MNIST and building the model | | | {mnist['rss_after_load_mb']:.0f} |",
        ]
        lines += [f"| epoch {e['epoch']} ({e['seconds']:.0f} s with evaluation) | {e['train_peak_mb']:.0f} | "
                  f"{e['eval_peak_mb']:.0f} | {e['rss_mb']:.0f} |" for e in ep]
        growth = ep[-1]["train_peak_mb"] - ep[0]["train_peak_mb"]
        working = ep[0]["train_peak_mb"] - mnist["rss_after_load_mb"]
        verdict = ("it does not grow with the epochs" if growth <= max(16.0, 0.1 * working)
                   else "it GROWS with the epochs")
        lines += ["", f"Training needs {working:.0f} MiB on top of the data, the interpreter and "
                      f"the libraries ({mnist['rss_after_load_mb']:.0f} MiB); its peak changes by "
                      f"{growth:+.0f} MiB from epoch 1 to epoch {ep[-1]['epoch']}: {verdict}."
                  + ("" if mnist.get("peak_resets") else " (This kernel cannot reset the peak, so the "
                     "columns are the process's peak so far.)"), ""]
    return "\n".join(lines)


# the options that choose a subset, and the names each accepts
SUBSETS = {"nets": NETS, "batches": ("1", "32", "128"), "dtypes": ("float32", "float64"),
           "impls": ("fast", "torch", "fast_blas", "reference", "loops")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, short blocks, MNIST subset")
    from cnn_lib.kernels.fast.threads import usable_cores  # what cnn_lib starts one thread per

    parser.add_argument("--threads", type=int, default=usable_cores(),
                        help="threads for cnn_lib, NumPy's BLAS and PyTorch (default: the cores this "
                             "process may use, as cnn_lib counts them)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, quick 1)")
    parser.add_argument("--block", type=float, default=None,
                        help="seconds per measurement block (default 0.6, quick 0.15)")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds of pause between blocks")
    for name, allowed in SUBSETS.items():
        parser.add_argument(f"--{name}", default=",".join(allowed), help=f"subset of: {','.join(allowed)}")
    parser.add_argument("--no-layers", action="store_true",
                        help="skip the layer-by-layer timing of the LeNet-style net")
    parser.add_argument("--no-mnist", action="store_true", help="skip the full-MNIST run")
    parser.add_argument("--mnist-epochs", type=int, default=2)
    parser.add_argument("--mnist-dir", default=None,
                        help="folder with the four MNIST IDX files (default: $CNN_LIB_MNIST_DIR, else "
                             "../shared/data/mnist next to the repository, else the folder that "
                             "`python -m cnn_lib.data download` fills)")
    parser.add_argument("--output", default=None,
                        help="markdown report to write (default: benchmarks/RESULTS.md for a full run, "
                             "none for --quick)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 7)
    for name, allowed in SUBSETS.items():
        chosen = getattr(args, name).split(",")
        unknown = [c for c in chosen if c not in allowed]
        if unknown:
            parser.error(f"--{name}: unknown {', '.join(unknown)}; choose from {','.join(allowed)}")
        setattr(args, name, chosen)
    args.batches = [int(b) for b in args.batches]
    args.block = args.block or (0.15 if args.quick else 0.6)
    args.layer_rounds = 1 if args.quick else min(args.rounds, 5)
    # Every worker process inherits these; NumPy's OpenBLAS and PyTorch's OpenMP read them at start.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    try:
        import torch  # noqa: F401

        torch_available = True
    except ImportError:
        torch_available = False
    machine = machine_info()
    print(f"{machine['cpu']}, {machine['cores']} cores; NumPy {np.__version__}; "
          f"{'PyTorch available' if torch_available else 'PyTorch not installed'}; threads {args.threads}",
          flush=True)

    print("throughput (interleaved rounds):", flush=True)
    results, info = run_throughput(args, torch_available)
    layers = None
    if not args.no_layers and "lenet" in args.nets and "float32" in args.dtypes and max(args.batches) > 1:
        print("the LeNet-style net layer by layer:", flush=True)
        layers = run_layers(args, torch_available)
    mnist = None
    if not args.no_mnist:
        print("full MNIST, cnn_lib fast, LeNet-style net:", flush=True)
        try:
            mnist = run_mnist(args)
        except FileNotFoundError as e:  # no full MNIST here: say where to get it, keep the rest
            print("  skipped: " + str(e).replace("\n", "\n  "), flush=True)
        except Exception as e:  # keep the throughput results
            print(f"  skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
    load_after = os.getloadavg()[0]
    report = build_report(args, results, info, mnist, machine, started, (load_before, load_after), layers)
    print()
    print(report)
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    output = args.output or (None if args.quick else str(Path(__file__).resolve().parent / "RESULTS.md"))
    if output:
        Path(output).write_text(report + "\n")
        raw = dict(results={"|".join(map(str, k)): v for k, v in results.items()}, info=info, mnist=mnist,
                   layer_seconds={"|".join(map(str, k)): v for k, v in (layers or {}).items()},
                   machine=machine, argv=sys.argv[1:])
        Path(output).with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
        print(f"wrote {output} and {Path(output).with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
