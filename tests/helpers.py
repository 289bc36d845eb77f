"""Shared test helpers: hypothesis strategies for layer configurations, well-separated random
inputs (so finite differences never straddle a kink of ReLU or a max), and a comparison of
results up to rounding that holds whichever kernels OpenBLAS picks."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Derandomized: the same cases on every run, in CI and on a student's laptop.
settings.register_profile(
    "course", derandomize=True, deadline=None, max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("course")

TOL = 1e-7  # float64 gradient checks; a right gradient gives ~1e-9 or better


def close(a, b, dtype, what=""):
    """Equal up to rounding, measured against the array's magnitude (as relative_error does):
    sums that cancel round differently when OpenBLAS picks other kernels (SkylakeX, Haswell,
    Zen) or another blocking for another batch size, so an element-by-element rtol, or an
    exact comparison, would fail on some CPUs for right results."""
    from cnn_lib.gradcheck import relative_error

    tol = 1e-5 if np.dtype(dtype) == np.float32 else 1e-12
    err = relative_error(a, b)
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


def separated(rng: np.random.Generator, shape, spacing=0.01) -> np.ndarray:
    """Distinct values at least ``spacing`` apart, none within spacing/2 of zero, shuffled.

    Max-pooling and ReLU are not differentiable where two window values tie or x == 0;
    a finite-difference step h = 1e-6 never crosses such a point with these inputs.
    """
    size = int(np.prod(shape))
    values = (np.arange(size) - size // 2 + 0.5) * spacing
    return rng.permutation(values).reshape(shape).astype(np.float64)


@st.composite
def conv_configs(draw, transpose=False):
    """A random but valid convolution: batch 1-3, channels 1-6 (both sides of the fast
    kernels' FEW_CHANNELS = 4), kernel 1-5, stride 1-3, padding 0-2, and for a transposed
    convolution output_padding 0 .. stride - 1."""
    n = draw(st.integers(1, 3))
    c_in = draw(st.integers(1, 6))
    c_out = draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    if transpose:
        # output (H-1)*s - 2p + k (+ output_padding) must be >= 1
        h = draw(st.integers(max(1, (2 * ph - kh) // sh + 2), 6))
        w = draw(st.integers(max(1, (2 * pw - kw) // sw + 2), 6))
    else:
        # the kernel must fit the padded input
        h = draw(st.integers(max(1, kh - 2 * ph), kh + 5))
        w = draw(st.integers(max(1, kw - 2 * pw), kw + 5))
    output_padding = (draw(st.integers(0, sh - 1)), draw(st.integers(0, sw - 1))) if transpose else (0, 0)
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return dict(n=n, c_in=c_in, c_out=c_out, kernel=(kh, kw), stride=(sh, sw),
                padding=(ph, pw), output_padding=output_padding, h=h, w=w, bias=bias, seed=seed)


@st.composite
def pool_configs(draw):
    """Pooling windows 1-4 with stride 1-4: overlapping (s < k), tiling and non-tiling."""
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(kh, kh + 6)), draw(st.integers(kw, kw + 6))
    return dict(n=n, c=c, kernel=(kh, kw), stride=(sh, sw), h=h, w=w, seed=draw(st.integers(0, 2**16)))
