"""Fast kernels: no Python loop over pixels or batch items.

Every layer kernel here (``*_forward``, ``*_backward``) has a loop twin in
:mod:`cnn_lib.reference` with the same results (the tests hold them to 1e-10 in float64).
The reference reads like the derivation; this module reads like the reference *reorganised*
so that NumPy and BLAS do the work. Lessons 05 (section 8) and 06 (section 5) show some of the
tricks; lesson 09 (coming) walks through them all:

* **Channels last in memory.** Arrays keep PyTorch's *shape* ``(N, C, H, W)``, but the
  images these kernels return are stored channels-last: ``(N, H, W, C)`` in memory, seen
  through ``.transpose(0, 3, 1, 2)`` (a view, no copy). The next kernel takes
  ``x.transpose(0, 2, 3, 1)`` and gets a contiguous NHWC array back for free. Every copy and
  every shifted add then moves long contiguous runs (a pixel's channels, or a whole image
  row of them) instead of single numbers. Any input layout works; this one is just fast.
* **Convolution is a matrix product.** ``im2col`` copies every receptive field into a row of
  ``cols``; ``cols @ Wmat`` is then the whole convolution, done by BLAS. With a column of
  ones at the end of ``cols`` (:func:`cols_matrix`, ``ones=True``) and the bias as the last
  row of ``Wmat``, the same product adds the bias, and backward's ``dy_mat.T @ cols`` (dL/dW
  as a ``(C_out, kH*kW*C)`` matrix) has dL/dbias as its last column.
* **Its input gradient is one matrix product per tap and one shifted add per tap**
  (:func:`add_tap_products`), never a scatter with ``np.add.at``, and never the big
  ``(N*H_out*W_out, kH*kW*C)`` matrix of :func:`col2im`.
* **Pooling works on the ``kH*kW`` strided sub-grids** of the input (one per kernel tap):
  max and average become elementwise operations between whole arrays. Max pooling keeps,
  per tap, a boolean mask of the inputs that won; its backward is one multiply per tap.
* **A batch goes through in slices** (:func:`for_each_slice`) that touch about
  ``CHUNK_BYTES`` each (``cols`` included), so the biggest temporary never exists for a whole
  large batch at once, and **several threads** work at once (``NUM_THREADS``, one per core):
  NumPy releases the GIL inside its loops, so a thread per core runs NumPy on its own slices,
  as PyTorch's threads do. Meanwhile NumPy's BLAS is kept to one thread per matrix product
  (:func:`single_threaded_blas`), so that the two never fight over the cores; a dense layer's
  products share their columns out between the threads instead (:func:`matmul`).
* **A ReLU and a max pooling right after a convolution run inside it**
  (:func:`conv2d_block_forward`, and ``relu_mask``/``pool_cache`` in :func:`conv2d_backward`):
  each slice of the batch goes through them while the convolution's output for that slice is
  still in the CPU cache, instead of in further passes over the whole batch from main memory.
  With both, the block pools first and applies the ReLU to the pooled numbers (the two
  commute, and the ReLU then has a quarter of the numbers to do). :class:`cnn_lib.Sequential`
  does all this by itself. The results, and the caches of the convolution and the pooling,
  are the same as unfused; a ReLU under a pooling keeps the smaller mask of the pooled output.
* **Only what is needed.** The first layer of a network does not need dL/dx (nobody trains
  the images), so :func:`conv2d_backward` can skip it (``need_input_grad=False``). Caches keep
  the smallest thing backward needs: a convolution keeps its input, not ``cols`` (kH*kW times
  larger), and rebuilds each slice's ``cols``; ReLU keeps its 0/1 mask, not its input.
* **dtype follows the input.** Nothing here makes a float64 array out of float32 inputs:
  Python scalars (``0``, ``1.0``) never change an array's dtype in NumPy.

Shapes follow PyTorch: images ``(N, C, H, W)``, conv weights ``(C_out, C_in, kH, kW)``.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import numpy as np


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length along one axis: ``floor((size + 2*padding - kernel) / stride) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def _taps(kh: int, kw: int):
    """Kernel taps ``(i, j)`` in row-major order (the order the tie rule refers to)."""
    return [(i, j) for i in range(kh) for j in range(kw)]


def _nhwc(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C), a view: contiguous when ``x`` is channels-last in memory."""
    return x.transpose(0, 2, 3, 1)


def _nchw(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, C, H, W), a view: what every kernel hands back."""
    return x.transpose(0, 3, 1, 2)


def _window(i: int, j: int, stride, out_hw):
    """Index of tap (i, j)'s sub-grid in an NHWC array: rows i, i+sh, ..., columns j, j+sw, ..."""
    (sh, sw), (ho, wo) = stride, out_hw
    return (slice(None), slice(i, i + sh * ho, sh), slice(j, j + sw * wo, sw), slice(None))


# --------------------------------------------------------------------------- batch slices

#: Work through a batch in slices that touch about this many bytes each (what a kernel reads
#: and writes, its temporaries included). Smaller slices keep a kernel's temporaries in the
#: CPU cache between its passes, but every slice also costs something (fresh memory for its
#: temporaries, smaller matrix products, one more partial sum). Measured on the course's
#: 2-core machines, with the conv blocks fused: on an AMD Zen 3 (512 KiB of L2 cache a core)
#: 4 MiB trains the LeNet-style net of benchmarks/ 5% (batch 32) and 15% (batch 128) faster
#: than 16 MiB, and 2 MiB as fast as 4; the tutorial net does not care. (Before the fusion, on
#: an AVX-512 machine with 2 MiB of L2, 16 MiB had been 10-20% faster than 2.) Measure before
#: changing it.
CHUNK_BYTES = 4 << 20

#: Matrix products with fewer multiply-adds than this run on one thread (:func:`matmul`): a
#: product's time goes with its arithmetic, not with its bytes. 4 million take about 0.1 ms
#: on one core here in float32 (0.2 ms in float64); handing work to another thread and
#: waiting for it to finish costs about 50 microseconds when that thread's core is awake.
PARALLEL_MIN_MULTIPLY_ADDS = 4 << 20

#: Work that touches fewer bytes than this is not worth handing to other threads: waking a
#: thread and moving the data it made to the core that reads it next cost more than the
#: work. Measured on the course's 2-core machines, before the conv blocks were fused: the
#: tutorial net's convolution at batch 32 (1.6 MB) trained 20% slower on two threads, the
#: LeNet-style net's first one (then counted as 4 MB) 5% faster. (Fused, the byte estimates of
#: conv2d_block_forward put them at 1.6 and 7.4 MB; an 8 MB threshold, which keeps the latter
#: on one thread, measured the same as this one: 1.005 times the step time, noise.)
PARALLEL_MIN_BYTES = 2 << 20

#: Inputs with fewer channels than this (the grey images of a first layer: C = 1) get their
#: ``cols`` built one (tap, channel) at a time, as whole shifted images, instead of one kernel
#: row of a window at a time: such a row is only kW*C numbers long, too short to copy fast.
FEW_CHANNELS = 4


def batch_slices(n: int, bytes_per_item: int, multiple_of: int = 1) -> list[slice]:
    """Split ``range(n)`` into consecutive slices of at most about ``CHUNK_BYTES`` each, their
    sizes differing by at most one and their number a multiple of ``multiple_of`` when there
    are enough items (for_each_slice asks for two per thread)."""
    count = -(-n * bytes_per_item // CHUNK_BYTES)  # ceil(total bytes / CHUNK_BYTES)
    count = min(n, max(1, -(-count // multiple_of) * multiple_of))
    bounds = [i * n // count for i in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]


def usable_cores() -> int:
    """The cores this process may run on (a container or ``taskset`` can allow fewer than
    the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _default_threads() -> int:
    """CNN_LIB_NUM_THREADS if set, else one thread per core this process may use."""
    if os.environ.get("CNN_LIB_NUM_THREADS"):
        return max(1, int(os.environ["CNN_LIB_NUM_THREADS"]))
    return usable_cores()


#: Threads that work on different slices of a batch at the same time (see for_each_slice).
#: Assign to change it: ``cnn_lib.functional.NUM_THREADS = 1``.
NUM_THREADS = _default_threads()
_blas_libraries = None  # threadpoolctl's handles on NumPy's BLAS, found on first use
_blas_limited = False  # True inside single_threaded_blas()


class _Helper:
    """A thread that sleeps until it is handed a job, runs it, and says when it is done.

    Two locks do the talking: ``start`` is released to wake the thread with a job, ``done``
    is released by the thread when the job has finished. A wake-up through a lock costs
    about 15 microseconds here when the thread's core is awake (a core that has been idle
    for a millisecond or more takes 0.1-0.2 ms to wake); a ``concurrent.futures`` pool's
    costs about 50 (its queue, its futures and their conditions), and the kernels hand work
    over about ten times a training step.
    """

    def __init__(self, name):
        self.start, self.done = threading.Lock(), threading.Lock()
        self.start.acquire()
        self.done.acquire()
        self.job, self.error = None, None
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def _loop(self):
        while True:
            self.start.acquire()  # sleep until run() hands over a job
            try:
                self.job()
            except BaseException as error:  # noqa: BLE001 -- handed to the caller by wait()
                self.error = error
            finally:
                self.job = None
                self.done.release()

    def run(self, job):
        self.job = job
        self.start.release()

    def wait(self):
        """Block until the job has finished; return the error it raised, or None."""
        self.done.acquire()
        error, self.error = self.error, None
        return error


_helpers: list[_Helper] = []  # started on first use, kept for the life of the process
_helpers_busy = threading.Lock()  # held by the one for_each_slice call that uses them


def _forget_helpers_after_fork():
    """A forked child has none of its parent's threads: start new ones when needed."""
    global _helpers, _helpers_busy
    _helpers, _helpers_busy = [], threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers_after_fork)


@contextmanager
def single_threaded_blas():
    """A context in which NumPy's BLAS runs each matrix product on one thread.

    A NumPy program can use several cores in two ways: BLAS splits each matrix product over
    its own threads (NumPy's default: OpenBLAS starts one per core), or the program splits
    the *batch* over threads that each run everything -- copies, elementwise operations and
    matrix products -- on their own slice (what PyTorch does, and what for_each_slice does).
    Both at once would put two threads on every core, so while cnn_lib's threads work, BLAS
    is told to use one (through threadpoolctl; a few microseconds), and afterwards as many
    as before. :class:`cnn_lib.Sequential` keeps BLAS at one thread for a whole forward or
    backward pass: OpenBLAS's own threads keep spinning for a while after each product they
    share, and would slow the next layer's threads down.
    """
    global _blas_libraries, _blas_limited
    if (
        _blas_limited  # already inside (a Sequential pass): nothing to do
        or NUM_THREADS <= 1  # cnn_lib runs on one thread: BLAS may use every core itself
        or threading.current_thread() is not threading.main_thread()  # limits are process-wide
    ):
        yield
        return
    if _blas_libraries is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # an old environment: work on, BLAS threads and all
            _blas_libraries = []
        else:
            _blas_libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    before = [lib.get_num_threads() for lib in _blas_libraries]
    try:
        _blas_limited = True
        for lib in _blas_libraries:
            lib.set_num_threads(1)
        yield
    finally:
        _blas_limited = False
        for lib, threads in zip(_blas_libraries, before):
            lib.set_num_threads(threads)


def for_each_slice(work, n: int, bytes_per_item: int, parallel: bool | None = None) -> None:
    """Call ``work(part)`` for every ``part`` of ``batch_slices(n, bytes_per_item, ...)``,
    spread over ``NUM_THREADS`` threads; return when all are done.

    NumPy releases Python's GIL while its loops and matrix products run, so threads that each
    call NumPy on their own part of the batch really do run at the same time, one per core.
    ``work`` must write only to its own part of the outputs. With one thread, for work that
    touches under ``PARALLEL_MIN_BYTES`` (unless ``parallel`` says otherwise), or while
    another call is using the helper threads (another thread of the program, or ``work``
    itself calling for_each_slice), everything runs right here, in order. An error in any
    thread reaches the caller once every thread has stopped. A Ctrl-C (Jupyter's stop button)
    is raised at once; a helper thread still at work then finishes its slice and retires, and
    the next call starts new ones.

    The threads take the slices one at a time, each the next one nobody has taken yet, and
    there are at least two per thread when the batch allows: a helper thread that wakes up
    late (an idle core can take a tenth of a millisecond to wake on these machines) then
    simply takes fewer slices, instead of making everyone wait for its fixed share.
    """
    if parallel is None:
        parallel = n * bytes_per_item >= PARALLEL_MIN_BYTES
    threads = NUM_THREADS if parallel else 1
    parts = batch_slices(n, bytes_per_item, 2 * threads if threads > 1 else 1)
    threads = min(threads, len(parts))
    if threads <= 1 or not _helpers_busy.acquire(blocking=False):
        for part in parts:
            work(part)
        return
    todo, take = iter(parts), threading.Lock()
    failed = []  # not empty: stop taking slices
    waited = False  # every helper handed a job has been waited for

    def run():
        while not failed:  # after an error, nobody starts another slice
            with take:
                part = next(todo, None)
            if part is None:
                return
            try:
                work(part)
            except BaseException:
                failed.append(True)
                raise

    try:
        while len(_helpers) < threads - 1:
            _helpers.append(_Helper(f"cnn_lib-{len(_helpers) + 1}"))
        helpers = _helpers[: threads - 1]
        with single_threaded_blas():
            for helper in helpers:
                helper.run(run)
            try:
                run()
            finally:
                # every thread is done with the outputs before anyone looks at them
                errors = [helper.wait() for helper in helpers]
                waited = True
            for error in errors:
                if error is not None:
                    raise error  # an error from another thread
    finally:
        if not waited:
            # Interrupted (Ctrl-C, Jupyter's stop button) while handing out the work or waiting
            # for it. A helper may still be at work, and its "done" would then wake the *next*
            # call's wait() before that call's slices are finished. So: no more slices for
            # these helpers, and new ones next time (these go to sleep for good when done).
            failed.append(True)
            _helpers.clear()
        _helpers_busy.release()


# --------------------------------------------------------------------------- convolution


def _padded_nhwc(x: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """``x`` (N, C, H, W) as a zero-padded channels-last array (N, H+2ph, W+2pw, C).

    One copy (into a zeroed array) when there is padding; without padding it is the view
    ``_nhwc(x)`` and nothing is copied.
    """
    if ph == 0 and pw == 0:
        return _nhwc(x)
    n, c, h, w = x.shape
    xp = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)
    xp[:, ph : ph + h, pw : pw + w, :] = _nhwc(x)
    return xp


def im2col(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], out=None) -> np.ndarray:
    """Gather every receptive field of a padded NHWC input into a row.

    xp:      (N, Hp, Wp, C) padded input, channels last
    out:     optional array to fill, of the shape returned (or a reshaped view of one)
    returns: (N, H_out, W_out, kH, kW, C); reshaped to (N*H_out*W_out, kH*kW*C) it is the
             matrix whose product with the kernel matrix of :func:`_weight_matrix` (the
             kernel transposed to (kH, kW, C_in, C_out), then reshaped) is the convolution.
    """
    n, hp, wp, c = xp.shape
    kh, kw = kernel
    sh, sw = stride
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    cols = np.empty((n, ho, wo, kh, kw, c), dtype=xp.dtype) if out is None else out
    if c < FEW_CHANNELS:
        # Few channels: copy tap by tap, each copy moving whole image rows.
        for i, j in _taps(kh, kw):
            cols[:, :, :, i, j, :] = xp[_window(i, j, stride, (ho, wo))]
    else:
        # Many channels: a strided *view* of every window (no copy), then one copy in which
        # each kernel row of a window (kW*C numbers) is a contiguous run of the input when xp
        # is a contiguous channels-last array (as _padded_nhwc makes it with padding). In the
        # view, element [n, i, j, a, b, ch] is xp[n, i*sh + a, j*sw + b, ch]: its strides are
        # xp's own, with the output axes i and j stepping sh and sw pixels at a time.
        # (np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2)) makes the same
        # view, with stride 1 and in another axis order; it takes 40 microseconds a call to
        # work out, as_strided 7, and a batch's convolution calls this once per slice.)
        step_n, step_h, step_w, step_c = xp.strides
        windows = np.lib.stride_tricks.as_strided(
            xp, shape=(n, ho, wo, kh, kw, c),
            strides=(step_n, step_h * sh, step_w * sw, step_h, step_w, step_c), writeable=False)
        cols[...] = windows  # (N, Ho, Wo, kH, kW, C)
    return cols


def cols_matrix(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                ones: bool = False) -> np.ndarray:
    """:func:`im2col` as the 2-D matrix ``cols`` (N*H_out*W_out, kH*kW*C) that the kernel multiplies.

    ``ones=True`` appends a column of ones, (N*H_out*W_out, kH*kW*C + 1): a bias is a weight
    on an input that is always 1, so with the bias as the kernel matrix's last row, one
    matrix product adds it too (forward), and in ``dy_mat.T @ cols`` the last column is the
    column sums of ``dy_mat``, dL/dbias (backward).

    Many channels: ``im2col(...)`` reshaped. Few channels (C < FEW_CHANNELS, e.g. the first layer on
    grey images): a row of ``cols`` holds only kH*kW*C numbers, and filling it tap by tap
    writes C numbers at a time, far apart in memory. So it is built as its *transpose*,
    (kH*kW*C, N*H_out*W_out): one long row per (tap, channel), each copied in one go from the
    shifted window of the input, and the transposed view is returned. Same numbers, same
    order; BLAS multiplies a transposed matrix as fast as any other.
    """
    n, hp, wp, c = xp.shape
    kh, kw = kernel
    sh, sw = stride
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    k, m = kh * kw * c, n * ho * wo
    width = k + 1 if ones else k
    if c >= FEW_CHANNELS:
        cols = np.empty((m, width), dtype=xp.dtype)
        im2col(xp, kernel, stride, out=cols[:, :k].reshape(n, ho, wo, kh, kw, c))  # a view
        if ones:
            cols[:, k] = 1
        return cols
    cols_t = np.empty((width, m), dtype=xp.dtype)
    taps = cols_t[:k].reshape(kh, kw, c, n, ho, wo)  # a view: one row of cols_t per (tap, channel)
    for i, j in _taps(kh, kw):
        taps[i, j] = xp[_window(i, j, stride, (ho, wo))].transpose(3, 0, 1, 2)  # (C, N, Ho, Wo)
    if ones:
        cols_t[k] = 1
    return cols_t.T


def col2im(dcols: np.ndarray, padded_shape: tuple, stride: tuple[int, int]) -> np.ndarray:
    """Adjoint of :func:`im2col`: add every row of ``dcols`` back where it was gathered from.

    dcols:   (N, H_out, W_out, kH, kW, C)
    returns: (N, Hp, Wp, C), overlapping receptive fields summed
    """
    n, ho, wo, kh, kw, c = dcols.shape
    dxp = np.zeros(padded_shape, dtype=dcols.dtype)
    for i, j in _taps(kh, kw):
        dxp[_window(i, j, stride, (ho, wo))] += dcols[:, :, :, i, j, :]
    return dxp


def add_tap_products(g_mat, wtaps, out, stride):
    """``out += col2im(g_mat @ Wmat.T)``, computed one kernel tap at a time (``Wmat`` being
    the kernel as a (kH*kW*C, K) matrix, ``wtaps.reshape(-1, K)``, and the product reshaped to
    col2im's (n, H_out, W_out, kH, kW, C)).

    g_mat:   (n*H_out*W_out, K) one row per output position (K = the conv's C_out)
    wtaps:   (kH, kW, C, K)     the kernel, tap by tap
    out:     (n, Hp, Wp, C)     receives, for every tap (i, j), ``g_mat @ wtaps[i, j].T``
                                added onto the sub-grid that tap read in the forward pass.

    Same numbers as ``col2im`` of the big product, but each tap's product is a contiguous
    (n, H_out, W_out, C) block that is added in one go (runs of ``W_out*C`` numbers at stride
    1, of C numbers at larger strides), and the matrix ``g_mat @ Wmat.T``, ``kH*kW`` times
    larger than one tap's block, is never built.
    """
    n, hp, wp, c = out.shape
    kh, kw = wtaps.shape[:2]
    sh, sw = stride
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    block = np.empty((g_mat.shape[0], c), dtype=out.dtype)  # reused by every tap
    for i, j in _taps(kh, kw):
        np.matmul(g_mat, wtaps[i, j].T, out=block)
        out[_window(i, j, stride, (ho, wo))] += block.reshape(n, ho, wo, c)
    return out


def _weight_matrix(weight: np.ndarray) -> np.ndarray:
    """(C_out, C_in, kH, kW) -> (kH*kW*C_in, C_out), matching the column order of im2col."""
    c_out = weight.shape[0]
    return weight.transpose(2, 3, 1, 0).reshape(-1, c_out)


def conv2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0)):
    """Cross-correlation (what deep learning calls convolution), vectorised.

    x:       (N, C_in, H, W)
    weight:  (C_out, C_in, kH, kW)
    bias:    (C_out,) or None
    returns: y (N, C_out, H_out, W_out), channels-last in memory, and a cache for
             :func:`conv2d_backward`

    The batch goes through in slices (:func:`for_each_slice`): each slice's ``cols`` is
    built, multiplied and dropped. The cache keeps ``x`` itself; backward rebuilds ``cols``
    slice by slice (cheaper than keeping a kH*kW times larger array and reading it back from
    main memory).
    """
    return conv2d_block_forward(x, weight, bias, stride, padding)[:2]


def conv2d_block_forward(x, weight, bias, stride=(1, 1), padding=(0, 0), relu=False, pool=None):
    """A convolution, then (if ``relu``) a ReLU, then (if ``pool`` = (kernel, stride)) a max
    pooling, in one pass over the batch.

    returns: the block's output, the cache of :func:`conv2d_forward`, the ReLU's 0/1 mask (or
             None) and the cache of :func:`maxpool2d_forward` (or None). The output and the
             caches of the convolution and of the pooling are the arrays the three functions
             make one after the other; the mask is that of the *block's output* (see below).

    With both a ReLU and a pooling, the block pools first and then applies the ReLU to the
    pooled numbers: max pooling and ReLU commute, ``max(relu(a), relu(b)) = relu(max(a, b))``
    (a ReLU never reverses an order, a >= b gives relu(a) >= relu(b), so a largest input is
    still a largest after it), so the output is the very same, for a quarter of the ReLU's
    work with 2x2 windows of stride 2, and a mask four times smaller to keep. The pooling's
    record of winners is then corrected to what pooling the ReLU's output would have
    recorded: in a window whose maximum is <= 0 the ReLU makes every input 0, and the tie
    rule gives the window to its first tap.

    Fused: each slice of the batch goes through the ReLU and the pooling right after its
    matrix product, while the convolution's output is still in the CPU cache. The ReLU and
    the pooling need no pass over main memory and no hand-over to the threads of their own,
    and when a pooling follows, the convolution's output for the whole batch is never stored
    at all (only the caches backward needs). :class:`cnn_lib.Sequential` uses it for every
    Conv2d that a ReLU or a MaxPool2d follows (inference engines fuse conv + ReLU the same way).
    """
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    ph, pw = padding
    ho, wo = output_size(h, kh, stride[0], ph), output_size(w, kw, stride[1], pw)
    k = kh * kw * c_in  # numbers in one receptive field
    wmat = _weight_matrix(weight)
    if bias is not None:  # the bias as one more row of the kernel, for cols' column of ones
        wmat = np.concatenate([wmat, bias.reshape(1, c_out)])
    conv_shape = (n, ho, wo, c_out)  # rows are pixels, channels last
    if pool is None:
        y = np.empty(conv_shape, dtype=x.dtype)
    else:
        pool_kernel, pool_stride = pool
        pho, pwo = _pool_geometry((n, c_out, ho, wo), pool_kernel, pool_stride)
        y = np.empty((n, pho, pwo, c_out), dtype=x.dtype)
        wins = np.empty((pool_kernel[0] * pool_kernel[1], n, pho, pwo, c_out), dtype=bool)
    mask = np.empty(y.shape, dtype=x.dtype) if relu else None  # the ReLU's, at the block's output

    def work(part):
        cols = cols_matrix(_padded_nhwc(x[part], ph, pw), (kh, kw), stride, ones=bias is not None)
        # the convolution's output: straight into y, or (a pooling follows) a scratch array
        out = y[part] if pool is None else np.empty((part.stop - part.start, ho, wo, c_out), x.dtype)
        np.matmul(cols, wmat, out=out.reshape(-1, c_out))  # bias included
        if pool is not None:  # the steps of maxpool2d_forward, on this slice
            _maxpool_slice(out, y[part], wins[:, part], pool_kernel, pool_stride)
        if relu:  # the steps of relu_forward, on this slice of the block's output
            np.greater(y[part], 0, out=mask[part])
            np.multiply(y[part], mask[part], out=y[part])
            if pool is not None:  # windows whose maximum is <= 0: the first tap wins
                positive = mask[part] != 0
                np.logical_or(wins[0, part], ~positive, out=wins[0, part])
                np.logical_and(wins[1:, part], positive, out=wins[1:, part])

    # Bytes per image, an estimate rather than an inventory: its cols, its input, and the
    # convolution's output, counted twice with a ReLU. (An exact count would add the pooling's
    # copies of its sub-grids, its winners and its output, and count a mask under a pooling at
    # a quarter. CHUNK_BYTES and PARALLEL_MIN_BYTES were measured with this estimate; counting
    # the pooling's copies would put the tutorial net's convolution at batch 32 over
    # PARALLEL_MIN_BYTES, on two threads, where it trained 20% slower.)
    outputs = 2 if relu else 1
    for_each_slice(work, n, (ho * wo * (k + outputs * c_out) + h * w * c_in) * x.itemsize)
    return (_nchw(y), (x, weight, bias is not None, stride, padding),
            (_nchw(mask) if relu else None),
            (None if pool is None else ((n, c_out, ho, wo), wins, pool_kernel, pool_stride)))


def conv2d_backward(dy, cache, need_input_grad=True, relu_mask=None, pool_cache=None):
    """Gradients of a convolution.

    dy:      (N, C_out, H_out, W_out) upstream gradient dL/dy (with a fused ReLU and/or
             pooling: of the block's output shape)
    returns: dx (N, C_in, H, W), dweight (C_out, C_in, kH, kW), dbias (C_out,) or None.
             With ``need_input_grad=False``, dx is None and not computed (a network's first
             layer: the images need no gradient).
    relu_mask, pool_cache: the caches of a ReLU and/or a max pooling that followed this
             convolution (:func:`conv2d_block_forward`). dy is then the gradient at the
             block's output, and each slice of it first goes back through the pooling and
             the ReLU: their backward passes fused in. A mask of dy's shape belongs to a
             ReLU that ran after the pooling (as conv2d_block_forward runs it) and is applied
             first, with the results of ``conv2d_backward(maxpool2d_backward(relu_backward(dy,
             relu_mask), pool_cache), cache)``; a mask of the convolution's output shape
             (relu_forward, then maxpool2d_forward) after the pooling's backward, with those
             of ``conv2d_backward(relu_backward(maxpool2d_backward(dy, pool_cache),
             relu_mask), cache)`` (both up to rounding).
    """
    x, weight, has_bias, stride, padding = cache
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    ph, pw = padding
    ho, wo = output_size(h, kh, stride[0], ph), output_size(w, kw, stride[1], pw)
    k = kh * kw * c_in
    dyh = _nhwc(dy)
    maskh = None if relu_mask is None else _nhwc(relu_mask)
    relu_on_top = maskh is not None and maskh.shape == dyh.shape  # the block's last step
    wtaps = weight.transpose(2, 3, 1, 0)  # (kH, kW, C_in, C_out)
    dxh = np.empty((n, h, w, c_in), dtype=dy.dtype) if need_input_grad else None
    partial = {}  # slice start -> that slice's share of (dW, db), summed in order below

    def work(part):
        g = dyh[part]  # this slice's upstream gradient
        if relu_on_top:  # relu_backward of this slice
            g = g * maskh[part]
        if pool_cache is not None:  # maxpool2d_backward of this slice
            pool_shape, wins, pool_kernel, pool_stride = pool_cache
            g_pool, g = g, _pool_dx((len(g), *pool_shape[1:]), pool_kernel, pool_stride,
                                    g.shape[1:3], g.dtype)
            _maxpool_backward_slice(g_pool, wins[:, part], g, pool_kernel, pool_stride)
        if maskh is not None and not relu_on_top:  # relu_backward of this slice, under the pooling
            np.multiply(g, maskh[part], out=g)
        # the gradient at the convolution's output, one row per position (a view when g is
        # channels-last in memory, as a pooling's backward makes it; otherwise reshape copies)
        dy_mat = g.reshape(-1, c_out)
        # dW = sum over every output position of (its upstream gradient) x (receptive field);
        # with a bias, cols ends in a column of ones, and the last column of the product is
        # db = the column sums of dy_mat. (dy_mat.T @ cols is (cols.T @ dy_mat).T, in the
        # layout of the weight, C_out first; for many input channels OpenBLAS computes it
        # 10-20% faster than cols.T @ dy_mat: measured on the LeNet-style net's second
        # convolution.)
        cols = cols_matrix(_padded_nhwc(x[part], ph, pw), (kh, kw), stride, ones=has_bias)
        partial[part.start] = dy_mat.T @ cols
        if need_input_grad:
            # dx: each output position sends dy * W back to the receptive field it read from;
            # into a padded scratch array for this slice, whose inside is this slice's dx
            dxp = np.zeros((part.stop - part.start, h + 2 * ph, w + 2 * pw, c_in), dtype=dy.dtype)
            add_tap_products(dy_mat, wtaps, dxp, stride)
            dxh[part] = dxp[:, ph : ph + h, pw : pw + w, :]

    # the gradient, and a fused ReLU's mask when it has the convolution's output shape
    upstream = 2 if maskh is not None and maskh.shape[1:] == (ho, wo, c_out) else 1
    # bytes per image: its cols, its upstream arrays, its input and its dx
    for_each_slice(work, n, (ho * wo * (k + upstream * c_out) + 2 * h * w * c_in) * dy.itemsize)
    dwmat = sum(partial[start] for start in sorted(partial))  # a fixed order: same sums every run
    dbias = dwmat[:, k].copy() if has_bias else None
    dweight = np.ascontiguousarray(dwmat[:, :k].reshape(c_out, kh, kw, c_in).transpose(0, 3, 1, 2))
    return (None if dxh is None else _nchw(dxh)), dweight, dbias


def conv_transpose2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0)):
    """Transposed convolution: the input-gradient of a convolution, used as a layer.

    x:       (N, C_in, H, W)
    weight:  (C_in, C_out, kH, kW)  (PyTorch's layout for ConvTranspose2d)
    returns: y (N, C_out, (H-1)*sh - 2*ph + kH, (W-1)*sw - 2*pw + kW) and a cache
    """
    n, c_in, h, w = x.shape
    _, c_out, kh, kw = weight.shape
    sh, sw = stride
    ph, pw = padding
    ho, wo = (h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw
    x_mat = _nhwc(x).reshape(n * h * w, c_in)
    # weight seen as a conv kernel from C_out to C_in channels: (C_in, C_out, kH, kW)
    wtaps = weight.transpose(2, 3, 1, 0)  # (kH, kW, C_out, C_in)
    yp = np.zeros((n, ho + 2 * ph, wo + 2 * pw, c_out), dtype=x.dtype)
    add_tap_products(x_mat, wtaps, yp, stride)
    y = yp[:, ph : ph + ho, pw : pw + wo, :]
    if bias is not None:
        y += bias
    cache = (x_mat, x.shape, weight, bias is not None, stride, padding)
    return _nchw(y), cache


def conv_transpose2d_backward(dy, cache, need_input_grad=True):
    """dy: (N, C_out, H_out, W_out) -> dx (N, C_in, H, W), dweight (C_in, C_out, kH, kW), dbias.

    With ``need_input_grad=False`` dx is None and not computed.
    """
    x_mat, x_shape, weight, has_bias, stride, padding = cache
    n, c_in, h, w = x_shape
    _, c_out, kh, kw = weight.shape
    ph, pw = padding
    # The adjoint of "add taps then crop" is "pad then im2col": a plain convolution of dy.
    cols = im2col(_padded_nhwc(dy, ph, pw), (kh, kw), stride).reshape(n * h * w, kh * kw * c_out)
    dweight = (cols.T @ x_mat).reshape(kh, kw, c_out, c_in).transpose(3, 2, 0, 1)
    dbias = dy.sum(axis=(0, 2, 3)) if has_bias else None
    dx = None
    if need_input_grad:
        dx = _nchw((cols @ _weight_matrix(weight)).reshape(n, h, w, c_in))
    return dx, np.ascontiguousarray(dweight), dbias


# --------------------------------------------------------------------------- pooling


def _pool_geometry(x_shape, kernel, stride):
    """Output size (H_out, W_out) of a pooling window without padding."""
    (kh, kw), (sh, sw) = kernel, stride
    return (x_shape[2] - kh) // sh + 1, (x_shape[3] - kw) // sw + 1


def _pool_dx(x_shape, kernel, stride, out_hw, dtype):
    """An NHWC array for a pooling layer's dx: uninitialised when the windows tile the input
    exactly (every element will be written), zeros otherwise."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    n, c, h, w = x_shape
    tiles = (sh, sw) == (kh, kw) and (h, w) == (ho * sh, wo * sw)
    return (np.empty if tiles else np.zeros)((n, h, w, c), dtype=dtype)


def maxpool2d_forward(x, kernel, stride):
    """Max pooling without padding.

    x:       (N, C, H, W)
    returns: y (N, C, H_out, W_out) and a cache holding, per window and tap, whether that tap
             receives the window's gradient.
    Tie rule: the *first* maximal element in row-major window order wins (like np.argmax),
    so exactly one input per window receives that window's gradient.
    """
    n, c = x.shape[:2]
    ho, wo = _pool_geometry(x.shape, kernel, stride)
    xh = _nhwc(x)
    y = np.empty((n, ho, wo, c), dtype=x.dtype)
    wins = np.empty((kernel[0] * kernel[1], n, ho, wo, c), dtype=bool)  # wins[t]: tap t gets the gradient

    def work(part):
        _maxpool_slice(xh[part], y[part], wins[:, part], kernel, stride)

    # bytes per image: its input, its output, the copies of the kH*kW sub-grids and the winners
    for_each_slice(work, n, x[0].nbytes + (1 + len(wins)) * y[0].nbytes + wins[:, 0].nbytes)
    return _nchw(y), (x.shape, wins, kernel, stride)


def _maxpool_slice(xh, y, wins, kernel, stride):
    """Max-pool some images: xh (n, H, W, C) channels-last in; fills y (n, H_out, W_out, C)
    and wins (kH*kW, n, H_out, W_out, C)."""
    windows = [_window(i, j, stride, y.shape[1:3]) for i, j in _taps(*kernel)]
    # Copy each tap's strided sub-grid into a contiguous slab, once (a strided pass moves only
    # C numbers at a time); everything after that runs on contiguous slabs.
    slabs = np.empty((len(windows), *y.shape), dtype=y.dtype)
    for t, window in enumerate(windows):
        slabs[t] = xh[window]
    np.copyto(y, slabs[0])
    for slab in slabs[1:]:
        np.maximum(y, slab, out=y)  # the max over the kH*kW sub-grids
    taken = None
    for t, slab in enumerate(slabs):
        hit = np.equal(slab, y, out=wins[t])
        if taken is None:
            taken = hit.copy()
        else:
            hit &= ~taken  # an earlier tap already equals the max: it wins the tie
            taken |= hit


def maxpool2d_backward(dy, cache):
    """dy: (N, C, H_out, W_out) -> dx (N, C, H, W); each window's gradient goes to its winner."""
    x_shape, wins, kernel, stride = cache
    dyh = _nhwc(dy)
    dxh = _pool_dx(x_shape, kernel, stride, dy.shape[2:], dy.dtype)

    def work(part):
        _maxpool_backward_slice(dyh[part], wins[:, part], dxh[part], kernel, stride)

    for_each_slice(work, x_shape[0], dxh[0].nbytes + dyh[0].nbytes + wins[:, 0].nbytes)
    return _nchw(dxh)


def _maxpool_backward_slice(dyh, wins, dxh, kernel, stride):
    """Send some images' dy (n, H_out, W_out, C) to the winners: into dxh (n, H, W, C).

    ``wins`` stays boolean (a ReLU keeps its mask as 0.0/1.0 floats to multiply faster, see
    :func:`relu_forward`): it holds kH*kW masks, so one byte a number instead of four or
    eight matters more here, and each mask is multiplied only once.
    """
    (kh, kw), (sh, sw) = kernel, stride
    overlap = sh < kh or sw < kw
    for t, (i, j) in enumerate(_taps(kh, kw)):
        window = _window(i, j, stride, dyh.shape[1:3])
        if overlap:  # windows share inputs: add
            dxh[window] += dyh * wins[t]
        else:  # each input in at most one window: write
            np.multiply(dyh, wins[t], out=dxh[window])


def avgpool2d_forward(x, kernel, stride):
    """Average pooling without padding. x: (N, C, H, W) -> y (N, C, H_out, W_out)."""
    ho, wo = _pool_geometry(x.shape, kernel, stride)
    xh = _nhwc(x)
    y = np.zeros((x.shape[0], ho, wo, x.shape[1]), dtype=x.dtype)
    for i, j in _taps(*kernel):
        y += xh[_window(i, j, stride, (ho, wo))]
    y /= kernel[0] * kernel[1]
    return _nchw(y), (x.shape, kernel, stride)


def avgpool2d_backward(dy, cache):
    """dy: (N, C, H_out, W_out) -> dx (N, C, H, W); each window spreads dy evenly."""
    x_shape, kernel, stride = cache
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = dy.shape[2:]
    share = _nhwc(dy) / (kh * kw)
    dxh = _pool_dx(x_shape, kernel, stride, (ho, wo), dy.dtype)
    for i, j in _taps(kh, kw):
        if sh < kh or sw < kw:
            dxh[_window(i, j, stride, (ho, wo))] += share
        else:
            dxh[_window(i, j, stride, (ho, wo))] = share
    return _nchw(dxh)


# --------------------------------------------------------------------------- dense + softmax


def matmul(a, b):
    """``a @ b`` for 2-D arrays, its columns shared out between cnn_lib's threads.

    Column block ``j`` of the product is ``a @ b[:, j]``: each thread computes its own block
    straight into the result, and nothing has to be added up afterwards. NumPy's BLAS is
    kept to one thread inside a network's pass (see :func:`single_threaded_blas`), so without
    this a big dense layer would leave every core but one idle.
    """
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))

    def work(part):
        np.matmul(a, b[:, part], out=out[:, part])

    # per column of the result: a column of b and one of the result
    for_each_slice(work, b.shape[1], (b.shape[0] + a.shape[0]) * out.itemsize,
                   parallel=a.size * b.shape[1] >= PARALLEL_MIN_MULTIPLY_ADDS)
    return out


def linear_forward(x, weight, bias):
    """x: (N, in), weight: (out, in), bias: (out,) or None -> y = x W^T + b: (N, out)."""
    y = matmul(x, weight.T)  # x @ weight.T, on every core
    if bias is not None:
        y += bias
    return y, (x, weight, bias is not None)


def linear_backward(dy, cache):
    """dy: (N, out) -> dx = dy W (N, in), dweight = dy^T x (out, in), dbias = sum_n dy (out,)."""
    x, weight, has_bias = cache
    return matmul(dy, weight), matmul(dy.T, x), (dy.sum(axis=0) if has_bias else None)


def log_softmax(z, axis=-1):
    """log(softmax(z)) computed as z - max - log(sum(exp(z - max))): never overflows."""
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(z, axis=-1):
    """Stable softmax: exp(z - max) / sum(exp(z - max))."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels, and dL/dlogits.

    logits: (N, K), labels: (N,) ints in [0, K)
    returns: loss (float), dlogits (N, K) = (softmax(logits) - onehot(labels)) / N
    """
    n = logits.shape[0]
    logp = log_softmax(logits)
    loss = -logp[np.arange(n), labels].mean()
    dlogits = np.exp(logp)
    dlogits[np.arange(n), labels] -= 1
    return float(loss), dlogits / n


def sigmoid(z):
    """Stable logistic function: never evaluates exp of a large positive number."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1 / (1 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1 + ez)
    return out


# --------------------------------------------------------------------------- activations
# Same signatures as the loop versions in reference.py: forward returns (y, cache).
# Elementwise ufuncs keep their input's memory layout, so channels-last stays channels-last.


def relu_forward(x):
    if x.ndim == 0:
        return np.maximum(x, 0), x > 0
    # The cache is the mask "x > 0" stored as 1.0 / 0.0 in x's dtype (not as bools), and
    # y = x * mask. Multiplying two float arrays runs NumPy's vector loop; np.maximum(x, 0)
    # and float-times-bool products run scalar loops, 2-3 times slower (measured).
    # empty_like keeps x's memory layout (channels-last stays channels-last).
    y, mask = np.empty_like(x), np.empty_like(x)

    def work(part):
        np.greater(x[part], 0, out=mask[part])
        np.multiply(x[part], mask[part], out=y[part])

    for_each_slice(work, len(x), 3 * x[0].nbytes)  # x, y and mask
    return y, mask


def relu_backward(dy, mask):
    if dy.ndim == 0:
        return dy * mask
    dx = np.empty_like(dy)

    def work(part):
        np.multiply(dy[part], mask[part], out=dx[part])

    for_each_slice(work, len(dy), 3 * dy[0].nbytes)  # dy, mask and dx
    return dx


def leaky_relu_forward(x, slope):
    return np.where(x > 0, x, slope * x), x


def leaky_relu_backward(dy, x, slope):
    return dy * np.where(x > 0, 1.0, slope).astype(dy.dtype, copy=False)


def sigmoid_forward(x):
    y = sigmoid(x)
    return y, y


def sigmoid_backward(dy, y):
    return dy * y * (1 - y)


def tanh_forward(x):
    y = np.tanh(x)
    return y, y


def tanh_backward(dy, y):
    return dy * (1 - y * y)
