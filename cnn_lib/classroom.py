"""For teachers: student versions of the lessons, and a grade table for a folder of submissions.

Needs nbgrader (``pip install -e ".[teacher]"``); students never do. Run from the course folder::

    python -m cnn_lib.classroom release                      # every lesson -> release/
    python -m cnn_lib.classroom release 05 06 --out week3    # only lessons 05 and 06
    python -m cnn_lib.classroom grade submitted/ --out grades.csv
    python -m cnn_lib.classroom course nbgrader-course/      # a course folder for nbgrader's own commands
    python -m cnn_lib.classroom links --hub https://hub.school.example --repo https://github.com/you/week3

**release** runs nbgrader's own preprocessors, in the order ``nbgrader generate_assignment``
runs them (without its database): check cells locked, solutions replaced by
``raise NotImplementedError()``, outputs cleared, hidden tests removed, checksums recorded. It
also drops the saved widget state (tens of kB a lesson, and stale in a notebook without outputs).

**grade** takes one folder per student (``submitted/<student>/<lesson>.ipynb``; the file names
of the release) and grades every notebook in a fresh kernel, one at a time:

* The notebook that runs is the instructor's lesson, with the student's solution cells and the
  cells the student added (at the places they added them). Every other cell runs as the course
  wrote it: check cells get their hidden tests back, and an edited or deleted check cell cannot
  change a grade. An edited check cell is reported as ``tampered``.
* A check cell scores its points when it runs without an error, nbgrader's rule
  (``nbgrader.utils.determine_grade``). The check cells call answers through
  :func:`cnn_lib.grading.run`, so an answer that warns or prints to stderr is not zeroed, and an
  answer that calls the library function it should re-create scores 0.
* A cell that runs longer than ``--timeout`` seconds is interrupted (an error: 0 for the check
  cells that need it) and the notebook goes on; a kernel that dies scores the rest of its
  notebook 0. Neither stops the batch.

The table has one row per student, lesson and question: ``student, lesson, question, points,
max_points, result, detail``. Exit status: 0 every notebook was graded; 1 graded, but some need a
teacher's look (a dead kernel, a time-out, a tampered check cell, a file that is no lesson: the
``detail`` column and the summary say which); 2 nothing could be graded (wrong folder, no lessons).
"""

from __future__ import annotations

import argparse
import copy
import csv
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["course", "grade", "lessons", "links", "main", "release", "student_version"]

#: The course's lessons, next to the package in a clone of the repository.
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


#: What replaces a solution in a student version (nbgrader's stub, with where to look for help).
CODE_STUB = ("# YOUR CODE HERE (the text above says what to compute; the check cell below tests it)\n"
             "raise NotImplementedError()")


class ClassroomError(Exception):
    """A problem with what the teacher asked for (folders, lesson names): exit status 2."""


def _nbgrader():
    try:
        import nbgrader.preprocessors as preprocessors
        import nbgrader.utils as utils
    except ImportError:
        raise ClassroomError("nbgrader is not installed: the teacher tools need it. In the course folder: "
                             "pip install -e \".[teacher]\"") from None
    return preprocessors, utils


def _read(path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def _is_nbgrader(cell) -> bool:
    return "nbgrader" in cell.get("metadata", {})


def lessons(source=None, names=()) -> list[Path]:
    """The lesson notebooks in ``source`` (default: the repository's ``notebooks/``) that have
    exercises, or those of them that ``names`` pick ("05", "05_pooling" or "05_pooling.ipynb")."""
    source = Path(source) if source is not None else NOTEBOOKS
    if not source.is_dir():
        raise ClassroomError(f"no lesson folder at {source}: run this from a clone of the course, or "
                             "give the lessons' folder with --source")
    found = [p for p in sorted(source.glob("[0-9][0-9]_*.ipynb"))
             if any(_is_nbgrader(c) for c in _read(p).cells)]
    if not found:
        raise ClassroomError(f"{source} holds no lesson with exercises (files like 05_pooling.ipynb)")
    if not names:
        return found
    picked = []
    for name in names:
        stem = Path(name).name.removesuffix(".ipynb")
        match = [p for p in found if p.stem == stem or p.stem.split("_", 1)[0] == stem
                 or (stem.isdigit() and p.stem.split("_", 1)[0] == stem.zfill(2))]
        if not match:
            raise ClassroomError(f"no lesson {name!r} with exercises; expected one of: "
                                 + ", ".join(p.stem for p in found))
        picked += [p for p in match if p not in picked]
    return picked


def student_version(nb):
    """The student version of an instructor notebook (a new notebook; ``nb`` is not changed):
    nbgrader's preprocessors in the order of ``nbgrader generate_assignment``, minus its
    database, then the saved widget state dropped."""
    preprocessors, _ = _nbgrader()
    nb = copy.deepcopy(nb)
    resources = {}
    steps = [preprocessors.LockCells(), preprocessors.ClearSolutions(code_stub={"python": CODE_STUB}),
             preprocessors.ClearOutput(),
             preprocessors.CheckCellMetadata(), preprocessors.ComputeChecksums(),
             preprocessors.ClearHiddenTests(), preprocessors.ClearMarkScheme(),
             preprocessors.ComputeChecksums(), preprocessors.CheckCellMetadata()]
    for step in steps:
        nb, resources = step.preprocess(nb, resources)
    nb.metadata.pop("widgets", None)
    return nb


def _exercises(nb) -> list[tuple[str, float]]:
    """(grade_id, points) of every check cell, in order."""
    return [(c.metadata.nbgrader["grade_id"], float(c.metadata.nbgrader.get("points", 0)))
            for c in nb.cells if _is_nbgrader(c) and c.metadata.nbgrader.get("grade")]


def release(out, source=None, names=()) -> list[Path]:
    """Write the student version of each lesson into ``out``; return the files written."""
    import nbformat

    paths = lessons(source, names)  # first: a wrong name writes nothing
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        student = student_version(_read(path))
        target = out / path.name
        nbformat.write(student, str(target))
        points = sum(p for _, p in _exercises(student))
        print(f"{target}: {len(_exercises(student))} graded questions, {points:g} points")
        written.append(target)
    return written


# --------------------------------------------------------------------------------------------
# grading
# --------------------------------------------------------------------------------------------

def _merge(instructor, submitted):
    """The notebook that is graded, and notes on what the student changed outside their answers.

    The instructor's cells, in the instructor's order, with the student's answers and the cells
    the student added. An answer is found by its nbgrader ``grade_id`` (a solution cell copied and
    pasted keeps it; if a solution occurs twice, the copy that is not the blank stub counts); other
    cells by their nbformat ``id``, which a release keeps. An added cell runs after the lesson cell
    it followed. A deleted solution cell is left out (the student may have answered in a cell of
    their own); an edited or deleted check cell runs as the course wrote it, and is reported."""
    released = {c.get("id"): c for c in student_version(instructor).cells}
    by_gid = {c.metadata.nbgrader["grade_id"]: c.get("id") for c in released.values() if _is_nbgrader(c)}
    submitted_ids = {c.get("id") for c in submitted.cells}
    answers, added, notes, previous = {}, {}, [], None
    for cell in submitted.cells:
        info = cell.get("metadata", {}).get("nbgrader", {})
        home = by_gid.get(info.get("grade_id"))
        if home is not None and released[home].metadata.nbgrader.get("solution"):
            stub = released[home].source
            if home not in answers or answers[home] == stub:
                answers[home] = cell.source
            previous = home
            continue
        if home is not None or info.get("locked"):  # a check cell, or a copy of one
            original = released.get(home)
            if cell.get("id") == home and cell.source != original.source:
                notes.append(f"tampered: check cell {info['grade_id']} was edited "
                             "(graded as the course wrote it)")
            previous = home if cell.get("id") == home else previous
            continue
        if cell.get("id") in released:
            previous = cell.get("id")
            continue
        added.setdefault(previous, []).append(copy.deepcopy(cell))  # a cell of the student's own
    for gid, cid in by_gid.items():
        if released[cid].metadata.nbgrader.get("grade") and cid not in submitted_ids:
            notes.append(f"tampered: check cell {gid} was deleted (graded as the course wrote it)")
    graded = copy.deepcopy(instructor)
    cells = list(added.get(None, []))
    for cell in graded.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            if cell["id"] not in answers:
                cells += added.get(cell["id"], [])
                continue
            cell.source = answers[cell["id"]]
        cells.append(cell)
        cells += added.get(cell.get("id"), [])
    for cell in cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    graded.cells = cells
    graded.metadata.pop("widgets", None)
    return graded, notes


def _kernel_manager():
    """A kernel of *this* Python (the one with cnn_lib), whatever "python3" means elsewhere."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            spec = super().get_kernel_spec("python3")
            # the kernel's own warnings (about TCP without encryption on localhost; about its parent
            # having exited) would only clutter the teacher's terminal
            spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                         "--IPKernelApp.log_level=ERROR"]
            return spec

    # TCP on 127.0.0.1, the default: with IPC sockets the first notebook of a batch stalled for the
    # whole time limit in one of its widget cells (seen with nbclient 0.11, ipykernel 7.4)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ThisPython())


#: What a cell that ran over the time limit ends with: nbclient's own error when the kernel does not
#: answer the interrupt, the kernel's KeyboardInterrupt when it does (nobody presses "interrupt" here).
_TIMED_OUT = ("CellTimeoutError", "KeyboardInterrupt")


def _grade_one(instructor, submitted, timeout):
    """Run one submission; return ([(grade_id, points, max_points, result)], notes, trouble, the
    executed notebook)."""
    preprocessors, utils = _nbgrader()
    graded, notes = _merge(instructor, submitted)
    trouble = bool(notes)
    with tempfile.TemporaryDirectory(prefix="cnn-course-grade-") as workdir:
        execute = preprocessors.Execute(timeout=timeout, interrupt_on_timeout=True, allow_errors=True,
                                        raise_on_iopub_timeout=False)
        try:
            graded, _ = execute.preprocess(graded, {"metadata": {"path": workdir}},
                                           km=_kernel_manager())
        except Exception as error:  # the kernel died or would not start: what ran keeps its outputs
            first_line = (str(error).splitlines() or [""])[0][:200]
            notes.append(f"kernel stopped: {type(error).__name__}"
                         + (f": {first_line}" if first_line else ""))
            trouble = True
    rows = []
    for cell in graded.cells:
        if not (_is_nbgrader(cell) and cell.metadata.nbgrader.get("grade")):
            continue
        gid = cell.metadata.nbgrader["grade_id"]
        ran = cell.get("execution_count") is not None or cell.outputs
        points, max_points = utils.determine_grade(cell)
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if not ran:
            points, result = 0.0, "not run"
        elif errors and errors[0].ename in _TIMED_OUT:
            result = f"CellTimeoutError: ran over the {timeout} s limit and was interrupted"
        elif errors:
            result = f"{errors[0].ename}: {errors[0].evalue}".strip().rstrip(":")[:300]
        elif points and points >= max_points:
            result = "passed"
        else:
            result = "failed (output on stderr)"
        rows.append((gid, float(points or 0.0), float(max_points), result))
    if any(o.get("ename") in _TIMED_OUT for c in graded.cells if c.cell_type == "code" for o in c.outputs):
        notes.append(f"a cell ran longer than the {timeout} s limit and was interrupted")
        trouble = True
    return rows, notes, trouble, graded


def _submitted_notebooks(student: Path):
    """A student's notebooks: ``<student>/<lesson>.ipynb``, or nbgrader's layout
    ``<student>/<lesson>/<lesson>.ipynb`` (any depth), without Jupyter's checkpoint copies."""
    return sorted(p for p in student.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def grade(submissions, out, source=None, timeout: int = 300, executed=None) -> int:
    """Grade ``submissions/<student>/<lesson>.ipynb`` (or ``.../<student>/<lesson>/<lesson>.ipynb``)
    into the CSV ``out``; with ``executed``, also write each graded notebook, outputs and all, to
    ``executed/<student>/<lesson>.ipynb`` (the feedback a student can read). Returns the exit status."""
    import nbformat

    submissions = Path(submissions)
    if not submissions.is_dir():
        raise ClassroomError(f"no folder {submissions}: expected one folder per student, each holding "
                             "their notebooks (e.g. submitted/ada/05_pooling.ipynb)")
    by_name = {p.name: p for p in lessons(source)}
    students = sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    table, looks, status = [], [], 0
    for stray in sorted(submissions.glob("*.ipynb")):
        looks.append(f"{stray.name}: a notebook outside any student folder (expected "
                     f"{submissions}/<student>/{stray.name}); skipped")
    if not students:
        raise ClassroomError(f"{submissions} has no student folders "
                             f"(expected {submissions}/<student>/<lesson>.ipynb)")
    for student in students:
        found = _submitted_notebooks(student)
        if not found:
            looks.append(f"{student.name}/: no notebook in it; {student.name} gets no row")
        for path in found:
            where = path.relative_to(submissions)
            if path.name not in by_name:
                looks.append(f"{where}: not a lesson with exercises (expected one of "
                             f"{', '.join(sorted(by_name))}); skipped")
                print(f"{student.name} {path.name}: skipped (not a lesson's file name)", flush=True)
                continue
            lesson = path.stem
            start = time.perf_counter()
            try:
                submitted = _read(path)
            except Exception as error:
                instructor = _read(by_name[path.name])
                table += [(student.name, lesson, gid, 0.0, pts, "unreadable notebook", str(error)[:200])
                          for gid, pts in _exercises(instructor)]
                looks.append(f"{where}: could not be read ({type(error).__name__}); scored 0")
                print(f"{student.name} {lesson}: 0 (unreadable notebook)", flush=True)
                continue
            rows, notes, trouble, graded = _grade_one(_read(by_name[path.name]), submitted, timeout)
            detail = "; ".join(notes)
            table += [(student.name, lesson, gid, pts, mx, result, detail) for gid, pts, mx, result in rows]
            total, most = sum(r[1] for r in rows), sum(r[2] for r in rows)
            print(f"{student.name} {lesson}: {total:g}/{most:g} ({time.perf_counter() - start:.1f} s)"
                  + (f"  [{detail}]" if detail else ""), flush=True)
            if trouble:
                looks.append(f"{where}: {detail}")
            if executed is not None:
                target = Path(executed) / student.name / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                nbformat.write(graded, str(target))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "lesson", "question", "points", "max_points", "result", "detail"])
        writer.writerows((s, l, q, f"{p:g}", f"{m:g}", r, d) for s, l, q, p, m, r, d in table)
    print(f"{len(table)} rows written to {out}")
    if looks:
        print("needs a teacher's look:\n  " + "\n  ".join(looks), file=sys.stderr)
        status = 1
    if not table:
        print("nothing was graded", file=sys.stderr)
        return 2
    return status


# --------------------------------------------------------------------------------------------
# an nbgrader course folder
# --------------------------------------------------------------------------------------------

_CONFIG = '''\
# nbgrader's configuration for this course (made by `python -m cnn_lib.classroom course`).
c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "{course_id}"
# A lesson's training cells take up to a minute on a slow laptop: give every cell five.
c.Execute.timeout = 300
# The stub that replaces a solution, as `python -m cnn_lib.classroom release` writes it.
c.ClearSolutions.code_stub = {{"python": {stub!r}}}
'''


def course(root, source=None, names=(), course_id: str = "cnn-course") -> Path:
    """An nbgrader course folder: ``nbgrader_config.py`` and ``source/<lesson>/<lesson>.ipynb``
    (the lessons without their saved widget state, which nbgrader would otherwise hand out)."""
    import nbformat

    root = Path(root)
    paths = lessons(source, names)
    (root / "source").mkdir(parents=True, exist_ok=True)
    config = root / "nbgrader_config.py"
    if not config.exists():
        config.write_text(_CONFIG.format(course_id=course_id, stub=CODE_STUB))
    for path in paths:
        folder = root / "source" / path.stem
        folder.mkdir(exist_ok=True)
        nb = _read(path)
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, str(folder / path.name))
        print(f"{folder / path.name}")
    return root


def links(hub: str, repo: str, branch: str = "main", folder: str = "notebooks", source=None,
          names=()) -> list[tuple[str, str]]:
    """nbgitpuller links, one per lesson: a student who opens one gets ``repo`` pulled into their
    home folder on ``hub`` (later clicks merge new commits without overwriting their work) and
    the lesson ``folder/<lesson>.ipynb`` opened in JupyterLab. For graded work, point ``repo`` at
    a repository of the *released* notebooks (``release``'s output), not at the course itself."""
    from urllib.parse import urlencode

    hub, repo = hub.rstrip("/"), repo.rstrip("/")
    if not hub.startswith(("http://", "https://")) or not repo.startswith(("http://", "https://")):
        raise ClassroomError("--hub and --repo must be web addresses (https://...), "
                             f"got {hub!r} and {repo!r}")
    clone = repo.rsplit("/", 1)[-1].removesuffix(".git")
    result = []
    for path in lessons(source, names):
        inside = "/".join(part for part in (clone, folder.strip("/"), path.name) if part)
        query = urlencode({"repo": repo, "branch": branch, "urlpath": f"lab/tree/{inside}"})
        result.append((path.stem, f"{hub}/hub/user-redirect/git-pull?{query}"))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnn_lib.classroom",
                                     description="Student versions of the lessons, and grades for "
                                                 "submissions (nbgrader's machinery, no database).")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("release", help="write the student version of lessons into a folder")
    r.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all with exercises)")
    r.add_argument("--out", default="release", help="folder to write into (default: release)")
    g = sub.add_parser("grade", help="grade a folder of submissions into a CSV table")
    g.add_argument("submissions", help="a folder with one folder per student, holding their notebooks")
    g.add_argument("--out", default="grades.csv", help="the CSV table to write (default: grades.csv)")
    g.add_argument("--timeout", type=int, default=300, help="seconds a cell may run (default 300)")
    g.add_argument("--executed", metavar="DIR",
                   help="also keep each graded notebook, with its outputs, in DIR/<student>/ (feedback)")
    c = sub.add_parser("course", help="make an nbgrader course folder (nbgrader_config.py, source/)")
    c.add_argument("root", help="the course folder to create or update")
    c.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all with exercises)")
    k = sub.add_parser("links", help="print an nbgitpuller link per lesson, for a class on JupyterHub")
    k.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all with exercises)")
    k.add_argument("--hub", required=True, help="the hub's address, e.g. https://hub.school.example")
    k.add_argument("--repo", required=True, help="the git repository students get, e.g. a repository of "
                                                 "the released notebooks")
    k.add_argument("--branch", default="main", help="its branch (default: main)")
    k.add_argument("--folder", default="notebooks",
                   help="the lessons' folder inside that repository (default: notebooks; '' for its top)")
    for p in (r, g, c, k):
        p.add_argument("--source", help="the instructor notebooks (default: the course's notebooks/ folder)")
    args = parser.parse_args(argv)
    try:
        if args.command == "release":
            release(args.out, args.source, args.lessons)
        elif args.command == "grade":
            if args.timeout <= 0:
                raise ClassroomError(f"--timeout must be a positive number of seconds, got {args.timeout}")
            return grade(args.submissions, args.out, args.source, args.timeout, args.executed)
        elif args.command == "links":
            made = links(args.hub, args.repo, args.branch, args.folder, args.source, args.lessons)
            for lesson, link in made:
                print(f"{lesson}: {link}")
        else:
            course(args.root, args.source, args.lessons)
            print(f"next: cd {args.root} && nbgrader generate_assignment <lesson>  (see the README)")
    except ClassroomError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
