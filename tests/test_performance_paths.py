"""The speed-ups of the fast kernels change no numbers and no behaviour.

* ``backward(dy, need_input_grad=False)`` (Sequential, Conv2d, ConvTranspose2d) fills the same
  gradients and returns None; the default still returns dL/dx.
* Kernels that work through a batch in slices, on several threads, agree with the loop
  reference whatever the slicing (forced here down to one image per slice).
* A Conv2d followed by a ReLU and/or a MaxPool2d runs fused in Sequential (one pass, the
  block owning its caches) with the same outputs and (up to rounding) gradients as the
  layers one after the other (``fuse=False``).
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
from helpers import close, separated

from cnn_lib import (
    SGD,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Flatten,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
    fusion,
)
from cnn_lib.kernels import fast
from cnn_lib.kernels.fast import conv as FC
from cnn_lib.kernels.fast import threads as T

F64 = np.float64


def small_net(dtype=F64, first=None):
    layers = [first] if first is not None else []
    return Sequential(*layers, Conv2d(1, 3, 3, padding=1, rng=0, dtype=dtype), ReLU(), MaxPool2d(2),
                      Conv2d(3, 4, 3, stride=2, rng=1, dtype=dtype), ReLU(), Flatten(),
                      Linear(4 * 2 * 2, 5, rng=2, dtype=dtype))


def grads_after_backward(model, x, **kwargs):
    model.zero_grad()
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


@pytest.mark.parametrize("impl", ["reference", "vectorized", "fast"])
@pytest.mark.parametrize("cls", [Conv2d, ConvTranspose2d])
def test_conv_layers_can_skip_the_input_gradient(cls, impl):
    layer = cls(2, 3, 3, stride=2, padding=1, rng=0, dtype=F64)
    layer.impl = impl
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5))
    dx, full = grads_after_backward(layer, x)
    assert dx.shape == x.shape
    layer.zero_grad()
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


def count_blocks(monkeypatch):
    """Record every fused block's forward (relu?, pool?) and backward (mask?, pool cache?)."""
    calls = []
    real_forward, real_backward = fast.conv2d_block_forward, fast.conv2d_block_backward

    def forward(*args, relu=False, pool=None):
        calls.append(("forward", relu, pool is not None))
        return real_forward(*args, relu=relu, pool=pool)

    def backward(dy, cache, need_input_grad=True):
        calls.append(("backward", cache[1] is not None, cache[2] is not None))
        return real_backward(dy, cache, need_input_grad)

    monkeypatch.setattr(fast, "conv2d_block_forward", forward)
    monkeypatch.setattr(fast, "conv2d_block_backward", backward)
    return calls


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
    monkeypatch.setattr(T, "NUM_THREADS", threads)
    monkeypatch.setattr(T, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(T, "CHUNK_BYTES", 2048)  # several slices
    calls = count_blocks(monkeypatch)
    layers = [Conv2d(conv["c_in"], 6, conv["k"], stride=conv["stride"], padding=conv["padding"],
                     rng=0, dtype=dtype), *BLOCKS[block](), Flatten()]
    fused, plain = Sequential(*layers), Sequential(*layers, fuse=False)
    x = separated(np.random.default_rng(0), (5, conv["c_in"], 13, 12)).astype(dtype)
    x[0, :, :2] = 0  # zero inputs: outputs equal to the bias, exactly 0 when the bias is
    layers[0].params["bias"][:2] = 0
    dy = None
    y = fused.forward(x)
    assert calls == [("forward", "relu" in block, "pool" in block)], "Sequential did not fuse the block"
    assert all(layer._cache is None for layer in layers[:-1])  # the block keeps the caches, not they
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    dx = fused.backward(dy)
    assert calls[1] == ("backward", "relu" in block, "pool" in block)
    grads = {k: v.copy() for k, v in fused.grads.items()}
    fused.zero_grad()
    fused.forward(x)
    assert fused.backward(dy, need_input_grad=False) is None  # the block at the bottom: no dx
    grads_skip = {k: v.copy() for k, v in fused.grads.items()}

    plain.zero_grad()
    np.testing.assert_array_equal(y, plain.forward(x))  # forward: the very same operations
    assert len(calls) == 4, "fuse=False fused"
    # backward: the same operations on the same numbers, but a matrix product may round
    # differently when its input lies elsewhere in memory: equal up to rounding
    close(dx, plain.backward(dy), dtype, "dx")
    for k, v in plain.grads.items():
        close(grads[k], v, dtype, k)
        close(grads_skip[k], v, dtype, k + " (need_input_grad=False)")
    assert y.dtype == dx.dtype == dtype


def test_blocks_are_found_all_through_a_network(monkeypatch):
    """The LeNet-style stack: two fused blocks forward, two backward, the same numbers."""
    calls = count_blocks(monkeypatch)
    model = small_net()
    x = np.random.default_rng(0).standard_normal((3, 1, 10, 10))
    dy = np.random.default_rng(1).standard_normal(model.forward(x).shape)
    dx = model.backward(dy)
    assert calls == [("forward", True, True), ("forward", True, False),   # conv-ReLU-pool, conv-ReLU
                     ("backward", True, False), ("backward", True, True)]
    assert [type(step).__name__ for step in fusion.plan(model.layers)] == [
        "ConvBlock", "ConvBlock", "Flatten", "Linear"]
    plain = Sequential(*model.layers, fuse=False)
    plain.forward(x)
    close(dx, plain.backward(dy), F64, "dx")


def test_without_fusion_every_layer_keeps_its_own_cache():
    """fuse=False: a ReLU keeps its mask, so a student can count the ReLUs that never fire."""
    conv, relu, pool = Conv2d(2, 3, 3, padding=1, rng=0, dtype=F64), ReLU(), MaxPool2d(2)
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6))
    model = Sequential(conv, relu, pool, fuse=False)
    y = model.forward(x)
    conv_y = conv.forward(x)
    np.testing.assert_array_equal(relu._cache[1], conv_y > 0)
    np.testing.assert_array_equal(y, pool.forward(relu.forward(conv_y)))
    for impl in ("reference", "vectorized", "fast"):  # last_active reads any tier's cache
        model.impl = impl
        model.forward(x)
        np.testing.assert_array_equal(relu.last_active, conv_y > 0, err_msg=impl)
    model.impl = "fast"
    fused = Sequential(conv, relu, pool)  # the same layers, fused: they keep nothing new
    relu._cache = None
    fused.forward(x)
    assert relu._cache is None and relu.last_active is None
    with pytest.raises(RuntimeError, match="ReLU.backward called before forward"):
        relu.backward(np.ones(conv_y.shape))


@pytest.mark.parametrize("impls, expected", [
    (("reference", "fast", "fast"), ["Conv2d", "ReLU", "MaxPool2d", "Flatten"]),
    (("fast", "reference", "fast"), ["Conv2d", "ReLU", "MaxPool2d", "Flatten"]),
    (("vectorized", "fast", "fast"), ["Conv2d", "ReLU", "MaxPool2d", "Flatten"]),
    (("fast", "fast", "reference"), ["ConvBlock", "MaxPool2d", "Flatten"]),
    (("fast", "fast", "fast"), ["ConvBlock", "Flatten"]),
])
def test_only_layers_on_the_fast_kernels_are_fused(impls, expected):
    conv, relu, pool = Conv2d(1, 2, 3, rng=0, dtype=F64), ReLU(), MaxPool2d(2)
    conv.impl, relu.impl, pool.impl = impls
    model = Sequential(conv, relu, pool, Flatten())
    steps = fusion.plan(model.layers)
    assert [type(step).__name__ for step in steps] == expected
    if expected[0] == "ConvBlock":
        assert repr(steps[0]).startswith("ConvBlock(Conv2d(1, 2, kernel_size=(3, 3)")
        assert "ReLU()" in repr(steps[0])
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6))
    dy = np.ones(model.forward(x).shape)
    dx = model.backward(dy)
    model.zero_grad()
    plain = Sequential(*model.layers, fuse=False)
    plain.forward(x)
    close(dx, plain.backward(dy), F64, "dx")
    model.impl = "fast"
    assert conv.impl == relu.impl == pool.impl == "fast"


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
    with pytest.raises(ValueError, match=r"Conv2d\+ReLU\+MaxPool2d.backward: dy must have the shape"):
        model.backward(np.ones((1, 2, 4, 4)))  # the conv's output shape, not the block's
    assert not model.grads  # nothing was added


# ----------------------------------------------------------------------------- slices and threads


@pytest.fixture(params=[(1, 1), (2, 2), (3, 3)], ids=["1 thread", "2 threads", "3 threads"])
def sliced(request, monkeypatch):
    """Tiny slices (a few images each, however small the input) on 1-3 threads."""
    threads, _ = request.param
    monkeypatch.setattr(T, "CHUNK_BYTES", 1)  # every image its own slice
    monkeypatch.setattr(T, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(T, "PARALLEL_MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(T, "NUM_THREADS", threads)
    return threads


def fast_and_reference(layer, x):
    out = {}
    for impl in ("fast", "reference"):
        layer.impl = impl
        layer.zero_grad()
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
    lambda: ConvTranspose2d(3, 6, 3, stride=2, padding=1, output_padding=1, rng=4, dtype=F64),
    lambda: ConvTranspose2d(3, 1, 4, stride=2, padding=1, rng=5, dtype=F64),  # one channel out
    lambda: MaxPool2d(2),
    lambda: MaxPool2d(3, stride=2),  # overlapping windows
    lambda: MaxPool2d(2, stride=3),  # rows and columns no window reaches
    lambda: AvgPool2d(2),
    lambda: AvgPool2d(3, stride=1),
    lambda: ReLU(),
    lambda: LeakyReLU(0.2),
    lambda: LeakyReLU(1.5),  # a slope outside [0, 1]: the vectorized tier's kernel
], ids=["conv pad", "conv stride", "conv", "conv transpose", "conv transpose 6 out",
        "conv transpose 1 out", "maxpool",
        "maxpool overlap", "maxpool gaps", "avgpool", "avgpool overlap", "relu", "leaky relu",
        "leaky relu slope 1.5"])
def test_sliced_and_threaded_kernels_agree_with_the_loops(sliced, make):
    fast_and_reference(make(), separated(np.random.default_rng(0), (5, 3, 7, 8)))


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2, 1.0])
def test_fast_leaky_relu_is_bit_for_bit_the_vectorized_one(slope):
    """The fast tier's factor max(x > 0, slope) gives exactly where(x > 0, x, slope * x), in
    float32 too, and keeps a channels-last layout."""
    from cnn_lib.kernels import fast, vectorized

    x = np.random.default_rng(1).standard_normal((4, 6, 5, 3)).astype(np.float32).transpose(0, 3, 1, 2)
    x[0, 0, 0, :2] = (0.0, -0.0)
    dy = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    y_fast, cache = fast.leaky_relu_forward(x, slope)
    y_vec, x_cache = vectorized.leaky_relu_forward(x, slope)
    np.testing.assert_array_equal(y_fast, y_vec)
    assert y_fast.dtype == np.float32 and y_fast.strides == x.strides
    np.testing.assert_array_equal(fast.leaky_relu_backward(dy, cache, slope),
                                  vectorized.leaky_relu_backward(dy, x_cache, slope))


def test_linear_with_its_products_shared_out_agrees_with_the_loops(sliced):
    """Linear's matrix products share their columns out between the threads (threads.matmul)."""
    fast_and_reference(Linear(9, 7, rng=0, dtype=F64), np.random.default_rng(0).standard_normal((5, 9)))


@pytest.mark.parametrize("dtype", [np.float32, F64])
def test_matmul_is_the_matrix_product(sliced, dtype):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 40)).astype(dtype), rng.standard_normal((7, 40)).astype(dtype)
    for left, right in ((a, b.T), (a.T[:9].T.copy(), b.T[:9]), (b, a.T), (a[:1], b.T[:, :1])):
        got = T.matmul(left, right)  # transposed and column-sliced views included
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
    plain = FC.cols_matrix(xp, (3, 2), (2, 1))
    with_ones = FC.cols_matrix(xp, (3, 2), (2, 1), ones=True)
    assert plain.shape == (2 * 2 * 6, 3 * 2 * channels)
    np.testing.assert_array_equal(with_ones[:, :-1], plain)
    np.testing.assert_array_equal(with_ones[:, -1], 1)
    np.testing.assert_array_equal(plain.reshape(2, 2, 6, 3, 2, channels), FC.im2col(xp, (3, 2), (2, 1)))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layout", ["channels-last", "NCHW", "2-D", "(N, C, L)", "strided"])
@pytest.mark.parametrize("dy_layout", ["same", "other"])
def test_batch_norm_on_slices_agrees_with_the_loops(sliced, monkeypatch, training, layout, dy_layout):
    """The fast tier's batch norm reads a channels-last batch as a (pixels, channels) matrix, a
    contiguous channels-first one as (N, C, pixels), and sums its statistics slice by slice
    (other layouts go to the vectorized tier): the reference tier's numbers every way, whatever
    dy's layout, and y and dx keep the input's layout. The values sit far from 0 (mean 50,
    spread 0.1), where a one-pass E[x^2] - E[x]^2 would lose every digit."""
    monkeypatch.setattr(T, "CHUNK_BYTES", 300)  # slices of several pixels (rows) or one image
    rng = np.random.default_rng(3)
    shape = {"2-D": (7, 4), "(N, C, L)": (5, 4, 9)}.get(layout, (5, 4, 3, 6))
    x = 50 + 0.1 * rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    if layout == "channels-last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if layout == "strided":  # every other column of a wider batch: no view of it has rows
        x = np.concatenate([x, x], axis=3)[..., ::2]
    if dy_layout == "other":  # dy channels-last where x is not, and the other way round
        dy = (np.asfortranarray(dy) if dy.ndim != 4 else
              np.ascontiguousarray(dy) if layout == "channels-last" else
              np.ascontiguousarray(dy.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2))
    out = {}
    for impl in ("fast", "reference"):
        bn = (BatchNorm2d if x.ndim == 4 else BatchNorm1d)(4, dtype=F64)
        bn.params["weight"][...] = [0.5, -2.0, 1.0, 3.0]
        bn.params["bias"][...] = [0.1, 0.2, -0.3, 0.0]
        bn.buffers["running_mean"][...] = 50.0
        bn.buffers["running_var"][...] = [0.01, 0.02, 1.0, 4.0]
        bn.impl = impl
        bn.train(training)
        y = bn.forward(x)
        dx = bn.backward(dy)
        out[impl] = (y, dx, bn.grads["weight"], bn.grads["bias"], bn.buffers["running_mean"],
                     bn.buffers["running_var"])
        if impl == "fast" and layout != "strided":
            assert y.strides == x.strides and dx.strides == x.strides
    for got, want in zip(out["fast"], out["reference"]):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_maxpool_ties_follow_the_rule_in_every_slice(sliced):
    x = np.random.default_rng(0).integers(0, 2, (7, 3, 6, 6)).astype(F64)  # ties everywhere
    fast_and_reference(MaxPool2d(2), x)


def test_batch_slices_cover_the_batch():
    for n in (1, 2, 7, 128):
        for per_item in (1, 1000, 10**6, 10**7, 10**8):
            for multiple in (1, 2, 3):
                parts = T.batch_slices(n, per_item, multiple)
                covered = np.concatenate([np.arange(n)[p] for p in parts])
                np.testing.assert_array_equal(covered, np.arange(n))
                sizes = [p.stop - p.start for p in parts]
                assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1  # balanced between threads
                if n >= multiple and n * per_item > T.CHUNK_BYTES:
                    assert len(parts) % multiple == 0 or len(parts) == n


def test_set_num_threads_changes_the_threads_and_refuses_nonsense(monkeypatch):
    import cnn_lib

    monkeypatch.setattr(T, "NUM_THREADS", T.NUM_THREADS)  # restored after the test
    cnn_lib.set_num_threads(3)
    assert cnn_lib.get_num_threads() == 3 == T.NUM_THREADS
    seen = set()
    T.for_each_slice(lambda part: seen.add(threading.current_thread().name), 24, 1, parallel=True)
    assert len(seen) <= 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="positive int"):
            cnn_lib.set_num_threads(bad)
    assert cnn_lib.get_num_threads() == 3


def test_map_slices_lists_the_results_in_slice_order_whichever_thread_finishes_first(monkeypatch):
    """The kernels sum these lists: a fixed order gives the same float32 sums every run."""
    import time

    monkeypatch.setattr(T, "NUM_THREADS", 2)
    done = []

    def work(part):
        if part.start == 0:
            time.sleep(0.2)  # the first slice finishes last
        done.append(part.start)
        return part.start, threading.current_thread().name

    results = T.map_slices(work, 8, T.CHUNK_BYTES)
    starts = [start for start, _ in results]
    assert starts == sorted(starts) == [p.start for p in T.batch_slices(8, T.CHUNK_BYTES, 4)]
    assert done[-1] == 0  # another thread did the rest meanwhile


def test_errors_in_threads_reach_the_caller(monkeypatch):
    monkeypatch.setattr(T, "NUM_THREADS", 2)

    def work(part):
        if part.start > 0:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        T.for_each_slice(work, 4, T.CHUNK_BYTES)


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
    assert T._default_threads() == (cores if expected == "cores" else expected)


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
    monkeypatch.setattr(T, "NUM_THREADS", 2)
    before = blas_threads()
    assert before, "NumPy's BLAS was not found by threadpoolctl"
    seen = []
    T.for_each_slice(lambda part: seen.append(blas_threads()), 4, T.CHUNK_BYTES)
    model = Sequential(BlasProbe(seen), Linear(3, 2, rng=0, dtype=F64))
    model.backward(np.ones((5, 2)) * model.forward(np.ones((5, 3))))
    assert len(seen) == 4 + 2
    assert all(s == [1] * len(before) for s in seen), seen
    assert blas_threads() == before

    def work(part):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        T.for_each_slice(work, 4, T.CHUNK_BYTES)
    assert blas_threads() == before  # an error does not leave BLAS single-threaded


def test_with_one_cnn_lib_thread_blas_keeps_its_threads(monkeypatch):
    from threadpoolctl import threadpool_limits

    monkeypatch.setattr(T, "NUM_THREADS", 1)
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        if set(before) != {2}:
            pytest.skip(f"this BLAS cannot be set to 2 threads ({before})")
        seen = []
        model = Sequential(BlasProbe(seen), Linear(3, 2, rng=0, dtype=F64))
        model.backward(np.ones((5, 2)) * model.forward(np.ones((5, 3))))
        T.for_each_slice(lambda part: seen.append(blas_threads()), 4, T.CHUNK_BYTES)
        assert seen == [before] * 6  # one cnn_lib thread: BLAS may use every core itself


def test_work_that_hands_out_work_itself_runs_its_share_in_place(monkeypatch):
    """A for_each_slice inside another (the helper threads are busy): no deadlock."""
    monkeypatch.setattr(T, "NUM_THREADS", 2)
    seen = []

    def inner(part):
        seen.append(part.start)

    T.for_each_slice(lambda part: T.for_each_slice(inner, 4, T.CHUNK_BYTES), 2, T.CHUNK_BYTES)
    assert sorted(seen) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_two_program_threads_can_use_the_kernels_at_once(monkeypatch):
    monkeypatch.setattr(T, "NUM_THREADS", 2)
    monkeypatch.setattr(T, "PARALLEL_MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(T, "CHUNK_BYTES", 1)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((30, 50)), rng.standard_normal((50, 40))
    results, errors = [], []

    def use():
        try:
            for _ in range(50):
                results.append(np.array_equal(T.matmul(a, b), T.matmul(a, b)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 150 and all(results)
    np.testing.assert_allclose(T.matmul(a, b), a @ b, rtol=1e-13)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_process_starts_helper_threads_of_its_own(monkeypatch):
    import multiprocessing

    monkeypatch.setattr(T, "NUM_THREADS", 2)
    T.for_each_slice(lambda part: None, 4, T.CHUNK_BYTES)  # the parent's helpers are running
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:  # would hang waiting for the parent's threads, which a child lacks
        got = pool.apply_async(_threaded_sum_in_child).get(timeout=60)
    assert got == sum(range(8))


def _threaded_sum_in_child():
    T.set_num_threads(2)
    seen = []
    T.for_each_slice(lambda part: seen.extend(range(8)[part]), 8, T.CHUNK_BYTES)
    return sum(seen)


def test_an_error_in_one_thread_waits_for_the_others(monkeypatch):
    monkeypatch.setattr(T, "NUM_THREADS", 3)
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
        T.for_each_slice(work, 6, T.CHUNK_BYTES)
    assert sorted(done) == [0, 2]  # slice 2 had finished before the error reached the caller
    assert sorted(started) == [0, 1, 2]  # and nobody started a slice after the error


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill (POSIX)")
def test_an_interrupt_while_waiting_for_a_helper_leaves_no_thread_out_of_step(monkeypatch):
    # Ctrl-C (or Jupyter's stop button) while the main thread waits for a helper that is
    # still at work. Every later call must still wait for all of its own slices.
    monkeypatch.setattr(T, "NUM_THREADS", 2)
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
        T.for_each_slice(work_with(0.3, []), 4, T.CHUNK_BYTES)
    timer.join()

    for _ in range(3):
        finished = []
        T.for_each_slice(work_with(0.05, finished), 4, T.CHUNK_BYTES)
        assert sorted(finished) == [0, 1, 2, 3]  # every slice finished before the call returned


def test_every_slice_runs_once_whichever_thread_takes_it(monkeypatch):
    monkeypatch.setattr(T, "NUM_THREADS", 3)
    monkeypatch.setattr(T, "CHUNK_BYTES", 1)  # one item a slice
    taken = []

    def work(part):
        time.sleep(0.005)  # long enough for the helper threads to wake up and join in
        taken.append((part.start, part.stop, threading.current_thread().name))

    T.for_each_slice(work, 20, 1, parallel=True)
    assert sorted((start, stop) for start, stop, _ in taken) == [(i, i + 1) for i in range(20)]
    assert len({name for *_, name in taken}) > 1  # shared out


def test_slices_are_at_least_two_per_thread_when_the_batch_allows(monkeypatch):
    monkeypatch.setattr(T, "NUM_THREADS", 2)
    for n, expected in ((32, 4), (3, 3), (1, 1)):  # tiny work, but parallel: 2 per thread
        parts = []
        T.for_each_slice(parts.append, n, 1, parallel=True)
        assert len(parts) == expected
    parts = []
    T.for_each_slice(parts.append, 32, 1)  # too little work to share out: one slice, here
    assert parts == [slice(0, 32)]


# ----------------------------------------------------------------------------- dtype


@pytest.mark.parametrize("threads", [1, 2])
def test_float32_training_never_makes_float64(monkeypatch, threads):
    monkeypatch.setattr(T, "NUM_THREADS", threads)
    monkeypatch.setattr(T, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(T, "CHUNK_BYTES", 4096)
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
    opt.zero_grad()
    d = loss.backward()
    for layer in reversed(model.layers):
        d = layer.backward(d)
        seen.append(d.dtype)
    opt.step()
    assert set(seen) == {np.dtype(np.float32)}
    assert {g.dtype for g in model.grads.values()} == {np.dtype(np.float32)}
    assert {p.dtype for p in model.params.values()} == {np.dtype(np.float32)}


@pytest.mark.parametrize("width, rows", [(10, 9000), (10, FC.NARROW_MIN_ROWS), (10, FC.NARROW_MIN_ROWS - 1),
                                         (33, 9000), (289, 9000)],
                         ids=["narrow-blocked", "narrow-just-long", "narrow-short", "just-wide", "wide"])
def test_the_weight_gradient_is_the_same_product_in_blocks_or_at_once(width, rows):
    """fast.conv.weight_gradient takes a narrow cols (a first layer on grey images) in row blocks:
    the same sum as dy.T @ cols, on both sides of each branch's limits."""
    rng = np.random.default_rng(width + rows)
    dy = rng.standard_normal((rows, 32))
    cols = rng.standard_normal((width, rows)).T  # the transposed view cols_matrix makes for few channels
    got = FC.weight_gradient(dy, cols)
    assert got.shape == (32, width)
    np.testing.assert_allclose(got, dy.T @ cols, rtol=1e-12, atol=1e-10)
    got32 = FC.weight_gradient(dy.astype(np.float32), cols.astype(np.float32))
    assert got32.dtype == np.float32
    close(got32, dy.T @ cols, np.float32, "float32, in blocks or not")
