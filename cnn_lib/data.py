"""MNIST for the course: a real sample shipped offline, the full set on request.

Quick start::

    from cnn_lib.data import load_mnist, iterate_minibatches
    x_train, y_train, x_test, y_test = load_mnist(normalize="tutorial")
    # x_train: (4000, 1, 28, 28) float32 in [-0.5, 0.5]; y_train: (4000,) int64 in 0..9

Where the data comes from:

* ``source="sample"`` (the default) reads ``cnn_lib/assets/mnist_sample.npz`` (package data):
  5,000 real MNIST training images, 500 per digit, split 400/100 per digit into a fixed
  train/test split (see ``cnn_lib/assets/README.md``). No network, no download.
* ``source="full"`` reads the four standard IDX files (``train-images-idx3-ubyte.gz``,
  ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
  ``t10k-labels-idx1-ubyte.gz``; gzipped or not) from ``path=``, else from the folder in
  ``$CNN_LIB_MNIST_DIR``, else from the download cache. Fetch them into the cache with::

      python -m cnn_lib.data download mnist

* Fashion-MNIST has the same format and file names: ``load_fashion_mnist()`` or
  ``load_mnist("full", dataset="fashion-mnist")``. It also looks in
  ``/usr/share/datasets/fashion-mnist`` (where Debian's ``dataset-fashion-mnist`` package
  installs it).

Nothing here ever unpickles: ``.npz`` files are opened with ``allow_pickle=False``, and
IDX files are parsed by :func:`read_idx`, which checks every header field and length.

Run ``python -m cnn_lib.data --help`` for the command line (``download``, ``info``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import numbers
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "MNIST",
    "MNIST_MEAN",
    "MNIST_STD",
    "SAMPLE_PATH",
    "DownloadError",
    "default_cache_dir",
    "download",
    "find_dataset_dir",
    "iterate_minibatches",
    "load_fashion_mnist",
    "load_mnist",
    "normalize",
    "read_idx",
    "read_idx_pair",
]

ASSETS = Path(__file__).resolve().parent / "assets"
"""The files that ship inside the package (``cnn_lib/assets/``): the MNIST sample, the trained
weights of lessons 10 and 11, and their ``README.md`` (provenance and SHA-256 checksums)."""

SAMPLE_PATH = ASSETS / "mnist_sample.npz"
"""The shipped sample: ``cnn_lib/assets/mnist_sample.npz``."""

#: Mean and standard deviation of the 60,000 MNIST training pixels, scaled to [0, 1].
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
#: The same for Fashion-MNIST's training set.
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530

#: Fashion-MNIST's label names, indexed by label.
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

#: The four files of an MNIST-format dataset, per split: (images, labels), without ".gz".
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_IMAGE_SIZE = (28, 28)
_NUM_CLASSES = 10
_CHUNK = 1 << 16


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset can be downloaded from and found on disk.

    Attributes:
        name: the dataset's name, also its subfolder in the cache.
        files: file name -> pinned checksum, written ``"sha256:<hex>"`` or ``"md5:<hex>"``.
        mirrors: base URLs, tried in order; a file's URL is ``mirror + file name``.
        env_var: environment variable that may name a folder holding the four files.
        system_dirs: folders that OS packages install the files into (searched as well).
        mean, std: training-set pixel mean and std in [0, 1], for ``normalize="standard"``.
        checksum_source: where the pinned checksums come from (shown in messages/README).
    """

    name: str
    files: Mapping[str, str]
    mirrors: tuple[str, ...]
    env_var: str
    system_dirs: tuple[str, ...]
    mean: float
    std: float
    checksum_source: str


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        files={
            "train-images-idx3-ubyte.gz":
                "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz":
                "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz":
                "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz":
                "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        env_var="CNN_LIB_MNIST_DIR",
        system_dirs=(),
        mean=MNIST_MEAN,
        std=MNIST_STD,
        checksum_source="SHA-256 of the original yann.lecun.com files",
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        # Zalando publishes MD5s only (the table in the fashion-mnist README).
        files={
            "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        env_var="CNN_LIB_FASHION_MNIST_DIR",
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        checksum_source="MD5 published in Zalando's fashion-mnist README",
    ),
}


# --------------------------------------------------------------------------------------
# The return type
# --------------------------------------------------------------------------------------


class MNIST(NamedTuple):
    """Train and test arrays; unpacks as ``x_train, y_train, x_test, y_test``.

    Attributes:
        x_train: ``(N_train, 1, 28, 28)`` images: ``uint8`` 0..255 when loaded without
            ``normalize``, else floating point of the requested ``dtype``.
        y_train: ``(N_train,)`` ``int64`` labels in 0..9.
        x_test: ``(N_test, 1, 28, 28)``, same dtype as ``x_train``.
        y_test: ``(N_test,)`` ``int64`` labels in 0..9.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __repr__(self) -> str:
        pairs = zip(self._fields, self, strict=True)
        parts = ", ".join(f"{name}={value.dtype}{value.shape}" for name, value in pairs)
        return f"MNIST({parts})"


# --------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------

# IDX type byte -> big-endian dtype as stored in the file.
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_TYPE_NAMES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32",
                   0x0D: "float32", 0x0E: "float64"}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049  # 0x00000803 and 0x00000801: uint8, 3 / 1 dims


def _read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, decompressed if it starts with the gzip magic 1f 8b."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(
            f"{path}: the gzip stream is corrupt or truncated ({exc}). "
            "Delete the file and download it again."
        ) from exc


def read_idx(path) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped or not, checking everything.

    The IDX header is 2 zero bytes, a type byte (0x08 = uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), a byte giving the number of dimensions, then
    one big-endian uint32 per dimension; the data follow, big-endian, C order. MNIST image
    files therefore start with the magic number 2051 (uint8, 3 dims) and label files with
    2049 (uint8, 1 dim).

    Args:
        path: a ``str`` or ``Path``. Gzip is detected from the first two bytes (1f 8b), not
            from the file name.

    Returns:
        An array with the shape from the header and the native-endian version of the
        header's type: ``(N, 28, 28) uint8`` for MNIST images, ``(N,) uint8`` for labels.
        The array is a writable copy.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a corrupt/truncated gzip stream, a bad magic number, an unknown type,
            a truncated header, or data shorter or longer than the dimensions say. The
            message names the file, what was expected and what was found.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header: expected at least 4 bytes, "
                         f"got {len(data)}")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file: the magic number must start with two zero bytes "
            f"(MNIST images: 2051, labels: 2049), got {magic} (0x{magic:08x})"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_TYPES:
        known = ", ".join(f"0x{code:02x} {name}" for code, name in _IDX_TYPE_NAMES.items())
        raise ValueError(f"{path}: unknown IDX data type 0x{type_code:02x} in magic number "
                         f"{magic}; expected one of {known}")
    if ndim == 0:
        raise ValueError(f"{path}: magic number {magic} declares 0 dimensions; "
                         "expected at least 1")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{path}: truncated header: {ndim} dimensions need {header_size} "
                         f"header bytes, the file has {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header_size
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: file {what}: the header says shape {shape} of "
            f"{_IDX_TYPE_NAMES[type_code]}, i.e. {expected:,} data bytes after the "
            f"{header_size}-byte header, but {found:,} bytes follow it"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # native byte order, writable copy


def read_idx_pair(images_path, labels_path) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST-format image file and its label file, and check they belong together.

    Args:
        images_path: IDX file with magic 2051: ``(N, 28, 28)`` uint8 images.
        labels_path: IDX file with magic 2049: ``(N,)`` uint8 labels, each in 0..9.

    Returns:
        ``(images (N, 28, 28) uint8, labels (N,) uint8)``.

    Raises:
        ValueError: either file is malformed (see :func:`read_idx`), the image file is not
            ``N x 28 x 28`` uint8, the label file is not ``N`` uint8, the counts differ, or a
            label is outside 0..9. The message names the file(s) and both values.
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{images_path}: expected an IDX image file (magic {_IMAGES_MAGIC}: uint8, "
            f"3 dimensions), got {images.dtype} with {images.ndim} dimension(s), shape "
            f"{images.shape}" + (" -- is this a label file?" if images.ndim == 1 else "")
        )
    if images.shape[1:] != _IMAGE_SIZE:
        raise ValueError(f"{images_path}: expected 28x28 images, got "
                         f"{images.shape[1]}x{images.shape[2]}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{labels_path}: expected an IDX label file (magic {_LABELS_MAGIC}: uint8, "
            f"1 dimension), got {labels.dtype} with {labels.ndim} dimension(s), shape "
            f"{labels.shape}" + (" -- is this an image file?" if labels.ndim == 3 else "")
        )
    if len(labels) != len(images):
        raise ValueError(
            f"{labels_path} has {len(labels):,} labels but {images_path} has "
            f"{len(images):,} images; they must have the same count (mismatched or "
            "truncated pair?)"
        )
    _check_labels(labels, str(labels_path))
    return images, labels


def _check_labels(labels: np.ndarray, where: str) -> None:
    bad = np.flatnonzero(labels >= _NUM_CLASSES)
    if bad.size:
        raise ValueError(
            f"{where}: labels must be digits 0..9, found {int(labels[bad[0]])} at index "
            f"{int(bad[0])} ({bad.size} label(s) out of range)"
        )


# --------------------------------------------------------------------------------------
# Finding the files
# --------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """The download cache root: ``$CNN_LIB_CACHE``, else ``$XDG_CACHE_HOME/cnn_lib``, else
    ``~/.cache/cnn_lib``. Each dataset has its own subfolder (``mnist``, ``fashion-mnist``).
    """
    if os.environ.get("CNN_LIB_CACHE"):
        return Path(os.environ["CNN_LIB_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "cnn_lib"
    return Path.home() / ".cache" / "cnn_lib"


def _dataset_info(dataset: str) -> DatasetInfo:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of "
                         f"{', '.join(map(repr, DATASETS))}") from None


def _split_paths(directory: Path) -> dict[str, tuple[Path, Path]] | None:
    """The four files in ``directory`` (``.gz`` preferred), or None if any is missing."""
    found = {}
    for split, names in SPLIT_FILES.items():
        pair = []
        for name in names:
            candidates = [directory / f"{name}.gz", directory / name]
            existing = [c for c in candidates if c.is_file()]
            if not existing:
                return None
            pair.append(existing[0])
        found[split] = (pair[0], pair[1])
    return found


def _how_to_get(info: DatasetInfo) -> str:
    names = ", ".join(f"{images}.gz, {labels}.gz" for images, labels in SPLIT_FILES.values())
    return (
        f"To get {info.name}: run `python -m cnn_lib.data download {info.name}` "
        f"(saves into {default_cache_dir() / info.name}), or put the four files ({names}; "
        f"gzipped or not) in a folder and pass path=that_folder or set ${info.env_var}."
    )


def find_dataset_dir(dataset: str = "mnist", path=None) -> Path:
    """The folder ``load_mnist(source="full")`` reads the four IDX files from.

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        path: a folder to use. When given, only it is looked at.

    Returns:
        The first of these folders that holds all four files: ``path``; the folder named by
        ``$CNN_LIB_MNIST_DIR`` (``$CNN_LIB_FASHION_MNIST_DIR`` for Fashion-MNIST); OS
        package folders (``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST);
        ``default_cache_dir() / dataset``.

    Raises:
        FileNotFoundError: no such folder has all four files. The message lists the folders
            searched and says how to get the files.
    """
    info = _dataset_info(dataset)
    if path is not None:
        candidates = [Path(path).expanduser()]
    else:
        candidates = []
        if os.environ.get(info.env_var):
            candidates.append(Path(os.environ[info.env_var]).expanduser())
        candidates += [Path(d) for d in info.system_dirs]
        candidates.append(default_cache_dir() / info.name)
    for candidate in candidates:
        if _split_paths(candidate) is not None:
            return candidate
    searched = "\n".join(f"  - {c}" + ("" if c.is_dir() else " (no such folder)")
                         for c in candidates)
    raise FileNotFoundError(
        f"{info.name}: none of these folders has all four IDX files:\n{searched}\n"
        + _how_to_get(info)
    )


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def normalize(images: np.ndarray, mode: str = "tutorial", *, mean: float = MNIST_MEAN,
              std: float = MNIST_STD, dtype=np.float32) -> np.ndarray:
    """Turn raw 0..255 pixels into floats for a network.

    Args:
        images: integer array of raw pixels 0..255, any shape (e.g. ``(N, 1, 28, 28)``
            uint8). Floats are refused, because they are most likely already normalised.
        mode: ``"tutorial"``: ``x / 255 - 0.5``, in [-0.5, 0.5] (Victor Zhou's CNN
            tutorial); ``"unit"``: ``x / 255``, in [0, 1]; ``"standard"``:
            ``(x / 255 - mean) / std``, zero mean and unit variance over the training set
            (about [-0.42, 2.82] for MNIST; what PyTorch's MNIST examples use).
        mean, std: the statistics for ``"standard"``; default MNIST's training set
            (0.1307, 0.3081). Fashion-MNIST's are ``FASHION_MNIST_MEAN`` and
            ``FASHION_MNIST_STD`` (0.2860, 0.3530).
        dtype: floating dtype of the result, default ``np.float32``.

    Returns:
        A new array of the same shape and the given floating ``dtype``.
    """
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        raise TypeError(
            f"normalize expects raw integer pixels 0..255 (uint8), got dtype {images.dtype}; "
            "are these images already normalised? (For floats holding 0..255, call "
            ".astype(np.uint8) first.)"
        )
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"normalize: dtype must be a floating type, got {dtype}")
    unit = images.astype(dtype) / dtype.type(255)
    if mode == "unit":
        return unit
    if mode == "tutorial":
        return unit - dtype.type(0.5)
    if mode == "standard":
        return (unit - dtype.type(mean)) / dtype.type(std)
    raise ValueError(f"normalize: unknown mode {mode!r}; expected 'tutorial' (x/255 - 0.5), "
                     "'unit' (x/255) or 'standard' ((x/255 - mean)/std)")


_normalize = normalize  # load_mnist's `normalize=` argument shadows the function's name


def _load_sample() -> dict[str, np.ndarray]:
    if not SAMPLE_PATH.is_file():
        raise FileNotFoundError(
            f"the shipped MNIST sample is missing: expected {SAMPLE_PATH}. It is package data "
            "of cnn_lib: reinstall the course (`pip install .` or `pip install -e .` from its "
            "folder), or use load_mnist('full') after `python -m cnn_lib.data download mnist`."
        )
    with np.load(SAMPLE_PATH, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    for split in ("train", "test"):
        images, labels = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
        if images is None or labels is None:
            raise ValueError(f"{SAMPLE_PATH}: expected arrays {split}_images and "
                             f"{split}_labels, found {sorted(arrays)}")
        if (images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != _IMAGE_SIZE
                or labels.dtype != np.uint8 or labels.shape != images.shape[:1]):
            raise ValueError(
                f"{SAMPLE_PATH}: expected {split}_images (N, 28, 28) uint8 and "
                f"{split}_labels (N,) uint8, got {images.dtype}{images.shape} and "
                f"{labels.dtype}{labels.shape}"
            )
        _check_labels(labels, f"{SAMPLE_PATH}[{split}_labels]")
    return arrays


def sample_indices() -> np.ndarray:
    """The positions, in full MNIST's **training** set, of the 5,000 images of the shipped
    sample (its train and test images alike: they all come from MNIST's training set; see
    ``cnn_lib/assets/README.md``). Leave them out of a full-MNIST training run, and the sample stays a
    fair test of the trained network (``python -m cnn_lib train --holdout-sample``)."""
    with np.load(SAMPLE_PATH, allow_pickle=False) as data:
        return np.sort(np.concatenate([data["train_indices"], data["test_indices"]]).astype(np.int64))


def _balanced_take(labels: np.ndarray, n: int) -> np.ndarray:
    """Positions of the first ``n`` items, ``n // 10`` per class (+1 for the first
    ``n % 10`` classes), in their current order."""
    per_class = [n // _NUM_CLASSES + (c < n % _NUM_CLASSES) for c in range(_NUM_CLASSES)]
    chosen = []
    for c, k in enumerate(per_class):
        positions = np.flatnonzero(labels == c)
        if positions.size < k:
            raise ValueError(f"subset={n} balanced needs {k} images of class {c}, only "
                             f"{positions.size} available; ask for fewer or pass "
                             "balanced=False")
        chosen.append(positions[:k])
    return np.sort(np.concatenate(chosen))


def _subset_sizes(subset) -> tuple[int | None, int | None]:
    if subset is None:
        return None, None
    if isinstance(subset, numbers.Integral) and not isinstance(subset, bool):
        sizes = (int(subset), int(subset))
    elif isinstance(subset, (tuple, list)) and len(subset) == 2:
        sizes = tuple(subset)
    else:
        raise TypeError(f"subset must be None, an int, or a pair (n_train, n_test), "
                        f"got {subset!r}")
    for s in sizes:
        if s is not None and (not isinstance(s, numbers.Integral) or isinstance(s, bool)
                              or s < 1):
            raise ValueError(f"subset sizes must be positive ints or None, got {subset!r}")
    return sizes  # type: ignore[return-value]


def load_mnist(source: str = "sample", *, path=None, dataset: str = "mnist", subset=None,
               balanced: bool = True, shuffle: bool = False, rng=None, normalize=None,
               dtype=None) -> MNIST:
    """Load MNIST (or Fashion-MNIST) train and test sets as ``(N, 1, 28, 28)`` arrays.

    Args:
        source: ``"sample"`` (default): the 5,000-image sample shipped in ``cnn_lib/assets/`` (4,000
            train + 1,000 test, 400/100 per digit; both splits come from MNIST's *training*
            set, see ``cnn_lib/assets/README.md``). ``"full"``: the four IDX files, 60,000 train +
            10,000 test, found by :func:`find_dataset_dir`.
        path: folder holding the four IDX files (``source="full"`` only).
        dataset: ``"mnist"`` or ``"fashion-mnist"`` (``source="full"`` only).
        subset: keep only some images: an int ``n`` for ``n`` per split, or a pair
            ``(n_train, n_test)`` (``None`` in the pair keeps that split whole).
        balanced: with ``subset``, take ``n // 10`` images of each class (the first
            ``n % 10`` classes get one more); without it, take the first ``n``.
        shuffle: shuffle each split with ``rng`` (before ``subset`` is taken, so a shuffled
            subset is a random one; unshuffled it is the first images of each class).
        rng: a ``np.random.Generator`` or an int seed for ``shuffle``. ``None`` draws
            fresh entropy (``np.random.default_rng()``); the global NumPy seed is never
            used. Pass one for reproducible runs.
        normalize: ``None`` (default) keeps raw ``uint8`` pixels 0..255; ``"tutorial"``
            (``x/255 - 0.5``), ``"unit"`` (``x/255``) or ``"standard"`` (zero mean, unit
            std with the dataset's training statistics) give floats; see :func:`normalize`.
        dtype: float dtype of normalised images, default ``np.float32``. Only allowed with
            ``normalize`` (raw pixels stay uint8).

    Returns:
        :class:`MNIST` ``(x_train, y_train, x_test, y_test)``, which unpacks as a 4-tuple:
        ``x_*`` of shape ``(N, 1, 28, 28)``, dtype ``uint8`` or ``dtype`` when normalised;
        ``y_*`` of shape ``(N,)``, ``int64`` in 0..9.

    Raises:
        FileNotFoundError: the sample or the full files are missing (the message says how
            to get them).
        ValueError / TypeError: a bad argument or a malformed data file.
    """
    info = _dataset_info(dataset)
    if normalize is None and dtype is not None:
        raise ValueError("dtype= only applies to normalised images; pass normalize="
                         "'tutorial', 'unit' or 'standard' as well (raw pixels stay uint8)")
    sizes = dict(zip(SPLIT_FILES, _subset_sizes(subset), strict=True))
    if source == "sample":
        if dataset != "mnist":
            raise ValueError(f"only MNIST has a shipped sample; for {dataset!r} use "
                             "source='full'")
        if path is not None:
            raise ValueError("path= is for source='full'; the sample is always "
                             f"{SAMPLE_PATH}")
        arrays = _load_sample()
        splits = {s: (arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in SPLIT_FILES}
    elif source == "full":
        directory = find_dataset_dir(dataset, path)
        files = _split_paths(directory)
        assert files is not None  # find_dataset_dir checked
        splits = {s: read_idx_pair(*files[s]) for s in SPLIT_FILES}
    else:
        raise ValueError(f"source must be 'sample' or 'full', got {source!r}")

    generator = np.random.default_rng(rng) if shuffle else None

    out = []
    for split, (images, labels) in splits.items():
        labels = labels.astype(np.int64)
        if generator is not None:
            order = generator.permutation(len(labels))
            images, labels = images[order], labels[order]
        n = sizes[split]
        if n is not None:
            if n > len(labels):
                raise ValueError(f"subset: {split} has {len(labels):,} images, asked for "
                                 f"{n:,}")
            keep = _balanced_take(labels, n) if balanced else np.arange(n)
            images, labels = images[keep], labels[keep]
        images = images[:, np.newaxis, :, :]
        if normalize is not None:
            images = _normalize(images, normalize, mean=info.mean, std=info.std,
                                dtype=np.float32 if dtype is None else dtype)
        else:
            images = np.ascontiguousarray(images)
        out += [images, labels]
    return MNIST(*out)


def load_fashion_mnist(path=None, **kwargs) -> MNIST:
    """Load Fashion-MNIST: ``load_mnist("full", dataset="fashion-mnist", path=path, ...)``.

    Looks in ``path``, else ``$CNN_LIB_FASHION_MNIST_DIR``, else
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package), else
    the cache (``python -m cnn_lib.data download fashion-mnist``). Labels 0..9 name
    ``FASHION_MNIST_CLASSES``. Other keyword arguments are those of :func:`load_mnist`.
    """
    return load_mnist("full", dataset="fashion-mnist", path=path, **kwargs)


def iterate_minibatches(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool = True,
                        rng=None, drop_last: bool = False
                        ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x_batch, y_batch)`` pairs covering the data once (one epoch).

    Args:
        x: ``(N, ...)`` inputs, e.g. ``(N, 1, 28, 28)``.
        y: ``(N, ...)`` targets, e.g. ``(N,)`` labels.
        batch_size: items per batch; the last batch may be smaller.
        shuffle: visit the items in a random order.
        rng: where the order comes from. Create one ``np.random.default_rng(seed)`` before
            the training loop and pass it every epoch: each epoch gets a new order and the
            whole run is reproducible. An int seed gives the *same* order on every call;
            ``None`` draws fresh entropy. The global NumPy seed is never used.
        drop_last: skip a last batch smaller than ``batch_size``.

    Yields:
        ``x_batch (B, ...)`` and ``y_batch (B, ...)`` with ``B <= batch_size``: copies when
        shuffled, views otherwise.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = len(x)
    order = np.random.default_rng(rng).permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield x[start:start + batch_size], y[start:start + batch_size]
        else:
            take = order[start:start + batch_size]
            yield x[take], y[take]


# --------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------


class DownloadError(RuntimeError):
    """No mirror delivered a file whose checksum matched."""


class _MirrorFailed(Exception):
    pass


def _parse_checksum(checksum: str) -> tuple[str, str]:
    """``"sha256:<hex>"``, ``"md5:<hex>"`` or a bare 64-hex SHA-256 -> (algorithm, hex)."""
    algorithm, sep, digest = checksum.partition(":")
    if not sep:
        algorithm, digest = "sha256", checksum
    algorithm, digest = algorithm.lower(), digest.lower()
    sizes = {"sha256": 64, "md5": 32}
    if algorithm not in sizes or len(digest) != sizes[algorithm] \
            or any(ch not in "0123456789abcdef" for ch in digest):
        raise ValueError(f"bad checksum {checksum!r}: expected 'sha256:<64 hex digits>', "
                         "'md5:<32 hex digits>' or 64 bare hex digits")
    return algorithm, digest


def _file_digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _fetch(url: str, target: Path, algorithm: str, digest: str, *, timeout: float,
           progress: bool) -> None:
    """Stream ``url`` into a temp file beside ``target``, check it, move it into place.

    Any failure removes the temp file and raises ``_MirrorFailed``; ``target`` is only ever
    replaced by a complete file whose checksum matched.
    """
    from tqdm.auto import tqdm

    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                    dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except urllib.error.HTTPError as exc:
                raise _MirrorFailed(f"HTTP {exc.code} {exc.reason}") from exc
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise _MirrorFailed(f"could not connect: {reason}") from exc
            with response:
                length = response.headers.get("Content-Length")
                expected_size = int(length) if length and length.isdigit() else None
                total = "an unknown number of" if expected_size is None else f"{expected_size:,}"
                hasher = hashlib.new(algorithm)
                received = 0
                with tqdm(total=expected_size, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=target.name, disable=not progress, leave=False) as bar:
                    try:
                        for chunk in iter(lambda: response.read(_CHUNK), b""):
                            out.write(chunk)
                            hasher.update(chunk)
                            received += len(chunk)
                            bar.update(len(chunk))
                    except (OSError, http.client.HTTPException) as exc:
                        raise _MirrorFailed(
                            f"transfer broke off: got {received:,} of {total} bytes ({exc!r})"
                        ) from exc
            if expected_size is not None and received != expected_size:
                raise _MirrorFailed(f"transfer broke off: got {received:,} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        got = hasher.hexdigest()
        if got != digest:
            raise _MirrorFailed(f"checksum mismatch: expected {algorithm} {digest}, "
                                f"got {got} ({received:,} bytes)")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful os.replace


def download(dataset: str = "mnist", cache_dir=None, mirrors: Sequence[str] | None = None,
             progress: bool = True, *, files: Mapping[str, str] | None = None,
             timeout: float = 60.0) -> Path:
    """Download a dataset's files into the cache, checking each against a pinned checksum.

    For each file: a copy already in the cache is re-hashed and kept if it matches (no
    network); a copy that does not match is deleted. Then each mirror is tried in turn:
    the file is streamed into a temporary ``.part`` file in the same folder, its length and
    checksum are checked, and only then is it moved into place with ``os.replace``
    (atomic), so a partial, corrupted or interrupted download never leaves a file under
    the real name. A mirror that fails (HTTP error, no connection, broken transfer,
    checksum mismatch) falls through to the next.

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        cache_dir: cache root; files go to ``cache_dir / dataset``. Default
            :func:`default_cache_dir`.
        mirrors: base URLs to try in order (a file's URL is ``mirror + name``). Default:
            the dataset's public mirrors (``DATASETS[dataset].mirrors``).
        progress: show a tqdm progress bar per file, and say what was done.
        files: file name -> checksum (``"sha256:<hex>"``, ``"md5:<hex>"``, or bare
            SHA-256 hex). Default: the dataset's pinned table (``DATASETS[dataset].files``).
        timeout: seconds to wait on a connection before giving up on a mirror.

    Returns:
        The folder holding the files, ``cache_dir / dataset``.

    Raises:
        DownloadError: every mirror failed for some file. The message lists each URL with
            why it failed, and where to put the files by hand.
    """
    info = _dataset_info(dataset)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = root / info.name
    files = dict(info.files if files is None else files)
    mirrors = list(info.mirrors if mirrors is None else mirrors)
    if not mirrors:
        raise ValueError("download needs at least one mirror URL")
    folder.mkdir(parents=True, exist_ok=True)

    def say(message: str) -> None:
        if progress:
            print(message, file=sys.stderr)

    for name, checksum in files.items():
        algorithm, digest = _parse_checksum(checksum)
        target = folder / name
        if target.exists():
            if _file_digest(target, algorithm) == digest:
                say(f"{name}: already in {folder}, checksum ok")
                continue
            say(f"{name}: cached copy has the wrong checksum; deleting it and downloading "
                "again")
            target.unlink()
        failures = []
        for mirror in mirrors:
            url = mirror if mirror.endswith("/") else mirror + "/"
            url += name
            try:
                _fetch(url, target, algorithm, digest, timeout=timeout, progress=progress)
            except _MirrorFailed as exc:
                failures.append(f"  - {url}: {exc}")
                continue
            say(f"{name}: downloaded from {url}, checksum ok")
            break
        else:
            tried = "\n".join(failures)
            raise DownloadError(
                f"could not download {name} from any mirror:\n{tried}\n"
                f"Nothing partial was kept. Check your connection and retry, or download "
                f"{name} yourself from one of the URLs above, check that its {algorithm} is "
                f"{digest}, and put it in {folder} (or put all four files in any folder "
                f"and pass path=that_folder to load_mnist, or set ${info.env_var})."
            )
    return folder


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _info_text() -> str:
    lines = [f"sample: {SAMPLE_PATH}"]
    try:
        sample = load_mnist("sample")
        lines.append(f"  {sample!r}")
    except (FileNotFoundError, ValueError) as exc:
        lines.append(f"  unavailable: {exc}")
    lines.append(f"cache: {default_cache_dir()}")
    for name in DATASETS:
        try:
            lines.append(f"{name}: full set found in {find_dataset_dir(name)}")
        except FileNotFoundError:
            lines.append(f"{name}: full set not found "
                         f"(python -m cnn_lib.data download {name})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m cnn_lib.data {download,info}``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m cnn_lib.data",
        description="MNIST for the cnn_lib course: download the full set, or show what is "
                    "available.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("download", help="download a dataset into the cache, "
                                               "checking checksums")
    get.add_argument("dataset", nargs="?", default="mnist", choices=sorted(DATASETS))
    get.add_argument("--cache-dir", type=Path, default=None,
                     help="cache root (default: $CNN_LIB_CACHE, $XDG_CACHE_HOME/cnn_lib or "
                          "~/.cache/cnn_lib); files go into CACHE_DIR/DATASET")
    get.add_argument("--mirror", action="append", default=None, metavar="URL",
                     help="base URL to try (repeatable); default: the built-in mirrors")
    get.add_argument("--quiet", action="store_true", help="no progress bars")
    commands.add_parser("info", help="show where the sample, the cache and full sets are")
    args = parser.parse_args(argv)

    if args.command == "info":
        print(_info_text())
        return 0
    try:
        folder = download(args.dataset, cache_dir=args.cache_dir, mirrors=args.mirror,
                          progress=not args.quiet)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.dataset}: all files present and verified in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
