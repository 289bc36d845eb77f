"""The DCGAN training step of lesson 11 (cnn_lib.gan) against the same networks in PyTorch, in one
run; then where cnn_lib's time goes, layer by layer, and PyTorch's busiest operators.

Run from the repository root:

    python benchmarks/bench_gan.py              # ~1 minute; prints a Markdown report
    python benchmarks/bench_gan.py --quick      # smoke run, a few seconds
    python benchmarks/bench_gan.py --output /tmp/gan.md
    python benchmarks/bench_gan.py --refine 1   # the shipped generator's shape (one k3 s1 layer more)

What is timed: one step of ``gan.train_step`` (the discriminator on a real and a generated
batch, then the generator through the discriminator, Adam on both, lr 2e-4, betas (0.5,
0.999)), batch 64, float32, on real digits of the shipped sample; the networks are
``gan.generator(64, 64)`` and ``gan.discriminator(64)`` (533,889 and 138,689 parameters) and
their PyTorch twins below; ``--refine K`` adds the K extra k3 s1 layers of ``gan.generator(refine=K)``
(the shipped generator has one) to both. Each library runs in its own worker process with ``--threads``
threads (cnn_lib's own threads with BLAS at one thread meanwhile, PyTorch's
``set_num_threads``); the two alternate in ``--rounds`` rounds of about ``--block`` seconds
each, and a result is the median over rounds of each block's images/s (real images per
second). As in bench_training.py, OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE set for old OpenBLAS
builds on CI machines are removed first (the script restarts itself without them).
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout even when cnn_lib is not installed
sys.path.insert(0, str(HERE))

import bench_training  # noqa: E402  (machine_info, _spawn, the BLAS-override restart)

if __name__ == "__main__":
    bench_training._restart_without_blas_overrides()

import numpy as np  # noqa: E402

BATCH, LATENT, WIDTH, LR, BETAS = 64, 64, 64, 2e-4, (0.5, 0.999)


def real_batches(count=16, seed=0):
    """``count`` batches of sample digits in [-1, 1], float32 (N, 1, 28, 28)."""
    from cnn_lib import gan
    from cnn_lib.data import load_mnist

    x = load_mnist(normalize=None).x_train
    order = np.resize(np.random.default_rng(seed).permutation(len(x)), BATCH * count)
    return [np.ascontiguousarray(gan.to_tanh_range(x[order[i:i + BATCH]]))
            for i in range(0, BATCH * count, BATCH)]


class CnnLibGanStep:
    def __init__(self, refine=0):
        from cnn_lib import Adam, gan

        rng = np.random.default_rng(0)
        self.gan = gan
        self.gen = gan.generator(LATENT, WIDTH, rng=rng, refine=refine)
        self.disc = gan.discriminator(WIDTH, rng=rng)
        self.opt_g = Adam(self.gen.parameters(), lr=LR, betas=BETAS)
        self.opt_d = Adam(self.disc.parameters(), lr=LR, betas=BETAS)
        self.batches, self.noise, self.i = real_batches(), np.random.default_rng(1), 0

    def __call__(self):
        real = self.batches[self.i % len(self.batches)]
        self.i += 1
        z = self.noise.standard_normal((BATCH, LATENT)).astype(np.float32)
        self.gan.train_step(self.gen, self.disc, self.opt_g, self.opt_d, real, z)

    def layer_times(self, steps):
        """Seconds per step in each layer's forward and backward (wrapped timers), and the rest."""
        totals = {}

        def wrap(net_name, index, layer, method):
            original = getattr(layer, method)
            key = (net_name, index, type(layer).__name__, method)

            def timed(*args, **kwargs):
                t0 = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    totals[key] = totals.get(key, 0.0) + time.perf_counter() - t0

            setattr(layer, method, timed)

        for net_name, net in (("G", self.gen), ("D", self.disc)):
            net.fuse = False  # time each layer on its own (the DCGAN has no conv + ReLU + pool to fuse)
            for index, layer in enumerate(net.layers):
                for method in ("forward", "backward"):
                    wrap(net_name, index, layer, method)
        self()
        totals.clear()
        start = time.perf_counter()
        for _ in range(steps):
            self()
        whole = (time.perf_counter() - start) / steps
        per_step = {key: value / steps for key, value in totals.items()}
        return whole, per_step


def torch_nets(refine=0):
    import torch.nn as nn

    w2 = 2 * WIDTH
    extra = []
    for _ in range(refine):
        extra += [nn.ConvTranspose2d(WIDTH, WIDTH, 3, 1, 1, bias=False), nn.BatchNorm2d(WIDTH), nn.ReLU()]
    gen = nn.Sequential(
        nn.Linear(LATENT, w2 * 7 * 7, bias=False), nn.Unflatten(1, (w2, 7, 7)), nn.BatchNorm2d(w2), nn.ReLU(),
        nn.ConvTranspose2d(w2, WIDTH, 4, 2, 1, bias=False), nn.BatchNorm2d(WIDTH), nn.ReLU(), *extra,
        nn.ConvTranspose2d(WIDTH, 1, 4, 2, 1), nn.Tanh())
    disc = nn.Sequential(
        nn.Conv2d(1, WIDTH, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(WIDTH, w2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(w2), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(w2 * 7 * 7, 1))
    for module in list(gen.modules()) + list(disc.modules()):
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, 0.02)
    return gen, disc


class TorchGanStep:
    def __init__(self, refine=0):
        import torch

        torch.manual_seed(0)
        self.torch = torch
        self.gen, self.disc = torch_nets(refine)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=LR, betas=BETAS)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=LR, betas=BETAS)
        self.loss = torch.nn.BCEWithLogitsLoss()
        self.batches = [torch.from_numpy(b) for b in real_batches()]
        self.ones, self.zeros = torch.ones(BATCH, 1), torch.zeros(BATCH, 1)
        self.i = 0

    def __call__(self):
        real = self.batches[self.i % len(self.batches)]
        self.i += 1
        fake = self.gen(self.torch.randn(BATCH, LATENT))
        self.opt_d.zero_grad(set_to_none=True)
        d_loss = self.loss(self.disc(real), self.ones) + self.loss(self.disc(fake.detach()), self.zeros)
        d_loss.backward()
        self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        self.loss(self.disc(fake), self.ones).backward()  # D's gradients of this half are not used
        self.opt_g.step()

    def top_operators(self, steps, rows=8):
        from torch.profiler import ProfilerActivity, profile

        self()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                self()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        return [(e.key, e.self_cpu_time_total / steps / 1e6, e.self_cpu_time_total / total)
                for e in events[:rows]]


def _worker(kind, threads, conn, refine=0):
    try:
        if kind == "torch":
            import torch

            torch.set_num_threads(threads)
            step = TorchGanStep(refine)
            info = {"torch": torch.__version__, "torch_cpu": torch.backends.cpu.get_cpu_capability()}
        else:
            from cnn_lib import get_num_threads

            step = CnnLibGanStep(refine)
            info = {"cnn_lib_threads": get_num_threads()}
        step()
        step()  # warm-up
        conn.send(("ok", info))
        while True:
            task = conn.recv()
            if task is None:
                return
            if task[0] == "measure":
                seconds = task[1]
                times, start = [], time.perf_counter()
                while len(times) < 3 or time.perf_counter() - start < seconds:
                    t0 = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - t0)
                conn.send(("ok", times))
            elif task[0] == "layers":
                conn.send(("ok", step.layer_times(task[1])))
            elif task[0] == "operators":
                conn.send(("ok", step.top_operators(task[1])))
    except Exception:
        conn.send(("error", traceback.format_exc()))


class Worker:
    def __init__(self, kind, threads, env, refine=0):
        self.conn, child = mp.get_context("spawn").Pipe()
        self.process = bench_training._spawn(_worker, (kind, threads, child, refine), env)
        self.info = self.ask(None)

    def ask(self, task):
        if task is not None:
            self.conn.send(task)
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"benchmark worker failed:\n{value}")
        return value

    def close(self):
        self.conn.send(None)
        self.process.join(timeout=10)


def torch_available():
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def main(argv=None):
    from cnn_lib.kernels.fast.threads import usable_cores

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of short blocks")
    parser.add_argument("--threads", type=int, default=usable_cores(), help="threads of each library")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, quick 1)")
    parser.add_argument("--block", type=float, default=None, help="seconds per block (default 4, quick 0.3)")
    parser.add_argument("--no-torch", action="store_true", help="cnn_lib only")
    parser.add_argument("--refine", type=int, default=0, choices=range(0, 4), metavar="K",
                        help="K extra k3 s1 generator layers, as gan.generator(refine=K) (shipped: 1)")
    parser.add_argument("--output", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 5)
    block = args.block or (0.3 if args.quick else 4.0)
    t = str(args.threads)
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    cnn_lib_env = {"OPENBLAS_NUM_THREADS": t, "CNN_LIB_NUM_THREADS": t}
    workers = {"cnn_lib": Worker("cnn_lib", args.threads, cnn_lib_env, args.refine)}
    if torch_available() and not args.no_torch:
        workers["torch"] = Worker("torch", args.threads, {"OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t},
                                  args.refine)
    rates = {name: [] for name in workers}
    for r in range(rounds):
        order = list(workers) if r % 2 == 0 else list(workers)[::-1]
        for name in order:
            times = workers[name].ask(("measure", block))
            rates[name].append(BATCH / float(np.median(times)))
            time.sleep(0.2)
        print(f"  round {r + 1}/{rounds} done", flush=True)
    whole, layers = workers["cnn_lib"].ask(("layers", 2 if args.quick else 10))
    operators = workers["torch"].ask(("operators", 2 if args.quick else 10)) if "torch" in workers else None
    info = {name: w.info for name, w in workers.items()}
    for w in workers.values():
        w.close()

    machine = bench_training.machine_info()
    torch_info = info.get("torch")
    torch_text = f"; PyTorch {torch_info['torch']} ({torch_info['torch_cpu']})" if torch_info else ""
    shape = f", generator with {args.refine} k3 s1 layer(s) more" if args.refine else ""
    lines = [f"## DCGAN training step, batch {BATCH}, float32{shape} ({started})", "",
             f"CPU {machine['cpu']}, {args.threads} threads each; NumPy {machine['numpy']}, "
             f"git {machine['commit']}{torch_text}; {rounds} rounds of {block:g} s."
             + (" QUICK RUN: not a measurement." if args.quick else ""), "",
             "| library | images/s (median) | min-max over rounds | ms per step |", "|---|---:|---:|---:|"]
    for name, values in rates.items():
        med = float(np.median(values))
        lines.append(f"| {name} | {med:.0f} | {min(values):.0f}-{max(values):.0f} | "
                     f"{1000 * BATCH / med:.1f} |")
    if "torch" in rates:
        ratios = [a / b for a, b in zip(rates["cnn_lib"], rates["torch"])]
        ratio = np.median(rates["cnn_lib"]) / np.median(rates["torch"])
        lines += ["", f"**cnn_lib / PyTorch: {ratio:.2f}x** "
                      f"(per-round ratios {min(ratios):.2f}-{max(ratios):.2f})"]
    lines += ["", "Where cnn_lib's time goes (timers around every layer, no fusion; "
                  f"{1000 * whole:.1f} ms per step with the timers):", "",
              "| network | layer | forward ms | backward ms | share |", "|---|---|---:|---:|---:|"]
    by_layer = {}
    for (net_name, index, kind, method), seconds in layers.items():
        by_layer.setdefault((net_name, index, kind), {})[method] = seconds
    for (net_name, index, kind), parts in sorted(by_layer.items(), key=lambda kv: -sum(kv[1].values())):
        share = sum(parts.values()) / whole
        if share >= 0.01:
            lines.append(f"| {net_name} | {index}: {kind} | {1000 * parts.get('forward', 0):.2f} | "
                         f"{1000 * parts.get('backward', 0):.2f} | {share:.0%} |")
    rest = whole - sum(layers.values())
    lines.append(f"| | the rest (loss, Adam, Python) | | | {rest / whole:.0%} |")
    if operators:
        lines += ["", "PyTorch's busiest operators (torch.profiler, self CPU time per step):", "",
                  "| operator | ms | share |", "|---|---:|---:|"]
        lines += [f"| {key} | {1000 * seconds:.2f} | {share:.0%} |" for key, seconds, share in operators]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        Path(args.output).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
