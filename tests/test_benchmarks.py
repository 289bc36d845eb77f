"""The benchmark scripts still run (they are not part of the test run otherwise).

Nothing here is timed: these check that benchmarks/ works as its README command says, and
that its layer-by-layer cases compute what the training step computes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import layer_times  # noqa: E402


@pytest.mark.parametrize("name", [name for name, _ in layer_times.LAYERS])
def test_every_cnn_lib_layer_case_runs(name):
    case = layer_times.CnnLibLayer(name, 3, np.float32)
    case()
    if name not in ("loss", "sgd"):
        assert case.layer.forward(case.x).shape == case.dy.shape
        for key, grad in case.layer.grads.items():
            assert grad.dtype == np.float32 and np.isfinite(grad).all(), key


@pytest.mark.parametrize("name", [name for name, _ in layer_times.LAYERS])
def test_every_torch_layer_case_runs(name):
    pytest.importorskip("torch")
    case = layer_times.TorchLayer(name, 3, np.float32)
    case()
    if name not in ("loss", "sgd"):
        assert (case.x.grad is None) == (name == "conv1")  # the images need no gradient


def test_quick_benchmark_writes_a_report(tmp_path):
    out = tmp_path / "report.md"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_training.py"), "--quick", "--nets", "lenet",
         "--batches", "1,32", "--dtypes", "float32", "--impls", "fast,torch", "--no-mnist",
         "--block", "0.05", "--output", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Warning" not in run.stderr, run.stderr[-3000:]  # e.g. gradients never cleared
    report = out.read_text()
    assert "| float32 | 32 |" in report
    assert "## Where the time goes" in report and "| conv2 |" in report
    assert out.with_suffix(".json").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--impls", "fast,pytorch", "--impls: unknown pytorch; choose from fast,torch,fast_blas,reference,loops"),
    ("--batches", "32,64", "--batches: unknown 64; choose from 1,32,128"),
])
def test_a_misspelt_subset_is_refused_by_name(option, value, message):
    # an unknown name would otherwise select nothing and give empty tables
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_training.py"), option, value],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 2 and message in run.stderr, run.stderr[-2000:]


MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"


@pytest.mark.skipif(not MNIST_DIR.is_dir(),
                    reason="full MNIST is not beside the repository (../shared/data/mnist)")
def test_the_benchmarks_mnist_run_really_learns(tmp_path):
    """The accuracy-vs-time run trains for real: a wrong training loop (say, gradients never
    cleared) would still time fine but learn nothing."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_training.py"), "--quick", "--nets", "tutorial",
         "--batches", "32", "--dtypes", "float32", "--impls", "fast", "--no-layers", "--block", "0.05",
         "--mnist-dir", str(MNIST_DIR), "--output", str(tmp_path / "report.md")],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Warning" not in run.stderr, run.stderr[-3000:]
    accuracies = [float(a) for a in re.findall(r"test accuracy (0\.\d+)", run.stdout)]
    assert accuracies and accuracies[-1] > 0.8, run.stdout[-2000:]


def test_gan_benchmark_quick_run_reports_the_step_and_its_layers(tmp_path):
    out = tmp_path / "gan.md"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gan.py"), "--quick", "--no-torch",
                          "--refine", "1", "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = out.read_text()
    assert "| cnn_lib |" in report and "QUICK RUN" in report and "1 k3 s1 layer(s) more" in report
    assert "| G | 4: ConvTranspose2d |" in report and "| D | 2: Conv2d |" in report
    assert "| G | 7: ConvTranspose2d |" in report  # the extra layer


@pytest.mark.parametrize("refine", [0, 1])
def test_the_gan_benchmarks_torch_twin_has_the_same_shapes(refine):
    torch = pytest.importorskip("torch")
    import bench_gan

    from cnn_lib import gan

    gen_t, disc_t = bench_gan.torch_nets(refine)
    gen = gan.generator(bench_gan.LATENT, bench_gan.WIDTH, rng=0, refine=refine)
    disc = gan.discriminator(bench_gan.WIDTH, rng=0)
    for ours, theirs in ((gen, gen_t), (disc, disc_t)):
        assert [v.shape for v in ours.params.values()] == [tuple(p.shape) for p in theirs.parameters()]
    z = torch.randn(2, bench_gan.LATENT)
    assert tuple(disc_t(gen_t(z)).shape) == (2, 1)


@pytest.mark.parametrize("tile", [1, 3, 4, 7])
@pytest.mark.parametrize("side", [6, 14])
def test_winograd_probe_computes_the_convolution_and_its_gradients(tile, side):
    """The probe's timings in RUNS.md mean something only if it computes the same layer."""
    import winograd_probe

    from cnn_lib.kernels import reference

    rng = np.random.default_rng(side + tile)
    x = rng.standard_normal((3, 5, side, side))
    weight = rng.standard_normal((4, 5, 4, 4))
    dy = rng.standard_normal((3, 4, side // 2, side // 2))
    wino = winograd_probe.Winograd(side, min(tile, side // 2), dtype=np.float64)
    y, cache = wino.forward(x, weight)
    dx, dweight = wino.backward(dy, cache)
    y_ref, cache_ref = reference.conv2d_forward(x, weight, None, (2, 2), (1, 1))
    dx_ref, dweight_ref, _ = reference.conv2d_backward(dy, cache_ref)
    for got, want in ((y, y_ref), (dx, dx_ref), (dweight, dweight_ref)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(want).max())
