"""The repository as a new user meets it: the two install routes agree, CI runs the README's
test command, and library and notebooks pass the pinned lint rules."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_installs_what_pyproject_declares():
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r for r in project["dependencies"] + project["optional-dependencies"]["course"]}
    conda = {}
    pip_lines = []
    section = None
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"^[a-z]", line):
            section = line.split(":")[0]
        if section != "dependencies":
            continue
        m = re.match(r"^  - ([A-Za-z0-9_.\-]+)(.*)$", line)
        if m and m.group(1) != "pip":
            conda[m.group(1).lower()] = (m.group(1) + m.group(2)).replace(" ", "")
        m = re.match(r"^ {6}- (.+)$", line)
        if m:
            pip_lines.append(m.group(1).strip())
    python = conda.pop("python")
    assert python == "python" + project["requires-python"]
    assert conda == {k: v.replace(" ", "") for k, v in wanted.items()}, (
        "environment.yml and pyproject.toml list different packages or versions")
    assert pip_lines == ["-e .[course]"]


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    test_block = next(b for b in blocks if "pytest" in b)
    command = [line for line in test_block.splitlines() if "pytest" in line][0].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines(), f"README's test command {command!r} is not in .ci/run"


def test_ruff_lint_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    folders = ("cnn_lib", "tests", "notebooks", "benchmarks", "scripts", "hub")
    paths = [p for p in folders if (ROOT / p).exists()]
    result = subprocess.run([ruff, "check", *paths], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_environment_check_knows_the_declared_minimum_versions():
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")
    from cnn_lib import envcheck

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r): r.split(">=")[1] for r in project["dependencies"]}
    assert {dist: version for dist, version in envcheck.REQUIREMENTS.values()} == declared
    assert project["requires-python"] == ">={}.{}".format(*envcheck.MIN_PYTHON)


def test_every_lesson_is_committed_executed():
    """nbval compares a notebook's fresh outputs with the committed ones, so a lesson committed
    without outputs would pass while showing a student nothing: every code cell must have run."""
    import json

    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        counts = [c.get("execution_count") for c in cells]
        assert None not in counts, f"{path.name}: code cells never executed (run python notebooks/rerun.py)"
        assert counts == list(range(1, len(cells) + 1)), f"{path.name}: cells not run top to bottom in order"


def test_a_wheel_install_finds_the_sample_and_the_shipped_weights(tmp_path):
    """What a JupyterHub image or a plain ``pip install .`` does: build the wheel, install it
    (no editable link back to this folder) into a fresh virtual environment, and from a folder
    outside the repository load the MNIST sample, both shipped networks and the environment check."""
    import sysconfig
    import venv

    # build from a copy of the files git knows: a stale cnn_lib.egg-info/SOURCES.txt in this folder
    # would otherwise smuggle in files that pyproject.toml forgot to declare
    source = tmp_path / "source"
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"],
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell the repository's files from build leftovers")
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file() and not name.startswith("cnn_lib.egg-info"):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                            str(source)], capture_output=True, text=True)
    if built.returncode != 0 and "No module named pip" in built.stderr:
        pytest.skip("pip is not installed in this Python")
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("cnn_lib-*.whl")
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site,
                                str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # numpy, matplotlib...: from this environment (a .pth line adds its folder, and runs none of its
    # own .pth files, so this checkout's editable install stays out of sight)
    (Path(site) / "course_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = (
        f"site = {site!r}\n"
        "import cnn_lib, pathlib\n"
        "from cnn_lib import data, envcheck, gan, models\n"
        "assert pathlib.Path(cnn_lib.__file__).is_relative_to(pathlib.Path(site)), cnn_lib.__file__\n"
        "m = data.load_mnist()\n"
        "assert m.x_train.shape == (4000, 1, 28, 28) and m.x_test.shape == (1000, 1, 28, 28)\n"
        "models.pretrained('lenet_small'); gan.pretrained()\n"
        "sample = [c for c in envcheck.check_environment() if c.item == 'MNIST sample'][0]\n"
        "assert sample.ok, sample.message\n"
        "print('ok', data.SAMPLE_PATH.name)\n")
    run = subprocess.run([str(python), "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0 and run.stdout.strip() == "ok mnist_sample.npz", run.stdout + run.stderr
