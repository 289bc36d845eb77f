"""Is this Python ready for the course? A check that answers in plain words.

In a notebook::

    from cnn_lib.envcheck import check_environment, format_report
    checks = check_environment()     # list of Check(item, ok, message)
    print(format_report(checks))

From a terminal, in the course folder (works even when NumPy or cnn_lib is missing, because
this file needs nothing but the standard library to start)::

    python cnn_lib/envcheck.py        # or: python -m cnn_lib.envcheck

What is checked: the Python version, that numpy, matplotlib, ipywidgets, tqdm and threadpoolctl import and
are recent enough, that cnn_lib imports, and that the MNIST sample shipped in
``cnn_lib/assets/`` is there, byte for byte the file whose SHA-256 ``cnn_lib/assets/README.md`` lists.

The report names no absolute path of your machine (so that lesson 00's saved output is the same
everywhere): a path inside the course folder is shown relative to it (``.venv/bin/python``), one
in your home folder with ``~`` (``~/miniconda3/bin/python``); only system locations such as
``/usr/bin/python3`` are shown as they are.

What cannot be checked from here: whether your *browser* shows widgets. The kernel (this
Python) cannot see the page. Lesson 00 shows a test slider and says what to do if it does not
appear.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import re
import sys
import textwrap
import urllib.parse
import urllib.request
from pathlib import Path
from typing import NamedTuple

__all__ = ["MIN_PYTHON", "REQUIREMENTS", "Check", "check_environment", "format_report", "main"]

#: The oldest Python the course supports (pyproject.toml: ``requires-python = ">=3.10"``).
MIN_PYTHON = (3, 10)

#: Import name -> (distribution name for ``pip install``, oldest supported version).
#: Keep in step with ``dependencies`` in pyproject.toml.
REQUIREMENTS = {
    "numpy": ("numpy", "1.24"),
    "matplotlib": ("matplotlib", "3.7"),
    "ipywidgets": ("ipywidgets", "8.0"),
    "tqdm": ("tqdm", "4.64"),
    "threadpoolctl": ("threadpoolctl", "3.1"),
}

_REPO = Path(__file__).resolve().parent.parent
_ASSETS = Path(__file__).resolve().parent / "assets"
_SAMPLE_NAME = "mnist_sample.npz"
_README_HASH_LINE = re.compile(r"SHA-256 of mnist_sample\.npz:\s*`([0-9a-f]{64})`")


class Check(NamedTuple):
    """One line of the report.

    Attributes:
        item: what was checked, e.g. ``"numpy"`` or ``"MNIST sample"``.
        ok: True if it is fine for the course.
        message: what was found, and, when ``ok`` is False, what to do about it.
    """

    item: str
    ok: bool
    message: str


def _version_tuple(version: str) -> tuple[int, ...]:
    """``"2.4.6"`` -> ``(2, 4, 6)``; ``"8.0.0rc1"`` -> ``(8, 0, 0)`` (leading digits only)."""
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def _inside(path: Path, folder: Path) -> Path | None:
    """``path`` relative to ``folder`` if it lies inside it (as given or with links resolved)."""
    for candidate in (path, path.resolve()):
        for base in (folder, folder.resolve()):
            try:
                return candidate.relative_to(base)
            except ValueError:
                continue
    return None


def _shown(path) -> str:
    """A path as the report prints it, without the machine-specific part.

    Inside the course folder: relative to it (``.venv/bin/python``, ``cnn_lib``; ``.`` for the
    folder itself). Inside the home folder: with ``~`` (``~/.pyenv/versions/3.12.4/bin/python``).
    Anywhere else (``/usr/bin/python3``, ``/opt/conda/...``): as it is.
    """
    path = Path(os.path.abspath(path))
    relative = _inside(path, _REPO)
    if relative is not None:
        return str(relative)
    relative = _inside(path, Path.home())
    if relative is not None:
        return "~" if relative == Path() else str(Path("~") / relative)
    return str(path)


def _terminal_command(arguments: str) -> str:
    """How to run *this* Python with ``arguments`` in a terminal, and from where."""
    inside_course = _inside(Path(os.path.abspath(sys.executable)), _REPO) is not None
    return (f"`{_shown(sys.executable)} {arguments}` in a terminal"
            + (" in the course folder" if inside_course else ""))


def _pip_hint(requirement: str) -> str:
    """How to pip-install into *this* Python (not whichever `pip` comes first on PATH)."""
    return (f"`%pip install {requirement}` in a notebook cell (or "
            f"{_terminal_command('-m pip install ' + requirement)})")


def _environment_kind() -> str:
    """Which environment this Python belongs to: a virtual environment, conda, or none."""
    if sys.prefix != sys.base_prefix:
        return f"virtual environment {_shown(sys.prefix)}"
    if (Path(sys.prefix) / "conda-meta").is_dir():
        name = os.environ.get("CONDA_DEFAULT_ENV") or Path(sys.prefix).name
        return f"conda environment {name}"
    return "not in a virtual environment"


def _check_python() -> Check:
    found = ".".join(str(v) for v in sys.version_info[:3])
    where = f"Python {found} ({_shown(sys.executable)}, {_environment_kind()})"
    if sys.version_info[:2] < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return Check("Python", False, f"{where} is too old: the course needs Python {need} or "
                     "newer. Install a newer Python and create the environment again "
                     "(README.md, 'Start').")
    return Check("Python", True, where)


def _check_package(module: str, distribution: str, minimum: str) -> Check:
    requirement = f'"{distribution}>={minimum}"'
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        return Check(module, False, f"cannot be imported ({exc}). Install it into this Python: "
                     f"{_pip_hint(requirement)}, then restart the kernel.")
    version = getattr(imported, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    if version != "unknown" and _version_tuple(version) < _version_tuple(minimum):
        return Check(module, False, f"version {version} is too old, the course needs "
                     f">= {minimum}: {_pip_hint('--upgrade ' + requirement)}, then "
                     "restart the kernel.")
    return Check(module, True, f"version {version}")


def _editable_install() -> Path | None:
    """The folder that an editable install (``pip install -e``) of cnn-lib points to, if any."""
    for dist in importlib.metadata.distributions():
        if (dist.metadata["Name"] or "").lower().replace("_", "-") != "cnn-lib":
            continue
        try:
            info = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            continue
        url = urllib.parse.urlparse(info.get("url", ""))
        if info.get("dir_info", {}).get("editable") and url.scheme == "file":
            return Path(urllib.request.url2pathname(url.path))
    return None


def _check_cnn_lib() -> Check:
    try:
        package = importlib.import_module("cnn_lib")
    except ImportError as exc:
        command = _terminal_command("-m pip install -e .").removesuffix(" in the course folder")
        return Check("cnn_lib", False, f"cannot be imported ({exc}). Install the course's library "
                     f"into this Python: run {command}, in the course folder (the one with "
                     "pyproject.toml), or `%pip install -e ..` in a notebook cell of notebooks/; "
                     "then restart the kernel.")
    version = f"version {getattr(package, '__version__', '?')}"
    location = Path(package.__file__).resolve().parent
    if any(part in ("site-packages", "dist-packages") for part in location.parts):
        return Check("cnn_lib", True, f"{version}, a copy installed in site-packages (not editable): "
                     "changes to the course folder's cnn_lib/ will not be seen. To work on the "
                     "library, install it with `pip install -e .` in the course folder.")
    in_course = _inside(location, _REPO)
    where = f"{version} from " + (f"the course folder's {in_course}/" if in_course is not None
                                  else _shown(location))
    editable = _editable_install()
    if editable is None:
        return Check("cnn_lib", True, f"{where}, not installed (found on the import path: the "
                     "current folder or PYTHONPATH); `pip install -e .` in the course folder makes "
                     "it importable from anywhere")
    if _inside(location, editable) is None:
        return Check("cnn_lib", True, f"{where}, but the editable install points to "
                     f"{_shown(editable)}: two copies of the course? Imports use the first one on "
                     "the import path.")
    return Check("cnn_lib", True, f"{where} (editable install: edits to its files take effect "
                 "after a kernel restart)")


def _expected_sample_hash(readme: Path) -> str | None:
    if not readme.is_file():
        return None
    match = _README_HASH_LINE.search(readme.read_text(encoding="utf-8"))
    return match.group(1) if match else None


def _check_sample(data_dir: Path) -> Check:
    sample = data_dir / _SAMPLE_NAME
    readme = data_dir / "README.md"
    if not sample.is_file():
        return Check("MNIST sample", False, f"{_shown(sample)} is missing. It ships inside the cnn_lib "
                     "package: reinstall the course (`pip install .` or `pip install -e .` from a "
                     "complete copy of its folder: git clone or the full zip).")
    expected = _expected_sample_hash(readme)
    if expected is None:
        return Check("MNIST sample", False, f"{_shown(readme)} is missing or does not list the sample's "
                     "SHA-256, so the sample cannot be verified. Reinstall the course (`pip install .` "
                     "or `pip install -e .` from its folder).")
    found = hashlib.sha256(sample.read_bytes()).hexdigest()
    if found != expected:
        return Check("MNIST sample", False, f"{_shown(sample)} is damaged or was changed: its SHA-256 is "
                     f"{found[:12]}..., assets/README.md expects {expected[:12]}.... Restore it "
                     "(in a clone: `git checkout -- cnn_lib/assets/mnist_sample.npz`; else reinstall "
                     "the course).")
    size_kb = sample.stat().st_size / 1000
    return Check("MNIST sample", True, f"{sample.name} present ({size_kb:.0f} kB), SHA-256 "
                 f"{found[:12]}... matches assets/README.md")


def _check_widget_support() -> Check:
    """What the kernel side can tell about widgets: the front-end packages are installed here.

    Whether the browser renders them is only visible on the page (lesson 00's test slider).
    """
    found = {}
    for name in ("jupyterlab_widgets", "widgetsnbextension"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    if not found:
        return Check("widget front-end", False, "neither jupyterlab_widgets nor "
                     "widgetsnbextension is installed in this Python, so sliders will show as "
                     "plain text. `pip install ipywidgets` installs both; then reload the page.")
    listed = ", ".join(f"{name} {version}" for name, version in found.items())
    return Check("widget front-end", True, f"{listed} installed here; whether your browser shows "
                 "widgets, only the test slider can tell")


def check_environment(data_dir=None) -> list[Check]:
    """Run every check and return the results in a fixed order.

    Args:
        data_dir: folder holding ``mnist_sample.npz`` and its ``README.md``; default the
            package's own ``cnn_lib/assets/`` folder.

    Returns:
        A list of :class:`Check` ``(item, ok, message)`` tuples: Python, numpy, matplotlib,
        ipywidgets, tqdm, threadpoolctl, cnn_lib, the widget front-end packages, the MNIST
        sample.
    """
    data_dir = _ASSETS if data_dir is None else Path(data_dir)
    checks = [_check_python()]
    checks += [_check_package(module, dist, minimum)
               for module, (dist, minimum) in REQUIREMENTS.items()]
    checks.append(_check_cnn_lib())
    checks.append(_check_widget_support())
    checks.append(_check_sample(data_dir))
    return checks


def format_report(checks: list[Check], width: int = 100) -> str:
    """The checks as text: one entry each ("ok" or "PROBLEM"), then a one-line verdict.

    Args:
        checks: what :func:`check_environment` returned.
        width: wrap long messages at this many characters.
    """
    name_width = max(len(c.item) for c in checks)
    indent = " " * (2 + 7 + 2 + name_width + 2)
    lines = ["Environment check"]
    for c in checks:
        first = f"  {'ok     ' if c.ok else 'PROBLEM'}  {c.item:<{name_width}}  "
        lines.append(textwrap.fill(c.message, width=width, initial_indent=first,
                                   subsequent_indent=indent, break_on_hyphens=False))
    problems = [c.item for c in checks if not c.ok]
    if problems:
        verdict = (f"{len(problems)} problem(s): {', '.join(problems)}. Fix them as described "
                   "above, restart the kernel and run this check again.")
    else:
        verdict = f"All {len(checks)} checks passed: this environment is ready for the course."
    return "\n".join([*lines, textwrap.fill(verdict, width=width)])


def main() -> int:
    """Print the report; exit status 0 when every check passed, 1 otherwise."""
    checks = check_environment()
    print(format_report(checks))
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    # Run as a file (`python cnn_lib/envcheck.py`), Python puts cnn_lib/ itself first on the path,
    # where data.py, model.py, ... could shadow other packages' modules: take it off.
    if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    status = main()
    if "ipykernel" not in sys.modules:  # under `%run` in a notebook the report says it all
        sys.exit(status)
