"""Threads for the fast kernels: a batch goes through in slices, several at a time.

NumPy releases Python's GIL inside its loops and matrix products, so threads that each call
NumPy on their own slice of the batch really do run at the same time, one per core, as
PyTorch's threads do. :func:`for_each_slice` hands the slices out; :func:`single_threaded_blas`
keeps NumPy's own BLAS threads out of the way meanwhile; :func:`matmul` shares a big matrix
product's columns out between the threads.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import numpy as np

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
#: Change it with :func:`set_num_threads` (or the environment variable CNN_LIB_NUM_THREADS).
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


def map_slices(work, n: int, bytes_per_item: int) -> list:
    """``[work(part) for part in the slices]`` with the slices spread over the threads as in
    :func:`for_each_slice`, the results listed in the order of the slices whichever thread
    computed them: a kernel that sums the slices' shares of a gradient or a statistic then adds
    the same numbers in the same order every run, however the threads took the slices.
    """
    results = {}  # slice start -> what work returned for that slice

    def run(part):
        results[part.start] = work(part)

    for_each_slice(run, n, bytes_per_item)
    return [results[start] for start in sorted(results)]


# --------------------------------------------------------------------------- convolution


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


def set_num_threads(threads: int) -> None:
    """Use ``threads`` threads for the fast kernels from now on (1: everything on this thread)."""
    global NUM_THREADS
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"set_num_threads: threads must be a positive int, got {threads!r}")
    NUM_THREADS = threads


def get_num_threads() -> int:
    """How many threads the fast kernels use."""
    return NUM_THREADS

