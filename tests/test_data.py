"""Tests for cnn_lib.data: the shipped sample, the IDX reader, the loader, the downloader.

All offline: downloads go to a local HTTP server on 127.0.0.1 that the fixture starts, and
every cache/env path points into ``tmp_path``.
"""

from __future__ import annotations

import ast
import dataclasses
import gzip
import hashlib
import http.server
import re
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from cnn_lib import data
from cnn_lib.data import (
    DownloadError,
    default_cache_dir,
    download,
    find_dataset_dir,
    iterate_minibatches,
    load_fashion_mnist,
    load_mnist,
    normalize,
    read_idx,
    read_idx_pair,
)

REPO = Path(__file__).resolve().parent.parent
NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _shared_mnist_dir() -> Path | None:
    for candidate in (REPO.parent / "shared" / "data" / "mnist",
                      Path("/work/shared/data/mnist")):
        if all((candidate / name).is_file() for name in NAMES):
            return candidate
    return None


SHARED_MNIST = _shared_mnist_dir()
REAL_FASHION_SYSTEM_DIRS = data.DATASETS["fashion-mnist"].system_dirs
needs_full_mnist = pytest.mark.skipif(
    SHARED_MNIST is None,
    reason="full MNIST not found at <repo>/../shared/data/mnist or /work/shared/data/mnist",
)


# --------------------------------------------------------------------------------------
# helpers: tiny IDX files
# --------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.asarray(array, dtype=dtype).tobytes()


def tiny_dataset(n_train: int = 30, n_test: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    y_train = (np.arange(n_train) % 10).astype(np.uint8)
    y_test = (np.arange(n_test)[::-1] % 10).astype(np.uint8)
    return x_train, y_train, x_test, y_test


def tiny_files(seed: int = 0) -> dict[str, bytes]:
    """The four gzipped IDX files of a tiny MNIST-format dataset."""
    x_train, y_train, x_test, y_test = tiny_dataset(seed=seed)
    arrays = dict(zip(NAMES, (x_train, y_train, x_test, y_test), strict=True))
    return {name: gzip.compress(idx_bytes(a), mtime=0) for name, a in arrays.items()}


def sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        (folder / name).write_bytes(payload)
    return folder


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Never touch the real cache or a folder named by the user's environment."""
    monkeypatch.setenv("CNN_LIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CNN_LIB_MNIST_DIR", raising=False)
    monkeypatch.delenv("CNN_LIB_FASHION_MNIST_DIR", raising=False)
    # A Debian-installed Fashion-MNIST must not leak into the tests.
    monkeypatch.setitem(data.DATASETS, "fashion-mnist",
                        dataclasses.replace(data.DATASETS["fashion-mnist"], system_dirs=()))


# --------------------------------------------------------------------------------------
# a local HTTP server
# --------------------------------------------------------------------------------------


class LocalServer:
    """Serves ``routes``: URL path -> ("ok", bytes) or ("cut", bytes); anything else 404s.

    "cut" announces the full Content-Length, sends half the bytes, then closes the
    connection (a server dying mid-transfer). ``requests`` records every path asked for.
    """

    def __init__(self):
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                kind, body = outer.routes.get(self.path, ("missing", b""))
                if kind == "missing":
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if kind == "ok" else body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def mirror(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/"

    def serve(self, mirror: str, files: dict[str, bytes], kind: str = "ok") -> None:
        for name, payload in files.items():
            self.routes[f"/{mirror}/{name}"] = (kind, payload)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    srv = LocalServer()
    yield srv
    srv.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens here any more


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------------------
# the shipped sample
# --------------------------------------------------------------------------------------


def sample_arrays() -> dict[str, np.ndarray]:
    with np.load(data.SAMPLE_PATH, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def test_sample_file_layout():
    arrays = sample_arrays()
    expected = {
        "train_images": ((4000, 28, 28), np.uint8), "train_labels": ((4000,), np.uint8),
        "train_indices": ((4000,), np.uint16),
        "test_images": ((1000, 28, 28), np.uint8), "test_labels": ((1000,), np.uint8),
        "test_indices": ((1000,), np.uint16),
    }
    assert {k: (v.shape, v.dtype) for k, v in arrays.items()} == expected
    assert data.SAMPLE_PATH.stat().st_size < 2_000_000


def test_sample_is_balanced_disjoint_and_split_by_the_documented_rule():
    a = sample_arrays()
    assert np.bincount(a["train_labels"], minlength=10).tolist() == [400] * 10
    assert np.bincount(a["test_labels"], minlength=10).tolist() == [100] * 10
    assert not set(a["train_indices"].tolist()) & set(a["test_indices"].tolist())
    train_bytes = {img.tobytes() for img in a["train_images"]}
    assert not any(img.tobytes() in train_bytes for img in a["test_images"])
    for key in ("train_indices", "test_indices"):  # stored in original MNIST order
        assert np.all(np.diff(a[key].astype(np.int64)) > 0)
    for digit in range(10):  # first 400 of each digit -> train, last 100 -> test
        train = a["train_indices"][a["train_labels"] == digit]
        test = a["test_indices"][a["test_labels"] == digit]
        assert train.max() < test.min()


def test_sample_checksum_and_size_match_readme():
    readme = (REPO / "cnn_lib" / "assets" / "README.md").read_text()
    match = re.search(r"SHA-256 of mnist_sample\.npz:\s*`([0-9a-f]{64})`", readme)
    assert match, "cnn_lib/assets/README.md must state 'SHA-256 of mnist_sample.npz: `<hex>`'"
    payload = data.SAMPLE_PATH.read_bytes()
    assert sha256(payload) == match.group(1), "sample changed: update cnn_lib/assets/README.md"
    size = re.search(r"\|\s*size\s*\|\s*([\d,]+) bytes", readme)
    assert size and int(size.group(1).replace(",", "")) == len(payload)


def _shipped_weights():
    from cnn_lib import gan
    from cnn_lib.models import PRETRAINED

    return [PRETRAINED["lenet_small"], gan.PRETRAINED]


@pytest.mark.parametrize("path", _shipped_weights(), ids=lambda p: p.name)
def test_shipped_weights_checksum_matches_readme(path):
    readme = (REPO / "cnn_lib" / "assets" / "README.md").read_text()
    match = re.search(rf"SHA-256 of {re.escape(path.name)}:\s*`([0-9a-f]{{64}})`", readme)
    assert match, f"cnn_lib/assets/README.md must state 'SHA-256 of {path.name}: `<hex>`'"
    assert sha256(path.read_bytes()) == match.group(1), "weights changed: update cnn_lib/assets/README.md"


def test_load_sample_defaults():
    ds = load_mnist()
    x_train, y_train, x_test, y_test = ds  # unpacks as a 4-tuple
    assert x_train.shape == (4000, 1, 28, 28) and x_train.dtype == np.uint8
    assert x_test.shape == (1000, 1, 28, 28) and x_test.dtype == np.uint8
    assert y_train.shape == (4000,) and y_train.dtype == np.int64
    assert y_test.shape == (1000,) and y_test.dtype == np.int64
    assert ds.x_train is x_train and "x_train=uint8(4000, 1, 28, 28)" in repr(ds)
    raw = sample_arrays()
    np.testing.assert_array_equal(x_train[:, 0], raw["train_images"])
    np.testing.assert_array_equal(y_test, raw["test_labels"])


def test_missing_sample_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "SAMPLE_PATH", tmp_path / "nope" / "mnist_sample.npz")
    with pytest.raises(FileNotFoundError, match=r"sample is missing.*pip install -e \."):
        load_mnist()


@needs_full_mnist
def test_sample_images_are_the_claimed_original_mnist_images():
    mnist = read_idx(SHARED_MNIST / "train-images-idx3-ubyte.gz")
    labels = read_idx(SHARED_MNIST / "train-labels-idx1-ubyte.gz")
    a = sample_arrays()
    for split in ("train", "test"):
        idx = a[f"{split}_indices"].astype(np.int64)
        assert np.array_equal(a[f"{split}_images"], mnist[idx]), f"{split} images differ"
        assert np.array_equal(a[f"{split}_labels"], labels[idx])
    # The README's claim: the first 500 training images of each digit.
    every = np.concatenate([a["train_indices"], a["test_indices"]]).astype(np.int64)
    first_500 = np.concatenate([np.flatnonzero(labels == d)[:500] for d in range(10)])
    assert np.array_equal(np.sort(every), np.sort(first_500))


@needs_full_mnist
def test_full_mnist_counts_and_histograms():
    x_train, y_train, x_test, y_test = load_mnist("full", path=SHARED_MNIST)
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842,
                                             5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982,
                                            892, 958, 1028, 974, 1009]
    assert abs(normalize(x_train[:6000], "unit").mean() - data.MNIST_MEAN) < 0.01


@needs_full_mnist
def test_pinned_checksums_match_shared_sha256sums_and_real_files_download(server, tmp_path):
    sums = dict(line.split()[::-1] for line in
                (SHARED_MNIST / "SHA256SUMS").read_text().splitlines() if line.strip())
    pinned = {name: c.removeprefix("sha256:") for name, c in data.DATASETS["mnist"].files.items()}
    assert pinned == sums
    # The real files through a local mirror, checked against the pinned table.
    server.serve("real", {name: (SHARED_MNIST / name).read_bytes() for name in NAMES})
    folder = download("mnist", cache_dir=tmp_path / "c", mirrors=[server.mirror("real")],
                      progress=False)
    assert leftovers(folder) == sorted(NAMES)


# --------------------------------------------------------------------------------------
# read_idx and read_idx_pair: every way a file can be wrong
# --------------------------------------------------------------------------------------


def test_read_idx_gzip_and_raw_and_other_types(tmp_path):
    images = tiny_dataset()[0]
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "a").write_bytes(idx_bytes(images))
    (tmp_path / "misleading.gz").write_bytes(idx_bytes(images))  # magic bytes, not name
    for name in ("a.gz", "a", "misleading.gz"):
        got = read_idx(tmp_path / name)
        assert got.dtype == np.uint8 and got.flags.writeable
        np.testing.assert_array_equal(got, images)
    ints = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    (tmp_path / "i").write_bytes(idx_bytes(ints, 0x0C))
    got = read_idx(tmp_path / "i")
    assert got.dtype == np.int32 and got.dtype.isnative
    np.testing.assert_array_equal(got, ints)


def _write(tmp_path: Path, name: str, payload: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(payload)
    return path


@pytest.mark.parametrize("case, pattern", [
    ("truncated_data", r"file truncated: the header says shape \(30, 28, 28\).*23,520 data "
                       r"bytes.*23,519 bytes follow"),
    ("trailing_bytes", r"has trailing bytes.*23,520 data bytes.*23,523 bytes follow"),
    ("truncated_gzip", r"gzip stream is corrupt or truncated"),
    ("corrupt_gzip", r"gzip stream is corrupt or truncated"),
    ("wrong_magic", r"not an IDX file.*MNIST images: 2051.*got 305419896 \(0x12345678\)"),
    ("unknown_type", r"unknown IDX data type 0x07 in magic number 1795"),
    ("truncated_header", r"truncated header: 3 dimensions need 16 header bytes, the file "
                         r"has 10"),
    ("empty", r"too short for an IDX header: expected at least 4 bytes, got 0"),
    ("zero_dims", r"declares 0 dimensions"),
])
def test_read_idx_rejects_bad_files(tmp_path, case, pattern):
    good = idx_bytes(tiny_dataset()[0])
    payload = {
        "truncated_data": gzip.compress(good[:-1]),
        "trailing_bytes": good + b"\0\0\0",
        "truncated_gzip": gzip.compress(good)[:-100],
        "corrupt_gzip": None,
        "wrong_magic": b"\x12\x34\x56\x78" + good[4:],
        "unknown_type": b"\x00\x00\x07\x03" + good[4:],
        "truncated_header": good[:10],
        "empty": b"",
        "zero_dims": b"\x00\x00\x08\x00",
    }[case]
    if case == "corrupt_gzip":
        compressed = bytearray(gzip.compress(good))
        compressed[len(compressed) // 2] ^= 0xFF
        payload = bytes(compressed)
    path = _write(tmp_path, f"{case}.gz", payload)
    with pytest.raises(ValueError, match=pattern) as info:
        read_idx(path)
    assert str(path) in str(info.value)  # the message names the file


def _pair(tmp_path, images, labels):
    return (_write(tmp_path, "img.gz", gzip.compress(idx_bytes(images))),
            _write(tmp_path, "lab.gz", gzip.compress(idx_bytes(labels))))


def test_read_idx_pair_ok(tmp_path):
    x, y = tiny_dataset()[:2]
    images, labels = read_idx_pair(*_pair(tmp_path, x, y))
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)


def test_label_file_shorter_than_image_file(tmp_path):
    x, y = tiny_dataset()[:2]
    with pytest.raises(ValueError, match=r"lab\.gz has 29 labels but .*img\.gz has 30 images"):
        read_idx_pair(*_pair(tmp_path, x, y[:-1]))


def test_labels_above_9(tmp_path):
    x, y = tiny_dataset()[:2]
    y = y.copy()
    y[3] = 12
    with pytest.raises(ValueError, match=r"labels must be digits 0..9, found 12 at index 3"):
        read_idx_pair(*_pair(tmp_path, x, y))


def test_swapped_image_and_label_files(tmp_path):
    x, y = tiny_dataset()[:2]
    images, labels = _pair(tmp_path, x, y)
    with pytest.raises(ValueError, match=r"expected an IDX image file \(magic 2051.*"
                                         r"is this a label file\?"):
        read_idx_pair(labels, images)


def test_images_must_be_28x28(tmp_path):
    x = np.zeros((5, 14, 14), np.uint8)
    with pytest.raises(ValueError, match=r"expected 28x28 images, got 14x14"):
        read_idx_pair(*_pair(tmp_path, x, np.zeros(5, np.uint8)))


def test_full_load_reports_bad_pair_in_folder(tmp_path):
    files = tiny_files()
    x, y = tiny_dataset()[:2]
    files["train-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(y[:-2]))
    folder = write_files(tmp_path / "bad", files)
    with pytest.raises(ValueError, match=r"has 28 labels but .* has 30 images"):
        load_mnist("full", path=folder)


# --------------------------------------------------------------------------------------
# load_mnist: sources, paths, subset, shuffle, normalisation
# --------------------------------------------------------------------------------------


def test_load_full_from_path_gz_and_raw(tmp_path):
    x_train, y_train, x_test, y_test = tiny_dataset()
    folder = write_files(tmp_path / "m", tiny_files())
    ds = load_mnist("full", path=folder)
    np.testing.assert_array_equal(ds.x_train[:, 0], x_train)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.y_train.dtype == np.int64
    raw = write_files(tmp_path / "raw", {n.removesuffix(".gz"): gzip.decompress(b)
                                         for n, b in tiny_files().items()})
    np.testing.assert_array_equal(load_mnist("full", path=raw).x_test[:, 0], x_test)


def test_full_missing_files_error_says_how_to_get_them(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        load_mnist("full", path=tmp_path / "empty")
    message = str(info.value)
    assert str(tmp_path / "empty") in message
    assert "python -m cnn_lib.data download mnist" in message
    assert all(name in message for name in NAMES)
    assert "path=" in message and "CNN_LIB_MNIST_DIR" in message


def test_full_search_order_env_then_cache(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)none of these folders.*cache.*mnist"):
        load_mnist("full")
    cache_copy = write_files(tmp_path / "cache" / "mnist", tiny_files(seed=1))
    assert find_dataset_dir("mnist") == cache_copy
    env_copy = write_files(tmp_path / "env", tiny_files(seed=2))
    monkeypatch.setenv("CNN_LIB_MNIST_DIR", str(env_copy))
    assert find_dataset_dir("mnist") == env_copy
    np.testing.assert_array_equal(load_mnist("full").x_train[:, 0], tiny_dataset(seed=2)[0])


def test_fashion_mnist_from_env_folder(monkeypatch, tmp_path):
    folder = write_files(tmp_path / "fashion", tiny_files(seed=3))
    with pytest.raises(FileNotFoundError, match="download fashion-mnist"):
        load_fashion_mnist()
    monkeypatch.setenv("CNN_LIB_FASHION_MNIST_DIR", str(folder))
    ds = load_fashion_mnist(normalize="standard")
    expected = (tiny_dataset(seed=3)[0] / 255 - data.FASHION_MNIST_MEAN) / data.FASHION_MNIST_STD
    np.testing.assert_allclose(ds.x_train[:, 0], expected, rtol=1e-5, atol=1e-5)


def test_debian_fashion_location_is_searched():
    # Where Debian's dataset-fashion-mnist package installs the four files.
    assert "/usr/share/datasets/fashion-mnist" in REAL_FASHION_SYSTEM_DIRS


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"source must be 'sample' or 'full', got 'web'"):
        load_mnist("web")
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'"):
        load_mnist("full", dataset="cifar")
    with pytest.raises(ValueError, match=r"only MNIST has a shipped sample"):
        load_mnist(dataset="fashion-mnist")
    with pytest.raises(ValueError, match=r"path= is for source='full'"):
        load_mnist(path="/tmp")
    with pytest.raises(ValueError, match=r"dtype= only applies to normalised images"):
        load_mnist(dtype=np.float64)
    with pytest.raises(ValueError, match=r"test has 1,000 images, asked for 5,000"):
        load_mnist(subset=(10, 5000))
    with pytest.raises(TypeError, match=r"subset must be None, an int, or a pair"):
        load_mnist(subset="10")


@pytest.mark.parametrize("mode, lo, hi", [("tutorial", -0.5, 0.5), ("unit", 0.0, 1.0),
                                          ("standard", -0.1307 / 0.3081, 0.8693 / 0.3081)])
def test_normalize_modes(mode, lo, hi):
    x = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    out = normalize(x, mode)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert out[0, 0] == pytest.approx(lo, abs=1e-6) and out[0, 1] == pytest.approx(hi, abs=1e-6)
    assert normalize(x, mode, dtype=np.float64).dtype == np.float64


def test_normalize_refuses_floats_and_unknown_modes():
    with pytest.raises(TypeError, match=r"raw integer pixels.*already normalised"):
        normalize(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"unknown mode 'z-score'"):
        normalize(np.zeros(3, np.uint8), "z-score")


def test_load_normalized_sample():
    ds = load_mnist(normalize="tutorial")
    assert ds.x_train.dtype == np.float32 and ds.x_train.shape == (4000, 1, 28, 28)
    assert ds.x_train.min() == -0.5 and ds.x_train.max() == 0.5
    assert load_mnist(normalize="unit", dtype=np.float64).x_test.dtype == np.float64


def test_subset_balanced_and_first_n():
    ds = load_mnist(subset=(50, 23))
    assert np.bincount(ds.y_train, minlength=10).tolist() == [5] * 10
    assert np.bincount(ds.y_test, minlength=10).tolist() == [3, 3, 3] + [2] * 7
    full = load_mnist()
    plain = load_mnist(subset=7, balanced=False)
    np.testing.assert_array_equal(plain.x_train, full.x_train[:7])
    np.testing.assert_array_equal(plain.y_test, full.y_test[:7])
    assert len(load_mnist(subset=(None, 10)).y_train) == 4000


def test_balanced_subset_needs_enough_of_each_class(tmp_path):
    files = tiny_files()
    lopsided = np.array([0] * 2 + [1] * 28, np.uint8)  # no 2s at all
    files["train-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(lopsided))
    folder = write_files(tmp_path / "m", files)
    with pytest.raises(ValueError, match=r"needs 2 images of class 2, only 0 available"):
        load_mnist("full", path=folder, subset=(20, None))
    assert np.bincount(load_mnist("full", path=folder, subset=(20, None),
                                  balanced=False).y_train).tolist() == [2, 18]


def test_shuffle_is_seeded_and_keeps_pairs():
    a = load_mnist(shuffle=True, rng=np.random.default_rng(7))
    b = load_mnist(shuffle=True, rng=7)
    c = load_mnist(shuffle=True, rng=8)
    plain = load_mnist()
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, c.y_train)
    assert not np.array_equal(a.y_train, plain.y_train)
    label_of = {img.tobytes(): lab for img, lab in zip(plain.x_train, plain.y_train,
                                                         strict=True)}
    assert all(label_of[img.tobytes()] == lab for img, lab in zip(a.x_train, a.y_train,
                                                                  strict=True))


def test_shuffled_subset_is_random_but_balanced():
    a = load_mnist(subset=100, shuffle=True, rng=0)
    b = load_mnist(subset=100, shuffle=True, rng=1)
    assert np.bincount(a.y_train).tolist() == [10] * 10
    assert not np.array_equal(a.x_train, b.x_train)


def test_global_numpy_seed_is_not_used():
    np.random.seed(0)  # noqa: NPY002 -- the legacy global state is what is checked here
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    load_mnist(shuffle=True, rng=3)
    list(iterate_minibatches(np.arange(10), np.arange(10), 3, rng=3))
    assert np.array_equal(np.random.get_state()[1], state)  # noqa: NPY002


# --------------------------------------------------------------------------------------
# iterate_minibatches
# --------------------------------------------------------------------------------------


def test_minibatches_cover_everything_once():
    x, y = np.arange(10) * 10, np.arange(10)
    batches = list(iterate_minibatches(x, y, 4, rng=0))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate([b[1] for b in batches]).tolist()) == list(range(10))
    assert all(np.array_equal(bx, by * 10) for bx, by in batches)
    again = list(iterate_minibatches(x, y, 4, rng=0))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))


def test_minibatches_in_order_and_drop_last():
    x, y = np.arange(10), np.arange(10)
    batches = list(iterate_minibatches(x, y, 4, shuffle=False, drop_last=True))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_minibatches_bad_arguments():
    with pytest.raises(ValueError, match=r"same length, got 3 and 2"):
        list(iterate_minibatches(np.zeros(3), np.zeros(2), 1))
    with pytest.raises(ValueError, match=r"batch_size must be a positive int, got 0"):
        list(iterate_minibatches(np.zeros(3), np.zeros(3), 0))


# --------------------------------------------------------------------------------------
# download: against a local HTTP server
# --------------------------------------------------------------------------------------


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CNN_LIB_CACHE", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("CNN_LIB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "cnn_lib"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "cnn_lib"


def test_download_success_then_load(server, tmp_path):
    files = tiny_files()
    server.serve("m1", files)
    folder = download(mirrors=[server.mirror("m1")], progress=False,
                      files={name: sha256(payload) for name, payload in files.items()})
    assert folder == tmp_path / "cache" / "mnist"  # $CNN_LIB_CACHE / dataset
    assert leftovers(folder) == sorted(NAMES)  # no temp files
    assert all((folder / n).read_bytes() == files[n] for n in NAMES)
    ds = load_mnist("full")  # found in the cache
    np.testing.assert_array_equal(ds.x_train[:, 0], tiny_dataset()[0])


def test_download_md5_and_cache_dir_and_dataset_subfolder(server, tmp_path):
    files = tiny_files()
    server.serve("f", files)
    folder = download("fashion-mnist", cache_dir=tmp_path / "elsewhere",
                      mirrors=[server.mirror("f")], progress=False,
                      files={n: "md5:" + hashlib.md5(p).hexdigest() for n, p in files.items()})
    assert folder == tmp_path / "elsewhere" / "fashion-mnist"
    assert leftovers(folder) == sorted(NAMES)


def test_corrupted_byte_fails_checksum_and_caches_nothing(server, tmp_path):
    name = NAMES[1]
    good = tiny_files()[name]
    bad = bytearray(good)
    bad[20] ^= 0x01
    server.serve("m1", {name: bytes(bad)})
    with pytest.raises(DownloadError) as info:
        download(mirrors=[server.mirror("m1")], progress=False, files={name: sha256(good)})
    message = str(info.value)
    assert "checksum mismatch" in message and sha256(good) in message
    assert server.mirror("m1") + name in message
    assert leftovers(tmp_path / "cache" / "mnist") == []  # no file, no .part file


def test_404_on_first_mirror_falls_through_to_second(server):
    files = tiny_files()
    server.serve("good", files)
    folder = download(mirrors=[server.mirror("empty"), server.mirror("good")], progress=False,
                      files={n: sha256(p) for n, p in files.items()})
    assert leftovers(folder) == sorted(NAMES)
    assert server.requests[:2] == [f"/empty/{NAMES[0]}", f"/good/{NAMES[0]}"]


def test_unreachable_mirror_falls_through(server):
    files = {NAMES[1]: tiny_files()[NAMES[1]]}
    server.serve("good", files)
    folder = download(mirrors=[closed_port_url(), server.mirror("good")], progress=False,
                      files={n: sha256(p) for n, p in files.items()}, timeout=5)
    assert leftovers(folder) == [NAMES[1]]


def test_server_dying_mid_transfer_leaves_nothing(server, tmp_path):
    name = NAMES[0]
    payload = tiny_files()[name]
    server.serve("m1", {name: payload}, kind="cut")
    with pytest.raises(DownloadError, match=r"transfer broke off") as info:
        download(mirrors=[server.mirror("m1")], progress=False, files={name: sha256(payload)})
    assert f"of {len(payload):,} bytes" in str(info.value)
    assert leftovers(tmp_path / "cache" / "mnist") == []


def test_all_mirrors_failing_says_what_was_tried_and_what_to_do(server, tmp_path):
    name = NAMES[3]
    with pytest.raises(DownloadError) as info:
        download(mirrors=[server.mirror("a"), server.mirror("b")], progress=False,
                 files={name: sha256(b"x")})
    message = str(info.value)
    assert f"{server.mirror('a')}{name}: HTTP 404" in message
    assert f"{server.mirror('b')}{name}: HTTP 404" in message
    assert str(tmp_path / "cache" / "mnist") in message and "path=" in message


def test_cached_good_file_needs_no_network(server, tmp_path):
    files = tiny_files()
    write_files(tmp_path / "cache" / "mnist", files)
    download(mirrors=[server.mirror("m1")], progress=False,
             files={n: sha256(p) for n, p in files.items()})
    assert server.requests == []


def test_cached_corrupted_file_is_downloaded_again(server, tmp_path):
    files = tiny_files()
    name = NAMES[2]
    folder = write_files(tmp_path / "cache" / "mnist", {name: files[name][:-5]})
    server.serve("m1", files)
    download(mirrors=[server.mirror("m1")], progress=False, files={name: sha256(files[name])})
    assert (folder / name).read_bytes() == files[name]
    assert server.requests == [f"/m1/{name}"]
    assert leftovers(folder) == [name]


def test_bad_checksum_spec():
    with pytest.raises(ValueError, match=r"bad checksum 'sha1:abc'"):
        download(mirrors=["http://127.0.0.1:9/"], progress=False, files={"x": "sha1:abc"})


def test_cli_download_failure_exit_code_and_message(server, tmp_path, capsys):
    code = data.main(["download", "mnist", "--cache-dir", str(tmp_path / "c"),
                      "--mirror", server.mirror("none"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "could not download train-images-idx3-ubyte.gz" in err and "HTTP 404" in err
    assert leftovers(tmp_path / "c" / "mnist") == []


def test_cli_info(capsys):
    assert data.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "x_train=uint8(4000, 1, 28, 28)" in out and "mnist: full set not found" in out


# --------------------------------------------------------------------------------------
# never pickle
# --------------------------------------------------------------------------------------

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib"}


def _python_sources() -> list[Path]:
    return sorted((REPO / "cnn_lib").rglob("*.py")) + sorted((REPO / "scripts").glob("*.py"))


def test_no_source_uses_pickle():
    problems = []
    for path in _python_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [(node.module or "").split(".")[0]]
            else:
                modules = []
            problems += [f"{path.name}:{node.lineno} imports {m}"
                         for m in modules if m in PICKLE_MODULES]
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "allow_pickle" and not (
                            isinstance(kw.value, ast.Constant) and kw.value.value is False):
                        problems.append(f"{path.name}:{node.lineno} allow_pickle is not False")
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr == "load" and \
                        isinstance(func.value, ast.Name) and func.value.id in ("np", "numpy") \
                        and not any(kw.arg == "allow_pickle" for kw in node.keywords):
                    problems.append(f"{path.name}:{node.lineno} np.load without "
                                    "allow_pickle=False")
    assert not problems, "pickle must never be used:\n" + "\n".join(problems)
