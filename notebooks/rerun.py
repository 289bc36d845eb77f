#!/usr/bin/env python3
"""Re-execute the lesson notebooks so that a re-run changes nothing but real timings.

Usage, from the course folder (or anywhere: paths are taken as given)::

    python notebooks/rerun.py                       # every notebooks/NN_*.ipynb, rewritten in place
    python notebooks/rerun.py notebooks/00_start_here.ipynb notebooks/02_*.ipynb
    python notebooks/rerun.py --check               # execute in memory; exit 1 if a saved one is stale

Each notebook runs top to bottom in a fresh kernel (the kernel its metadata names, started in the
notebook's own folder, as Jupyter does), each cell with a time limit (``--timeout``, 300 s). A
cell that raises stops that notebook, which is then left as it was, and the command names the
notebook and the cell; only cells tagged ``raises-exception`` may raise. Exit status: 0 when
every notebook ran (and, with ``--check``, matched its file), 1 when ``--check`` found a
difference, 2 when a notebook failed to run.

Why not ``jupyter nbconvert --execute --inplace --coalesce-streams``: a re-run with it rewrites
every line that records *when* or *where* it ran, so each re-run diffs in hundreds of lines
that say nothing. Before writing, this command therefore

* drops the per-cell timestamps (``metadata.execution``) and numbers the executed code cells
  1..n, as a fresh Jupyter kernel does;
* merges adjacent stream outputs of the same name (stdout, stderr) *after* execution, the way
  nbconvert's CoalesceStreamsPreprocessor does (nbconvert applies its ``--coalesce-streams``
  before executing, where it has nothing to merge), and drops what a ``\\r`` overwrote;
* renames the widget models, whose ids the kernel draws at random, to ids derived from the
  notebook's file name and the order in which the models first appear (:func:`widget_id`),
  in the outputs and in the saved widget state alike, so the saved widgets still render;
* writes the repository's, the home folder's and site-packages' locations in tracebacks,
  warnings and text outputs without the machine-specific part (:func:`shorten_paths`);
* keeps everything else as the run produced it (``language_info.version`` is whichever
  Python ran it) and writes the file the way Jupyter does (``nbformat.write``: same nbformat
  version, one-space indent, sorted keys, trailing newline).

What is left to differ between two runs is what the notebooks measure: the outputs of the
timing cells, which start with ``# NBVAL_IGNORE_OUTPUT`` and which the tests (nbval) and
``--check`` do not compare. The kernel gets ``PYTHONHASHSEED=0`` (unless you set it), so that
the order of a printed set of strings is the same every time too.

``--check`` (for CI or before a commit) compares the fresh run with the file on disk, ignoring
the outputs of ``# NBVAL_IGNORE_OUTPUT`` cells and ``language_info.version``, and prints a
short unified diff of each notebook that differs. It writes nothing.

From Python (the test does this)::

    import runpy; rerun = runpy.run_path("notebooks/rerun.py")
    nb = rerun["execute_notebook"](path)        # executed and normalised, not written
"""

from __future__ import annotations

import argparse
import copy
import difflib
import importlib.util
import json
import os
import re
import sys
import sysconfig
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent
ROOT = NOTEBOOKS.parent
DEFAULT_PATTERN = "[0-9][0-9]_*.ipynb"
IGNORE_MARK = "# NBVAL_IGNORE_OUTPUT"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MODEL_REF = "IPY_MODEL_"
#: Namespace of the widget ids; any fixed UUID would do, this one is uuid5(NAMESPACE_URL, "cnn-course").
WIDGET_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "cnn-course")

_CARRIAGE_RETURN = re.compile(r".*\r(?=[^\n])")  # the text that a later \r on its line overwrote
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ANSI_END = re.compile(r"\x1b\[[0-9;]*m\Z")  # a colour code just before a path (tracebacks)


class NotebookError(RuntimeError):
    """A notebook could not be executed: which one, which cell, and why."""


# --------------------------------------------------------------------------------------------
# Execution


def execute_notebook(path: Path | str, *, timeout: int = 300, cwd: Path | str | None = None,
                     kernel_name: str | None = None) -> nbformat.NotebookNode:
    """Execute the notebook at ``path`` in a fresh kernel and return it normalised, unwritten.

    Args:
        path: the ``.ipynb`` file; it is only read.
        timeout: seconds each cell may run.
        cwd: the kernel's working directory; default the notebook's folder (as in Jupyter).
        kernel_name: default the kernel named in the notebook's metadata (``python3``).

    Raises:
        NotebookError: a cell not tagged ``raises-exception`` raised, a cell timed out, or the
            kernel died; the message names the notebook and the cell.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    nb.metadata.pop("widgets", None)  # the run records its own; a stale one must not survive
    current = {"index": None}

    def on_cell_start(cell, cell_index):
        current["index"] = cell_index

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel_name or nb.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(Path(cwd) if cwd is not None else path.parent)}},
        record_timing=False,
        store_widget_state=True,
        on_cell_start=on_cell_start,
    )
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    try:
        client.execute(env=env)
    except Exception as exc:
        raise NotebookError(_describe_failure(path, nb, current["index"], exc)) from exc
    normalize(nb, path.name)
    return nb


def _describe_failure(path: Path, nb, index: int | None, exc: Exception) -> str:
    where = "before the first cell (kernel start)"
    if index is not None:
        cell = nb.cells[index]
        first_line = (cell.source.strip().splitlines() or [""])[0][:100]
        count = sum(1 for c in nb.cells[:index + 1] if c.cell_type == "code" and c.source.strip())
        where = f"cell {index} (counting all cells from 0; In [{count}]: {first_line!r})"
    message = _ANSI.sub("", str(exc)).strip()
    return f"{path}: {type(exc).__name__} in {where}\n{message}"


# --------------------------------------------------------------------------------------------
# Normalisation: what makes two runs of the same notebook write the same file


def normalize(nb, name: str, roots: list[Path] | None = None):
    """Make an executed notebook independent of when, where and in which kernel session it ran.

    In place, and returned: drops ``metadata.execution``, renumbers execution counts, merges
    adjacent streams, shortens machine paths (:func:`shorten_paths`, with ``roots``) and renames
    widget models (:func:`rename_widgets`, ids from ``name``, the notebook's file name).

    Raises:
        ValueError: the saved widget state refers to a model it does not hold.
    """
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        if cell.source.strip():
            count += 1
            cell.execution_count = count
        else:
            cell.execution_count = None
        cell.outputs = coalesce_streams(cell.outputs)
        for output in cell.outputs:
            if output.output_type == "execute_result":
                output.execution_count = cell.execution_count
    shorten_paths(nb, roots)
    rename_widgets(nb, name)
    problems = widget_problems(nb)
    if problems:
        raise ValueError(f"{name}: the saved widget state is not self-consistent: " + "; ".join(problems))
    return nb


def coalesce_streams(outputs: list) -> list:
    """Adjacent stream outputs of the same name merged into one, as CoalesceStreamsPreprocessor does.

    The kernel flushes stdout whenever its buffer fills or a display happens in between, so one
    ``print`` loop can arrive as several outputs, split differently from run to run. Text that a
    carriage return (``\\r`` not followed by a newline) overwrote is dropped, as a terminal shows.
    """
    merged: list = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (previous is not None and output.output_type == "stream"
                and previous.output_type == "stream" and previous.name == output.name):
            previous.text += output.text
        else:
            merged.append(output)
    for output in merged:
        if output.output_type == "stream" and "\r" in output.text:
            output.text = _CARRIAGE_RETURN.sub("", output.text)
    return merged


def machine_paths(roots: list[Path] | None = None) -> list[tuple[re.Pattern, str, str]]:
    """What :func:`shorten_paths` replaces: (pattern, replacement before a separator, alone).

    The site-packages folders become ``site-packages/``; the repository of this script, and the
    one the kernel imports ``cnn_lib`` from when that is another (a worktree on PYTHONPATH),
    become relative paths (``cnn_lib/data.py``, the folder itself ``.``); the home folder
    becomes ``~`` (as IPython itself writes it in tracebacks). ``roots``: further folders to
    treat like the repository. Longest folders first, so that the most specific one wins.
    """
    folders = [(Path(p), "site-packages/", "site-packages")
               for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}]
    repos = [ROOT, *(roots or [])]
    spec = importlib.util.find_spec("cnn_lib")  # finds the package, does not import it
    if spec is not None and spec.origin:
        repos.append(Path(spec.origin).resolve().parent.parent)
    folders += [(Path(repo), "", ".") for repo in repos]
    folders.append((Path.home(), "~/", "~"))
    chosen: dict[str, tuple[str, str]] = {}
    for folder, before_separator, alone in folders:
        for form in (str(folder), str(folder.resolve())):
            form = form.rstrip("/\\")
            if form:  # never the file-system root itself
                chosen.setdefault(form, (before_separator, alone))
    return [(re.compile(re.escape(form) + r"(?:(?P<sep>[/\\])|(?![\w.-]))"), *replacements)
            for form, replacements in sorted(chosen.items(), key=lambda item: len(item[0]), reverse=True)]


def shorten_paths(nb, roots: list[Path] | None = None):
    """Strip the machine-specific part of absolute paths from tracebacks, streams and text outputs.

    A traceback into the library reads ``File cnn_lib/data.py:445`` rather than
    ``File /home/you/course/cnn_lib/data.py:445``; the home folder becomes ``~``
    (:func:`machine_paths`). In place, and returned.
    """
    rules = machine_paths(roots)

    def shorten(text: str) -> str:
        for pattern, before_separator, alone in rules:
            def replace(match, before_separator=before_separator, alone=alone):
                before = match.string[max(0, match.start() - 32):match.start()]
                if re.search(r"[\w.-]\Z", before) and not _ANSI_END.search(before):
                    return match.group()  # the tail of a longer path (/srv/work/main): not ours
                return before_separator if match.group("sep") else alone
            text = pattern.sub(replace, text)
        return text

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                output.text = shorten(output.text)
            elif output.output_type == "error":
                output.traceback = [shorten(line) for line in output.traceback]
                output.evalue = shorten(output.evalue)
            else:
                for mime in ("text/plain", "text/html", "text/markdown"):
                    if isinstance(output.get("data", {}).get(mime), str):
                        output.data[mime] = shorten(output.data[mime])
    return nb


# --------------------------------------------------------------------------------------------
# Widgets


def widget_id(name: str, number: int) -> str:
    """The id of the ``number``-th widget model (0, 1, ...) of notebook ``name``: 32 hex digits."""
    return uuid.uuid5(WIDGET_NAMESPACE, f"{name}/{number}").hex


def _widget_state(nb) -> dict:
    return nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def _model_ids_in(value: Any) -> Iterator[str]:
    """Every model id that ``value`` (JSON) refers to, in order: ``IPY_MODEL_`` strings and the
    ``model_id`` of widget views (an Output widget's saved outputs can hold those)."""
    if isinstance(value, str):
        if value.startswith(MODEL_REF):
            yield value[len(MODEL_REF):]
    elif isinstance(value, list):
        for item in value:
            yield from _model_ids_in(item)
    elif isinstance(value, dict):
        for key in sorted(value):
            if key == WIDGET_VIEW and isinstance(value[key], dict) and "model_id" in value[key]:
                yield value[key]["model_id"]
            else:
                yield from _model_ids_in(value[key])


def _outputs_model_ids(nb) -> Iterator[str]:
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            yield from _model_ids_in(output.get("data", {}))


def rename_widgets(nb, name: str):
    """Give every widget model an id from :func:`widget_id`, consistently everywhere.

    Order of first appearance: the views in the cells' outputs, top to bottom, each followed
    (depth first) by the models its saved state refers to; then the saved models that nothing
    refers to, in the order the kernel created them. The outputs' ``model_id``\\ s, the state's
    keys and every ``IPY_MODEL_<id>`` inside the state are rewritten. In place, and returned.
    """
    state = _widget_state(nb)
    new_ids: dict[str, str] = {}

    def visit(model: str) -> None:
        if model in new_ids:
            return
        new_ids[model] = widget_id(name, len(new_ids))
        if model in state:
            for referred in _model_ids_in(state[model].get("state", {})):
                visit(referred)

    for model in _outputs_model_ids(nb):
        visit(model)
    for model in list(state):
        visit(model)
    if not new_ids:
        return nb

    def rewrite(value: Any) -> Any:
        if isinstance(value, str):
            if value.startswith(MODEL_REF) and value[len(MODEL_REF):] in new_ids:
                return MODEL_REF + new_ids[value[len(MODEL_REF):]]
            return value
        if isinstance(value, list):
            return [rewrite(item) for item in value]
        if isinstance(value, dict):
            result = {key: rewrite(item) for key, item in value.items()}
            if isinstance(result.get(WIDGET_VIEW), dict) and result[WIDGET_VIEW].get("model_id") in new_ids:
                result[WIDGET_VIEW]["model_id"] = new_ids[result[WIDGET_VIEW]["model_id"]]
            return result
        return value

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "data" in output:
                output.data = nbformat.from_dict(rewrite(output.data))
    if state:
        nb.metadata.widgets[WIDGET_STATE]["state"] = nbformat.from_dict(
            {new_ids[model]: rewrite(saved) for model, saved in state.items()})
    return nb


def widget_problems(nb) -> list[str]:
    """What makes the saved widget state inconsistent: references to models it does not hold.

    Empty when every ``IPY_MODEL_`` reference in the state, and every widget view in the
    outputs that has saved state at all, resolves to a saved model.
    """
    state = _widget_state(nb)
    problems = []
    for model, saved in state.items():
        for referred in _model_ids_in(saved.get("state", {})):
            if referred not in state:
                problems.append(f"model {model} refers to unsaved model {referred}")
    if state:
        for model in _outputs_model_ids(nb):
            if model not in state:
                problems.append(f"an output shows unsaved model {model}")
    return problems


# --------------------------------------------------------------------------------------------
# Writing and comparing


def write_notebook(nb, path: Path | str) -> None:
    """Write as Jupyter does: nbformat.write (indent 1, sorted keys, trailing newline)."""
    nbformat.write(nb, str(path))


def comparable_text(nb) -> str:
    """The notebook as JSON text, minus what may differ between two good runs.

    Blanks the outputs of cells whose source starts with ``# NBVAL_IGNORE_OUTPUT`` (the tests do
    not compare those either) and ``metadata.language_info.version``.
    """
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith(IGNORE_MARK):
            cell.outputs = []
    nb.metadata.get("language_info", {}).pop("version", None)
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _where_they_differ(old, new) -> list[str]:
    """Which parts of two notebooks differ: per cell (source, outputs, ...) and in the metadata."""
    old, new = json.loads(comparable_text(old)), json.loads(comparable_text(new))
    places = []
    if len(old["cells"]) != len(new["cells"]):
        places.append(f"number of cells ({len(old['cells'])} vs {len(new['cells'])})")
    by_part: dict[str, list[str]] = {}
    for index, (a, b) in enumerate(zip(old["cells"], new["cells"])):
        for part in sorted(set(a) | set(b)):
            if a.get(part) != b.get(part):
                by_part.setdefault(part, []).append(str(index))
    places += [f"{part} of cell(s) {', '.join(cells)}" for part, cells in by_part.items()]
    places += [f"metadata.{key}" for key in sorted(set(old["metadata"]) | set(new["metadata"]))
               if old["metadata"].get(key) != new["metadata"].get(key)]
    return places


def diff_summary(old, new, name: str, max_lines: int = 30, width: int = 160) -> str:
    """Where two notebooks differ, then the start of a unified diff of their :func:`comparable_text`.

    Empty if they agree. Cells are counted from 0, as in nbformat.
    """
    diff = list(difflib.unified_diff(comparable_text(old).splitlines(), comparable_text(new).splitlines(),
                                     f"{name} (on disk)", f"{name} (fresh run)", n=1, lineterm=""))
    if not diff:
        return ""
    changed = sum(1 for line in diff[2:] if line[:1] in "+-")
    shown = [line if len(line) <= width else line[:width] + " ..." for line in diff[:max_lines]]
    if len(diff) > max_lines:
        shown.append(f"... ({len(diff) - max_lines} more diff lines)")
    places = textwrap.fill("; ".join(_where_they_differ(old, new)), width=100,
                           initial_indent="  differs in: ", subsequent_indent="    ")
    return f"{name}: {changed} lines differ\n{places}\n" + "\n".join(shown)


def default_notebooks() -> list[Path]:
    """Every lesson: ``notebooks/[0-9][0-9]_*.ipynb``, in order."""
    return sorted(NOTEBOOKS.glob(DEFAULT_PATTERN))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Execute notebooks top to bottom in a fresh kernel and write them back so that "
                    "a re-run changes nothing but real timings.",
        epilog="Exit status: 0 all ran (and matched, with --check); 1 --check found a difference; "
               "2 a notebook failed to run.")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help=f"notebooks to run (default: notebooks/{DEFAULT_PATTERN})")
    parser.add_argument("--check", action="store_true",
                        help="execute in memory only; exit 1 if a result differs from its file "
                             "(outputs of '# NBVAL_IGNORE_OUTPUT' cells not compared)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    args = parser.parse_args(argv)

    paths = args.notebooks or [Path(os.path.relpath(path)) for path in default_notebooks()]
    failed, stale = [], []
    for path in paths:
        print(f"{'checking' if args.check else 'running'} {path} ...", flush=True)
        try:
            nb = execute_notebook(path, timeout=args.timeout)
        except (NotebookError, ValueError) as exc:
            print(f"FAILED: {exc}", file=sys.stderr, flush=True)
            failed.append(path)
            continue
        if args.check:
            summary = diff_summary(nbformat.read(path, as_version=nbformat.NO_CONVERT), nb, path.name)
            if summary:
                print(summary, flush=True)
                stale.append(path)
        else:
            write_notebook(nb, path)
    if failed:
        print(f"{len(failed)} notebook(s) failed to run: {', '.join(map(str, failed))}", file=sys.stderr)
        return 2
    if stale:
        print(f"{len(stale)} notebook(s) differ from a fresh run: {', '.join(map(str, stale))}; "
              "`python notebooks/rerun.py` rewrites them")
        return 1
    print(f"{len(paths)} notebook(s) {'match a fresh run' if args.check else 'executed and written'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
