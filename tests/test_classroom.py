"""The teacher tools (cnn_lib.classroom, cnn_lib.grading): student versions of every lesson, and
grades for submissions as a teacher gets them, including the ones that try something."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnn_lib import grading

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbgrader", reason="the teacher tools need nbgrader (pip install -e '.[teacher]')")
from cnn_lib import classroom  # noqa: E402


def _info(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _solution_lines(cell):
    """The lines between the solution markers of an instructor cell (what must not be released)."""
    inside, lines = False, []
    for line in cell.source.splitlines():
        if "BEGIN SOLUTION" in line:
            inside = True
        elif "END SOLUTION" in line:
            inside = False
        elif inside and line.strip() and not line.strip().startswith("#"):
            lines.append(line.strip())
    return lines


# ------------------------------------------------------------------------------------------
# the helpers check cells use
# ------------------------------------------------------------------------------------------

def test_run_catches_a_call_to_the_forbidden_kernel_however_it_is_reached():
    from cnn_lib.kernels import vectorized
    from cnn_lib.layers import MaxPool2d

    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4))
    dy = np.ones((1, 2, 2, 2))

    def by_another_name(x, dy):
        from cnn_lib.kernels.vectorized import maxpool2d_backward as mine

        return mine(dy, vectorized.maxpool2d_forward(x, (2, 2), (2, 2))[1])

    def through_a_layer(x, dy):
        layer = MaxPool2d(2)
        layer.forward(x)
        return layer.backward(dy)

    def honest(x, dy):
        return np.zeros_like(x)

    for answer in (by_another_name, through_a_layer):
        with pytest.raises(grading.ForbiddenCall, match="maxpool2d_backward"):
            grading.run(answer, x, dy, forbid=["maxpool2d_backward"])
    assert grading.run(honest, x, dy, forbid=["maxpool2d_backward"]).shape == x.shape
    assert sys.getprofile() is None  # the spy is gone afterwards
    with pytest.raises(ValueError, match="no kernel"):
        grading.run(honest, x, dy, forbid=["maxpool_backward_typo"])


def test_run_moves_stderr_and_warnings_of_the_answer_to_stdout(capsys):
    import warnings

    def noisy(a):
        print("debugging", file=sys.stderr)
        warnings.warn("careful", stacklevel=1)
        return np.float64(a) / 0.0

    assert grading.run(noisy, 1.0) == np.inf
    out, err = capsys.readouterr()
    assert err == ""
    assert "debugging" in out and "careful" in out and "divide by zero" in out


def test_answered_raises_not_implemented_for_a_missing_answer():
    namespace = {"grading": grading, "done": 1}
    exec("grading.answered('done')", namespace)
    with pytest.raises(NotImplementedError, match="not_yet"):
        exec("grading.answered('done', 'not_yet')", namespace)


# ------------------------------------------------------------------------------------------
# release
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", LESSONS, ids=[p.stem[:2] for p in LESSONS])
def test_the_student_version_holds_no_solution_no_hidden_test_and_no_output(path):
    instructor = nbformat.read(str(path), as_version=4)
    student = classroom.student_version(instructor)
    solutions = [line for c in instructor.cells if _info(c).get("solution") for line in _solution_lines(c)]
    assert solutions, "every lesson has exercises"
    text = "\n".join(c.source for c in student.cells)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    kept = [line for line in solutions if any(line == s.strip() for c in student.cells
                                               if _info(c).get("solution") for s in c.source.splitlines())]
    assert not kept, f"solution lines left in the student version: {kept[:3]}"
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    assert "widgets" not in student.metadata
    checks = [c for c in student.cells if _info(c).get("grade")]
    assert checks and all(_info(c)["locked"] and _info(c).get("checksum") for c in checks)
    stubs = [c for c in student.cells if _info(c).get("solution") and c.cell_type == "code"]
    assert all("raise NotImplementedError()" in c.source for c in stubs)
    # every check cell's hidden tests are in the instructor version
    assert all("BEGIN HIDDEN TESTS" in c.source for c in instructor.cells if _info(c).get("grade"))


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem[:2] for p in LESSONS])
def test_the_instructor_version_scores_full_marks(path):
    """By nbgrader's own rule, on the committed outputs; nbval (every notebook re-run, outputs
    compared) keeps those outputs what a fresh run gives, hidden tests included."""
    from nbgrader.utils import determine_grade

    checks = [c for c in nbformat.read(str(path), as_version=4).cells if _info(c).get("grade")]
    scores = {_info(c)["grade_id"]: determine_grade(c) for c in checks}
    assert checks and all(c.get("execution_count") for c in checks)
    assert all(points == most == 1 for points, most in scores.values()), scores


def test_release_command_writes_the_lessons_asked_for(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cnn_lib.classroom", "release", "00", "05_pooling",
                             "--out", str(tmp_path / "rel")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "rel").iterdir()) == ["00_start_here.ipynb", "05_pooling.ipynb"]
    assert "2 graded questions" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "cnn_lib.classroom", "release", "99"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "no lesson '99'" in bad.stderr and not (tmp_path / "release").exists()


# ------------------------------------------------------------------------------------------
# grading: one lesson, every kind of submission a teacher meets
# ------------------------------------------------------------------------------------------

LESSON = ROOT / "notebooks" / "05_pooling.ipynb"


def _submission(edit):
    """The released lesson 05 with ``edit(cells_by_grade_id, notebook)`` applied."""
    instructor = nbformat.read(str(LESSON), as_version=4)
    nb = classroom.student_version(instructor)
    solved = {_info(c)["grade_id"]: c.source for c in instructor.cells if _info(c).get("solution")}
    by_id = {_info(c)["grade_id"]: c for c in nb.cells if _info(c)}
    edit(by_id, nb, solved)
    return nb


def _solve(*ids):
    def edit(cells, nb, solved):
        for gid in ids:
            cells[gid].source = solved[gid]
    return edit


CHEAT = '''def my_maxpool2x2_backward(x, dy):
    from cnn_lib.kernels.vectorized import maxpool2d_backward, maxpool2d_forward
    return maxpool2d_backward(dy, maxpool2d_forward(x, (2, 2), (2, 2))[1])'''


def _cheat(cells, nb, solved):
    _solve("05-ex2-solution", "05-ex3-solution")(cells, nb, solved)
    cells["05-ex1-solution"].source = CHEAT


def _noisy(cells, nb, solved):
    _solve("05-ex1-solution", "05-ex2-solution")(cells, nb, solved)
    cells["05-ex3-solution"].source = solved["05-ex3-solution"].replace(
        "    return dx", "    import sys, warnings\n    print('my debug line', file=sys.stderr)\n"
                        "    warnings.warn('just a warning')\n    return dx")


def _tampered(cells, nb, solved):
    cells["05-ex2-check"].source = 'print("Correct!")'
    _solve("05-ex1-solution")(cells, nb, solved)
    nb.cells.insert(3, nbformat.v4.new_code_cell("my_scratch = 42"))  # a cell of their own: kept


def _crash(cells, nb, solved):
    _solve("05-ex1-solution")(cells, nb, solved)
    cells["05-ex2-solution"].source = "import os\nos._exit(1)"


def _endless(cells, nb, solved):
    _solve("05-ex2-solution", "05-ex3-solution")(cells, nb, solved)
    cells["05-ex1-solution"].source = solved["05-ex1-solution"].replace("    dx = np.zeros_like(x)",
                                                                        "    while True:\n        pass")
    # and a check cell deleted
    nb.cells = [c for c in nb.cells if _info(c).get("grade_id") != "05-ex3-check"]


def _moved(cells, nb, solved):
    """Exercise 3 answered in a cell of the student's own, its solution cell deleted."""
    _solve("05-ex1-solution")(cells, nb, solved)
    at = nb.cells.index(cells["05-ex3-solution"])
    nb.cells[at] = nbformat.v4.new_code_cell(solved["05-ex3-solution"])


def _pasted(cells, nb, solved):
    """Exercise 1 answered in a pasted copy of its solution cell (same nbgrader metadata, a new
    id), put above the untouched stub."""
    copy_of = nbformat.v4.new_code_cell(solved["05-ex1-solution"])
    copy_of.metadata = json.loads(json.dumps(cells["05-ex1-solution"].metadata))
    nb.cells.insert(nb.cells.index(cells["05-ex1-solution"]), copy_of)


SUBMISSIONS = {
    "blank": lambda cells, nb, solved: None,
    "full": _solve("05-ex1-solution", "05-ex2-solution", "05-ex3-solution"),
    "half": _solve("05-ex1-solution"),
    "library": _cheat,
    "stderr": _noisy,
    "tampered": _tampered,
    "crashing": _crash,
    "endless": _endless,
    "moved": _moved,
    "pasted": _pasted,
    "nested": _solve("05-ex1-solution", "05-ex2-solution", "05-ex3-solution"),  # nbgrader's layout
}
EXPECTED = {  # student -> (points of ex1, ex2, ex3)
    "blank": (0, 0, 0), "full": (1, 1, 1), "half": (1, 0, 0), "library": (0, 1, 1), "stderr": (1, 1, 1),
    "tampered": (1, 0, 0), "crashing": (1, 0, 0), "endless": (0, 1, 1), "moved": (1, 0, 1),
    "pasted": (1, 0, 0), "nested": (1, 1, 1),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    for student, edit in SUBMISSIONS.items():
        folder = root / "submitted" / student / (LESSON.stem if student == "nested" else "")
        folder.mkdir(parents=True)
        nbformat.write(_submission(edit), str(folder / LESSON.name))
    (root / "submitted" / "full" / "notes.ipynb").write_text(json.dumps(nbformat.v4.new_notebook()))
    (root / "submitted" / "empty").mkdir()
    # and one notebook outside any student folder
    nbformat.write(_submission(SUBMISSIONS["full"]), str(root / "submitted" / LESSON.name))
    result = subprocess.run([sys.executable, "-m", "cnn_lib.classroom", "grade", str(root / "submitted"),
                             "--out", str(root / "grades.csv"), "--timeout", "20",
                             "--executed", str(root / "executed")],
                            capture_output=True, text=True, timeout=600)
    result.root = root
    with open(root / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return result, rows


def test_the_grade_table_scores_every_kind_of_submission(graded):
    result, rows = graded
    got = {}
    for row in rows:
        assert row["lesson"] == "05_pooling" and row["max_points"] == "1"
        got.setdefault(row["student"], []).append(float(row["points"]))
    assert got == {s: list(map(float, p)) for s, p in EXPECTED.items()}, result.stdout + result.stderr
    by = {(r["student"], r["question"]): r for r in rows}
    assert all(by[("blank", q)]["result"].startswith("NotImplementedError")
               for q in ("05-ex1-check", "05-ex2-check", "05-ex3-check"))
    assert "ForbiddenCall" in by[("library", "05-ex1-check")]["result"]
    assert by[("stderr", "05-ex3-check")]["result"] == "passed"
    assert "tampered: check cell 05-ex2-check was edited" in by[("tampered", "05-ex1-check")]["detail"]
    assert "kernel stopped" in by[("crashing", "05-ex3-check")]["detail"]
    assert by[("endless", "05-ex1-check")]["result"].startswith("CellTimeoutError")
    assert "05-ex3-check was deleted" in by[("endless", "05-ex1-check")]["detail"]


def test_the_batch_reports_what_needs_a_look_and_exits_1(graded):
    result, _ = graded
    assert result.returncode == 1, result.stderr
    look = result.stderr.split("needs a teacher's look:")[1]
    for who in ("tampered/", "crashing/", "endless/", "full/notes.ipynb", "empty/: no notebook",
                "05_pooling.ipynb: a notebook outside any student folder"):
        assert who in look
    for fine in ("blank/", "half/", "library/", "stderr/", "moved/", "pasted/", "nested/"):
        assert fine not in look
    assert re.search(r"^full 05_pooling: 3/3", result.stdout, flags=re.M)
    assert "WARNING" not in result.stderr  # no kernel chatter on the teacher's terminal
    feedback = nbformat.read(str(result.root / "executed" / "library" / LESSON.name), as_version=4)
    assert any("ForbiddenCall" in o.get("ename", "") for c in feedback.cells if c.cell_type == "code"
               for o in c.outputs)


def test_grading_an_empty_or_missing_folder_is_a_clear_error(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "cnn_lib.classroom", "grade", str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "one folder per student" in missing.stderr
    empty = subprocess.run([sys.executable, "-m", "cnn_lib.classroom", "grade", str(tmp_path)],
                           capture_output=True, text=True)
    assert empty.returncode == 2 and "no student folders" in empty.stderr


# ------------------------------------------------------------------------------------------
# every lesson: the untouched student version scores 0, each check failing as unanswered
# ------------------------------------------------------------------------------------------

def test_every_blank_lesson_scores_zero_with_not_implemented_error(tmp_path):
    folder = tmp_path / "submitted" / "blank"
    folder.mkdir(parents=True)
    for path in LESSONS:
        student = classroom.student_version(nbformat.read(str(path), as_version=4))
        nbformat.write(student, str(folder / path.name))
    result = subprocess.run([sys.executable, "-m", "cnn_lib.classroom", "grade", str(tmp_path / "submitted"),
                             "--out", str(tmp_path / "grades.csv")],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["lesson"] for r in rows} == {p.stem for p in LESSONS}
    wrong = [(r["lesson"], r["question"], r["result"]) for r in rows
             if r["points"] != "0" or not r["result"].startswith("NotImplementedError")]
    assert not wrong, wrong


# ------------------------------------------------------------------------------------------
# the nbgrader course route
# ------------------------------------------------------------------------------------------

def test_nbgrader_generate_assignment_releases_lesson_00_from_the_course_folder(tmp_path):
    course = tmp_path / "course"
    made = subprocess.run([sys.executable, "-m", "cnn_lib.classroom", "course", str(course), "00", "05"],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert (course / "nbgrader_config.py").is_file()
    nbgrader = Path(sys.executable).with_name("nbgrader")
    command = [str(nbgrader)] if nbgrader.exists() else [sys.executable, "-m", "nbgrader"]
    # nbgrader runs `alembic` from PATH: this Python's scripts first, as in an activated environment
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    for lesson in ("00_start_here", "05_pooling"):
        run = subprocess.run(command + ["generate_assignment", lesson, "--force"], cwd=course, env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        released = nbformat.read(str(course / "release" / lesson / f"{lesson}.ipynb"), as_version=4)
        assert "widgets" not in released.metadata
        text = "\n".join(c.source for c in released.cells)
        assert "HIDDEN TESTS" not in text and "BEGIN SOLUTION" not in text
        assert classroom.CODE_STUB in text  # the course's stub, from its nbgrader_config.py


def test_links_open_each_lesson_through_nbgitpuller():
    from urllib.parse import parse_qs, urlsplit

    made = dict(classroom.links("https://hub.school.example/", "https://github.com/teacher/week3.git",
                                folder="", names=["05", "06"]))
    assert sorted(made) == ["05_pooling", "06_convolution_backward"]
    link = urlsplit(made["05_pooling"])
    assert (link.scheme, link.netloc) == ("https", "hub.school.example")
    assert link.path == "/hub/user-redirect/git-pull"
    assert parse_qs(link.query) == {"repo": ["https://github.com/teacher/week3.git"], "branch": ["main"],
                                    "urlpath": ["lab/tree/week3/05_pooling.ipynb"]}
    course = dict(classroom.links("https://hub.school.example", "https://github.com/org/cnn-course"))
    assert parse_qs(urlsplit(course["11_gan_from_scratch"]).query)["urlpath"] == [
        "lab/tree/cnn-course/notebooks/11_gan_from_scratch.ipynb"]
    assert [p.stem for p in classroom.lessons(names=["5", "06"])] == ["05_pooling", "06_convolution_backward"]
    with pytest.raises(classroom.ClassroomError, match="web addresses"):
        classroom.links("hub.school.example", "https://github.com/org/cnn-course")
