"""The speed-ups of the fast kernels change no numbers and no behaviour.

* ``backward(dy, need_input_grad=False)`` (Sequential, Conv2d, ConvTranspose2d) fills the same
  gradients and returns None; the default still returns dL/dx.
* Kernels that work through a batch in slices, on several threads, agree with the loop
  reference whatever the slicing (forced here down to one image per slice).
* A Conv2d followed by a ReLU and/or a MaxPool2d runs fused in Sequential (one pass) with
  the same outputs, caches and (up to rounding) gradients as the layers one after the other.
* The helper threads: errors, Ctrl-C, nested and concurrent calls, forked processes, dynamic
  slices.
* float32 stays float32 everywhere.
No timing is asserted anywhere: speed is measured by benchmarks/bench_training.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from helpers import separated

from cnn_lib import (
    SGD,
    AvgPool2d,
    Conv2d,
    ConvTranspose2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
)
from cnn_lib import functional as F
from cnn_lib.layers import MaskAfterPooling

F64 = np.float64


def small_net(dtype=F64, first=None):
    layers = [first] if first is not None else []
    return Sequential(*layers, Conv2d(1, 3, 3, padding=1, rng=0, dtype=dtype), ReLU(), MaxPool2d(2),
                      Conv2d(3, 4, 3, stride=2, rng=1, dtype=dtype), ReLU(), Flatten(),
                      Linear(4 * 2 * 2, 5, rng=2, dtype=dtype))


def grads_after_backward(model, x, **kwargs):
    y = model.forward(x)
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(x.dtype)
    dx = model.backward(dy, **kwargs)
    return dx, {k: v.copy() for k, v in model.grads.items()}


# ----------------------------------------------------------------------------- need_input_grad


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("first", [None, Flatten(), ReLU(),
                                   ConvTranspose2d(1, 1, 3, padding=1, rng=3, dtype=F64)],
                         ids=["conv first", "flatten first", "relu first", "transposed conv first"])
def test_sequential_can_skip_the_input_gradient(impl, first):
    x = np.random.default_rng(0).standard_normal((2, 1, 10, 10))
    if isinstance(first, Flatten):  # Flatten, then a Linear layer as the first layer with parameters
        model = Sequential(Flatten(), Linear(100, 3, rng=0, dtype=F64), ReLU(),
                           Linear(3, 2, rng=1, dtype=F64))
    else:
        model = small_net(first=first)
    model.impl = impl
    dx, full = grads_after_backward(model, x)
    assert isinstance(dx, np.ndarray) and dx.shape == x.shape  # default: unchanged
    skipped, grads = grads_after_backward(model, x, need_input_grad=False)
    assert skipped is None
    assert grads.keys() == full.keys()
    for k in full:
        np.testing.assert_array_equal(grads[k], full[k], err_msg=k)


@pytest.mark.parametrize("cls", [Conv2d, ConvTranspose2d])
def test_conv_layers_can_skip_the_input_gradient(cls):
    layer = cls(2, 3, 3, stride=2, padding=1, rng=0, dtype=F64)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5))
    dx, full = grads_after_backward(layer, x)
    assert dx.shape == x.shape
    assert layer.backward(np.random.default_rng(1).standard_normal(layer.forward(x).shape),
                          need_input_grad=False) is None
    for k in full:
        np.testing.assert_array_equal(layer.grads[k], full[k], err_msg=k)


def test_skipping_works_with_nested_sequentials_and_foreign_layers():
    class Scale:  # a student's own layer: no need_input_grad argument, has parameters
        def __init__(self):
            self.params, self.grads = {"s": np.array([2.0])}, {}

        def forward(self, x):
            self.x = x
            return x * self.params["s"]

        def backward(self, dy):
            self.grads = {"s": np.array([np.sum(dy * self.x)])}
            return dy * self.params["s"]

    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6))
    nested = Sequential(Sequential(Conv2d(1, 2, 3, rng=0, dtype=F64), ReLU()), Flatten(),
                        Linear(32, 3, rng=1, dtype=F64))
    _, full = grads_after_backward(nested, x)
    skipped, grads = grads_after_backward(nested, x, need_input_grad=False)
    assert skipped is None
    for k in full:
        np.testing.assert_array_equal(grads[k], full[k], err_msg=k)

    foreign = Sequential(Scale(), Flatten(), Linear(36, 2, rng=0, dtype=F64))
    _, full = grads_after_backward(foreign, x)
    skipped, grads = grads_after_backward(foreign, x, need_input_grad=False)
    assert skipped is None
    np.testing.assert_array_equal(grads["0.s"], full["0.s"])  # its backward still ran


def test_a_network_without_parameters_has_nothing_to_do():
    model = Sequential(ReLU(), Flatten())
    y = model.forward(np.ones((2, 1, 3, 3)))
    assert model.backward(np.ones(y.shape), need_input_grad=False) is None


# ----------------------------------------------------------------------------- conv blocks fused


def unfused_copy(model):
    """The same network, run layer by layer (a plain loop never fuses)."""

    class LayerByLayer:
        def __init__(self, layers):
            self.layers = layers

        def forward(self, x):
            for layer in self.layers:
                x = layer.forward(x)
            return x

        def backward(self, dy):
            for layer in reversed(self.layers):
                dy = layer.backward(dy)
            return dy

    return LayerByLayer(model.layers)


def caches(model):
    """What every layer keeps for backward (the arrays in it); for a ReLU that ran fused under a
    pooling, the mask its own forward would have kept, as its backward rebuilds it."""
    out = []
    for layer in model:
        cache = layer._cache[1] if layer._cache is not None else None
        if isinstance(cache, MaskAfterPooling):
            cache = cache.full()
        items = cache if isinstance(cache, tuple) else (cache,)
        out.append([item.copy() for item in items if isinstance(item, np.ndarray)])
    return out


BLOCKS = {  # the layers after a Conv2d that run fused with it
    "relu": lambda: [ReLU()],
    "pool": lambda: [MaxPool2d(2)],
    "relu pool": lambda: [ReLU(), MaxPool2d(2)],
    "relu pool overlapping": lambda: [ReLU(), MaxPool2d(3, stride=2)],
    "relu pool gaps": lambda: [ReLU(), MaxPool2d(2, stride=3)],
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, F64])
@pytest.mark.parametrize("conv", [dict(c_in=1, k=3, stride=1, padding=1),
                                  dict(c_in=5, k=3, stride=2, padding=0),
                                  dict(c_in=4, k=(2, 3), stride=(1, 2), padding=(1, 0))],
                         ids=["few channels", "stride 2", "rectangular"])
@pytest.mark.parametrize("block", list(BLOCKS))
def test_a_fused_conv_block_gives_what_its_layers_give(monkeypatch, threads, dtype, conv, block):
    monkeypatch.setattr(F, "NUM_THREADS", threads)
    monkeypatch.setattr(F, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(F, "CHUNK_BYTES", 2048)  # several slices
    calls = []
    real = F.conv2d_block_forward
    monkeypatch.setattr(F, "conv2d_block_forward", lambda *a, **k: calls.append(k) or real(*a, **k))
    model = Sequential(Conv2d(conv["c_in"], 6, conv["k"], stride=conv["stride"], padding=conv["padding"],
                              rng=0, dtype=dtype), *BLOCKS[block](), Flatten())
    x = separated(np.random.default_rng(0), (5, conv["c_in"], 13, 12)).astype(dtype)
    x[0, :, :2] = 0  # zero inputs: outputs equal to the bias, exactly 0 when the bias is
    model[0].params["bias"][:2] = 0
    y = model.forward(x)
    assert calls == [dict(relu="relu" in block, pool=(model[-2].kernel_size, model[-2].stride)
                          if "pool" in block else None)], "Sequential did not fuse the block"
    kept = caches(model)
    if block.startswith("relu pool"):  # the ReLU ran on the pooled numbers: its mask is theirs
        relu_cache = model[1]._cache[1]
        assert isinstance(relu_cache, MaskAfterPooling)
        np.testing.assert_array_equal(relu_cache.pooled, y.reshape(model[2]._cache[2]) > 0)
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    dx = model.backward(dy)
    grads = {k: v.copy() for k, v in model.grads.items()}
    _, grads_skip = grads_after_backward(model, x, need_input_grad=False)

    plain = unfused_copy(model)
    y_plain = plain.forward(x)
    np.testing.assert_array_equal(y, y_plain)  # forward: the very same operations
    for fused_cache, plain_cache in zip(kept, caches(model)):  # every layer keeps what it always keeps
        for a, b in zip(fused_cache, plain_cache, strict=True):
            np.testing.assert_array_equal(a, b)
    # backward: the same operations on the same numbers, but a matrix product may round
    # differently when its input lies elsewhere in memory (OpenBLAS), so: up to rounding
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dx, plain.backward(dy), **tol)
    for k, v in model.grads.items():
        np.testing.assert_allclose(grads[k], v, err_msg=k, **tol)
    assert y.dtype == dx.dtype == dtype
    # need_input_grad=False with the fused block at the bottom: same weight gradients, no dx
    y2 = model.forward(x)
    assert model.backward(np.random.default_rng(1).standard_normal(y2.shape).astype(dtype),
                          need_input_grad=False) is None
    for k in grads_skip:
        np.testing.assert_allclose(model.grads[k], grads_skip[k], err_msg=k, **tol)


def test_blocks_are_found_all_through_a_network(monkeypatch):
    """The LeNet-style stack: two fused blocks forward, two backward, the same numbers."""
    calls = []
    real = F.conv2d_backward
    monkeypatch.setattr(F, "conv2d_backward",
                        lambda *a, **k: calls.append((k.get("relu_mask") is not None,
                                                      k.get("pool_cache") is not None)) or real(*a, **k))
    model = small_net()
    x = np.random.default_rng(0).standard_normal((3, 1, 10, 10))
    dy = np.random.default_rng(1).standard_normal(model.forward(x).shape)
    dx = model.backward(dy)
    assert calls == [(True, False), (True, True)]  # conv-ReLU on top, conv-ReLU-pool below
    np.testing.assert_allclose(dx, unfused_copy(model).backward(dy), rtol=1e-12, atol=1e-13)


def test_after_a_fused_forward_each_layer_can_go_back_on_its_own():
    conv, relu, pool = Conv2d(2, 3, 3, padding=1, rng=0, dtype=F64), ReLU(), MaxPool2d(2)
    model = Sequential(conv, relu, pool)
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6))
    y = model.forward(x)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx_fused = model.backward(dy)
    grads = {k: v.copy() for k, v in conv.grads.items()}
    dx_alone = conv.backward(relu.backward(pool.backward(dy)))  # the caches are the plain layers' caches
    np.testing.assert_allclose(dx_fused, dx_alone, rtol=1e-12, atol=1e-13)
    for k in grads:
        np.testing.assert_allclose(conv.grads[k], grads[k], rtol=1e-12, atol=1e-13)


def test_a_relu_fused_under_a_pooling_keeps_the_pooled_mask_and_can_still_go_back_alone():
    conv, relu, pool = Conv2d(2, 3, 3, padding=1, rng=0, dtype=F64), ReLU(), MaxPool2d(2)
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6))
    y = Sequential(conv, relu, pool).forward(x)
    kept = relu._cache[1]
    assert isinstance(kept, MaskAfterPooling) and kept.pooled.shape == y.shape == (2, 3, 3, 3)
    conv_y = F.conv2d_forward(x, conv.params["weight"], conv.params["bias"], (1, 1), (1, 1))[0]
    np.testing.assert_array_equal(kept.full(), conv_y > 0)  # the mask ReLU.forward keeps
    # the block's backward without its pooling (conv + ReLU alone) uses the rebuilt mask
    dy = np.random.default_rng(1).standard_normal(conv_y.shape)
    dx = conv.backward_fused(dy, relu, None)
    np.testing.assert_allclose(dx, conv.backward(dy * (conv_y > 0)), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("impls", [("reference", "fast", "fast"), ("fast", "reference", "fast"),
                                   ("reference", "reference", "reference")])
def test_no_fusion_with_a_layer_on_the_reference_kernels(monkeypatch, impls):
    seen = []
    real_forward, real_backward = F.conv2d_block_forward, F.conv2d_backward

    def block_forward(*args, **kwargs):
        seen.append(("forward", kwargs))
        return real_forward(*args, **kwargs)

    def backward(*args, relu_mask=None, pool_cache=None, **kwargs):
        seen.append(("backward", relu_mask is not None, pool_cache is not None))
        return real_backward(*args, relu_mask=relu_mask, pool_cache=pool_cache, **kwargs)

    monkeypatch.setattr(F, "conv2d_block_forward", block_forward)
    monkeypatch.setattr(F, "conv2d_backward", backward)
    conv, relu, pool = Conv2d(1, 2, 3, rng=0, dtype=F64), ReLU(), MaxPool2d(2)
    conv.impl, relu.impl, pool.impl = impls
    model = Sequential(conv, relu, pool, Flatten())
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6))
    y = model.forward(x)
    dx = model.backward(np.ones(y.shape))
    assert dx.shape == x.shape
    if impls[0] == "reference":  # a reference conv fuses nothing
        assert not seen
    else:  # conv and pool are fast, but the reference ReLU in between keeps the layers apart
        assert seen == [("forward", {}), ("backward", False, False)]  # Conv2d.forward, alone
    # forward run by hand with a reference ReLU (its cache is x, not a mask), backward through
    # Sequential: still not fused
    conv.impl, relu.impl, pool.impl = "fast", "reference", "fast"
    pool.forward(relu.forward(conv.forward(x)))
    conv.impl, relu.impl = "fast", "fast"
    seen.clear()
    assert model.backward(np.ones(y.shape)).shape == x.shape
    assert seen == [("backward", False, False)]


def test_a_reference_pool_after_a_fast_conv_and_relu_leaves_them_fused(monkeypatch):
    conv, relu, pool = Conv2d(1, 2, 3, rng=0, dtype=F64), ReLU(), MaxPool2d(2)
    pool.impl = "reference"
    model = Sequential(conv, relu, pool)
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6))
    y = model.forward(x)
    assert conv._cache[0] is F and relu._cache[0] is F and pool._cache[0] is not F
    dx = model.backward(np.ones(y.shape))
    np.testing.assert_allclose(dx, unfused_copy(model).backward(np.ones(y.shape)), rtol=1e-12)


def test_fused_forward_rejects_bad_input_like_the_layers_and_changes_nothing():
    model = Sequential(Conv2d(3, 2, 3, rng=0, dtype=F64), ReLU(), MaxPool2d(4))
    with pytest.raises(ValueError, match="channel"):
        model.forward(np.ones((1, 2, 5, 5)))
    with pytest.raises(ValueError, match="larger than the padded input"):
        model.forward(np.ones((1, 3, 2, 2)))
    with pytest.raises(ValueError, match="MaxPool2d: window 4x4 is larger than the input 3x3"):
        model.forward(np.ones((1, 3, 5, 5)))  # the conv's output is too small for the pool
    assert all(layer._cache is None for layer in model)
    with pytest.raises(RuntimeError, match="forward"):
        model.backward(np.ones((1, 2, 1, 1)))
    model.forward(np.ones((1, 3, 6, 6)))
    with pytest.raises(ValueError, match="MaxPool2d.backward: dy must have the shape"):
        model.backward(np.ones((1, 2, 4, 4)))  # the conv's output shape, not the block's


# ----------------------------------------------------------------------------- slices and threads


@pytest.fixture(params=[(1, 1), (2, 2), (3, 3)], ids=["1 thread", "2 threads", "3 threads"])
def sliced(request, monkeypatch):
    """Tiny slices (a few images each, however small the input) on 1-3 threads."""
    threads, _ = request.param
    monkeypatch.setattr(F, "CHUNK_BYTES", 1)  # every image its own slice
    monkeypatch.setattr(F, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(F, "PARALLEL_MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(F, "NUM_THREADS", threads)
    return threads


def fast_and_reference(layer, x):
    out = {}
    for impl in ("fast", "reference"):
        layer.impl = impl
        y = layer.forward(x.copy())
        dx = layer.backward(np.random.default_rng(2).standard_normal(y.shape))
        out[impl] = (y, dx, {k: v.copy() for k, v in layer.grads.items()})
    for a, b in zip(out["fast"][:2], out["reference"][:2]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    for k in out["reference"][2]:
        np.testing.assert_allclose(out["fast"][2][k], out["reference"][2][k], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make", [
    lambda: Conv2d(3, 4, 3, padding=1, rng=0, dtype=F64),
    lambda: Conv2d(3, 2, (2, 3), stride=(2, 1), padding=(0, 2), bias=False, rng=1, dtype=F64),
    lambda: Conv2d(3, 5, 3, rng=2, dtype=F64),
    lambda: ConvTranspose2d(3, 2, 4, stride=2, padding=1, rng=3, dtype=F64),
    lambda: MaxPool2d(2),
    lambda: MaxPool2d(3, stride=2),  # overlapping windows
    lambda: MaxPool2d(2, stride=3),  # rows and columns no window reaches
    lambda: AvgPool2d(2),
    lambda: AvgPool2d(3, stride=1),
    lambda: ReLU(),
], ids=["conv pad", "conv stride", "conv", "conv transpose", "maxpool", "maxpool overlap",
        "maxpool gaps", "avgpool", "avgpool overlap", "relu"])
def test_sliced_and_threaded_kernels_agree_with_the_loops(sliced, make):
    fast_and_reference(make(), separated(np.random.default_rng(0), (5, 3, 7, 8)))


def test_linear_with_its_products_shared_out_agrees_with_the_loops(sliced):
    """Linear's matrix products share their columns out between the threads (F.matmul)."""
    fast_and_reference(Linear(9, 7, rng=0, dtype=F64), np.random.default_rng(0).standard_normal((5, 9)))


@pytest.mark.parametrize("dtype", [np.float32, F64])
def test_matmul_is_the_matrix_product(sliced, dtype):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 40)).astype(dtype), rng.standard_normal((7, 40)).astype(dtype)
    for left, right in ((a, b.T), (a.T[:9].T.copy(), b.T[:9]), (b, a.T), (a[:1], b.T[:, :1])):
        got = F.matmul(left, right)  # transposed and column-sliced views included
        assert got.dtype == dtype and got.shape == (left.shape[0], right.shape[1])
        tol = 1e-5 if dtype == np.float32 else 1e-13  # sums of 40 products of size ~1
        np.testing.assert_allclose(got, left @ right, rtol=tol, atol=tol)


def test_one_channel_conv_sliced(sliced):
    """One input channel (a first layer): im2col copies tap by tap."""
    fast_and_reference(Conv2d(1, 5, 3, padding=1, rng=2, dtype=F64),
                       np.random.default_rng(0).standard_normal((5, 1, 7, 8)))


@pytest.mark.parametrize("bias", [True, False])
def test_many_channel_conv_sliced(sliced, bias):
    """Six input channels: im2col copies every window at once (into cols beside its ones)."""
    fast_and_reference(Conv2d(6, 4, 3, stride=(1, 2), padding=1, bias=bias, rng=2, dtype=F64),
                       np.random.default_rng(0).standard_normal((5, 6, 7, 8)))


@pytest.mark.parametrize("channels", [1, 3, 4, 6])
def test_cols_with_ones_are_cols_and_a_column_of_ones(channels):
    xp = np.random.default_rng(0).standard_normal((2, 6, 7, channels))
    plain = F.cols_matrix(xp, (3, 2), (2, 1))
    with_ones = F.cols_matrix(xp, (3, 2), (2, 1), ones=True)
    assert plain.shape == (2 * 2 * 6, 3 * 2 * channels)
    np.testing.assert_array_equal(with_ones[:, :-1], plain)
    np.testing.assert_array_equal(with_ones[:, -1], 1)
    np.testing.assert_array_equal(plain.reshape(2, 2, 6, 3, 2, channels), F.im2col(xp, (3, 2), (2, 1)))


def test_maxpool_ties_follow_the_rule_in_every_slice(sliced):
    x = np.random.default_rng(0).integers(0, 2, (7, 3, 6, 6)).astype(F64)  # ties everywhere
    fast_and_reference(MaxPool2d(2), x)


def test_batch_slices_cover_the_batch():
    for n in (1, 2, 7, 128):
        for per_item in (1, 1000, 10**6, 10**7, 10**8):
            for multiple in (1, 2, 3):
                parts = F.batch_slices(n, per_item, multiple)
                covered = np.concatenate([np.arange(n)[p] for p in parts])
                np.testing.assert_array_equal(covered, np.arange(n))
                sizes = [p.stop - p.start for p in parts]
                assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1  # balanced between threads
                if n >= multiple and n * per_item > F.CHUNK_BYTES:
                    assert len(parts) % multiple == 0 or len(parts) == n


def test_errors_in_threads_reach_the_caller(monkeypatch):
    monkeypatch.setattr(F, "NUM_THREADS", 2)

    def work(part):
        if part.start > 0:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        F.for_each_slice(work, 4, F.CHUNK_BYTES)


@pytest.mark.parametrize("env, expected", [
    ({}, "cores"),
    ({"OPENBLAS_NUM_THREADS": "1"}, "cores"),  # BLAS's own setting does not matter any more
    ({"CNN_LIB_NUM_THREADS": "3"}, 3),
    ({"CNN_LIB_NUM_THREADS": "1"}, 1),
])
def test_thread_count_follows_the_environment(monkeypatch, env, expected):
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CNN_LIB_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert F._default_threads() == (cores if expected == "cores" else expected)


def blas_threads():
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


class BlasProbe:
    """A foreign layer that records how many threads BLAS may use while it runs."""

    params: dict = {}

    def __init__(self, seen):
        self.seen = seen

    def forward(self, x):
        self.seen.append(blas_threads())
        return x

    def backward(self, dy):
        self.seen.append(blas_threads())
        return dy


def test_blas_is_single_threaded_while_cnn_lib_threads_work_and_restored_after(monkeypatch):
    monkeypatch.setattr(F, "NUM_THREADS", 2)
    before = blas_threads()
    assert before, "NumPy's BLAS was not found by threadpoolctl"
    seen = []
    F.for_each_slice(lambda part: seen.append(blas_threads()), 4, F.CHUNK_BYTES)
    model = Sequential(BlasProbe(seen), Linear(3, 2, rng=0, dtype=F64))
    model.backward(np.ones((5, 2)) * model.forward(np.ones((5, 3))))
    assert len(seen) == 4 + 2
    assert all(s == [1] * len(before) for s in seen), seen
    assert blas_threads() == before

    def work(part):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        F.for_each_slice(work, 4, F.CHUNK_BYTES)
    assert blas_threads() == before  # an error does not leave BLAS single-threaded


def test_with_one_cnn_lib_thread_blas_keeps_its_threads(monkeypatch):
    from threadpoolctl import threadpool_limits

    monkeypatch.setattr(F, "NUM_THREADS", 1)
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        if set(before) != {2}:
            pytest.skip(f"this BLAS cannot be set to 2 threads ({before})")
        seen = []
        model = Sequential(BlasProbe(seen), Linear(3, 2, rng=0, dtype=F64))
        model.backward(np.ones((5, 2)) * model.forward(np.ones((5, 3))))
        F.for_each_slice(lambda part: seen.append(blas_threads()), 4, F.CHUNK_BYTES)
        assert seen == [before] * 6  # one cnn_lib thread: BLAS may use every core itself


def test_work_that_hands_out_work_itself_runs_its_share_in_place(monkeypatch):
    """A for_each_slice inside another (the helper threads are busy): no deadlock."""
    monkeypatch.setattr(F, "NUM_THREADS", 2)
    seen = []

    def inner(part):
        seen.append(part.start)

    F.for_each_slice(lambda part: F.for_each_slice(inner, 4, F.CHUNK_BYTES), 2, F.CHUNK_BYTES)
    assert sorted(seen) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_two_program_threads_can_use_the_kernels_at_once(monkeypatch):
    monkeypatch.setattr(F, "NUM_THREADS", 2)
    monkeypatch.setattr(F, "PARALLEL_MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(F, "CHUNK_BYTES", 1)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((30, 50)), rng.standard_normal((50, 40))
    results, errors = [], []

    def use():
        try:
            for _ in range(50):
                results.append(np.array_equal(F.matmul(a, b), F.matmul(a, b)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 150 and all(results)
    np.testing.assert_allclose(F.matmul(a, b), a @ b, rtol=1e-13)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_process_starts_helper_threads_of_its_own(monkeypatch):
    import multiprocessing

    monkeypatch.setattr(F, "NUM_THREADS", 2)
    F.for_each_slice(lambda part: None, 4, F.CHUNK_BYTES)  # the parent's helpers are running
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:  # would hang waiting for the parent's threads, which a child lacks
        got = pool.apply_async(_threaded_sum_in_child).get(timeout=60)
    assert got == sum(range(8))


def _threaded_sum_in_child():
    F.NUM_THREADS = 2
    seen = []
    F.for_each_slice(lambda part: seen.extend(range(8)[part]), 8, F.CHUNK_BYTES)
    return sum(seen)


def test_an_error_in_one_thread_waits_for_the_others(monkeypatch):
    monkeypatch.setattr(F, "NUM_THREADS", 3)
    started, done = [], []
    writing, failing = threading.Event(), threading.Event()

    def work(part):  # six slices of one item; each thread holds one of the first three
        started.append(part.start)
        if part.start == 1:  # fails while another thread is still writing its slice
            assert writing.wait(10), "slice 2 never started"
            failing.set()
            raise RuntimeError("boom")
        if part.start == 2:
            writing.set()
            time.sleep(0.2)
        if part.start == 0:  # ends after the error: its thread must not go on to slice 3
            assert failing.wait(10), "slice 1 never started"
            time.sleep(0.05)
        done.append(part.start)

    with pytest.raises(RuntimeError, match="boom"):
        F.for_each_slice(work, 6, F.CHUNK_BYTES)
    assert sorted(done) == [0, 2]  # slice 2 had finished before the error reached the caller
    assert sorted(started) == [0, 1, 2]  # and nobody started a slice after the error


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill (POSIX)")
def test_an_interrupt_while_waiting_for_a_helper_leaves_no_thread_out_of_step(monkeypatch):
    # Ctrl-C (or Jupyter's stop button) while the main thread waits for a helper that is
    # still at work. Every later call must still wait for all of its own slices.
    monkeypatch.setattr(F, "NUM_THREADS", 2)
    main = threading.main_thread()
    assert threading.current_thread() is main

    def work_with(helper_seconds, finished):
        helper_has_one = threading.Event()

        def work(part):  # four slices: the helper takes one, the main thread the others
            if threading.current_thread() is main:
                assert helper_has_one.wait(5), "the helper thread never took a slice"
            else:
                helper_has_one.set()
                time.sleep(helper_seconds)
            finished.append(part.start)

        return work

    timer = threading.Timer(0.1, signal.pthread_kill, (main.ident, signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):  # the main thread is waiting for the helper by then
        F.for_each_slice(work_with(0.3, []), 4, F.CHUNK_BYTES)
    timer.join()

    for _ in range(3):
        finished = []
        F.for_each_slice(work_with(0.05, finished), 4, F.CHUNK_BYTES)
        assert sorted(finished) == [0, 1, 2, 3]  # every slice finished before the call returned


def test_every_slice_runs_once_whichever_thread_takes_it(monkeypatch):
    monkeypatch.setattr(F, "NUM_THREADS", 3)
    monkeypatch.setattr(F, "CHUNK_BYTES", 1)  # one item a slice
    taken = []

    def work(part):
        time.sleep(0.005)  # long enough for the helper threads to wake up and join in
        taken.append((part.start, part.stop, threading.current_thread().name))

    F.for_each_slice(work, 20, 1, parallel=True)
    assert sorted((start, stop) for start, stop, _ in taken) == [(i, i + 1) for i in range(20)]
    assert len({name for *_, name in taken}) > 1  # shared out


def test_slices_are_at_least_two_per_thread_when_the_batch_allows(monkeypatch):
    monkeypatch.setattr(F, "NUM_THREADS", 2)
    for n, expected in ((32, 4), (3, 3), (1, 1)):  # tiny work, but parallel: 2 per thread
        parts = []
        F.for_each_slice(parts.append, n, 1, parallel=True)
        assert len(parts) == expected
    parts = []
    F.for_each_slice(parts.append, 32, 1)  # too little work to share out: one slice, here
    assert parts == [slice(0, 32)]


# ----------------------------------------------------------------------------- dtype


@pytest.mark.parametrize("threads", [1, 2])
def test_float32_training_never_makes_float64(monkeypatch, threads):
    monkeypatch.setattr(F, "NUM_THREADS", threads)
    monkeypatch.setattr(F, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(F, "CHUNK_BYTES", 4096)
    rng = np.random.default_rng(0)
    model = Sequential(Conv2d(1, 4, 3, padding=1, rng=0), ReLU(), MaxPool2d(2),
                       Conv2d(4, 6, 3, padding=1, rng=1), ReLU(), AvgPool2d(2), Flatten(),
                       Linear(6 * 3 * 3, 10, rng=2))
    loss = SoftmaxCrossEntropy()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = rng.standard_normal((6, 1, 12, 12)).astype(np.float32)
    seen = []
    h = x
    for layer in model:
        h = layer.forward(h)
        seen.append(h.dtype)
    loss.forward(h, rng.integers(0, 10, 6))
    d = loss.backward()
    for layer in reversed(model.layers):
        d = layer.backward(d)
        seen.append(d.dtype)
    opt.step()
    assert set(seen) == {np.dtype(np.float32)}
    assert {g.dtype for g in model.grads.values()} == {np.dtype(np.float32)}
    assert {p.dtype for p in model.params.values()} == {np.dtype(np.float32)}
