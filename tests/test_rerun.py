"""notebooks/rerun.py, the command that re-executes the lessons: two runs of a lesson write the same
file (apart from the outputs of ``# NBVAL_IGNORE_OUTPUT`` cells), with no timestamps, no split
streams, widget ids that match the saved widget state, and no path of this machine.

The lesson run is 00_start_here (a few seconds, and it has a widget), on a copy in a temporary
folder, so the repository's notebooks are never touched.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "notebooks" / "00_start_here.ipynb"
IGNORE_MARK = "# NBVAL_IGNORE_OUTPUT"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _load_rerun():
    spec = importlib.util.spec_from_file_location("rerun", ROOT / "notebooks" / "rerun.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("rerun", module)
    spec.loader.exec_module(module)
    return module


rerun = _load_rerun()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Lesson 00 copied to a temporary folder, re-run in place twice: (first, second) file texts."""
    folder = tmp_path_factory.mktemp("rerun")
    copy = folder / LESSON.name
    shutil.copyfile(LESSON, copy)
    texts = []
    for _ in range(2):
        assert rerun.main([str(copy)]) == 0
        texts.append(copy.read_text(encoding="utf-8"))
    return copy, texts


def _without_ignored_outputs(text: str) -> dict:
    nb = json.loads(text)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "".join(cell["source"]).startswith(IGNORE_MARK):
            cell["outputs"] = []
    return nb


def _texts_of_outputs(nb: dict) -> str:
    """Everything a person reads in the outputs (not the images' base64) plus the metadata."""
    parts = [json.dumps(nb["metadata"])]
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            parts += output.get("text", []) + output.get("traceback", []) + [output.get("evalue", "")]
            for mime, value in output.get("data", {}).items():
                if not mime.startswith("image/"):
                    parts.append(json.dumps(value))
    return "\n".join(parts)


def test_two_runs_write_the_same_notebook(two_runs):
    copy, (first, second) = two_runs
    assert _without_ignored_outputs(first) == _without_ignored_outputs(second)
    assert rerun.main(["--check", str(copy)]) == 0


def test_written_like_jupyter_with_no_timestamps_and_counts_from_one(two_runs):
    _, (_, text) = two_runs
    nb = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    assert text == nbformat.writes(nb) + "\n"  # Jupyter's own formatting: indent 1, trailing newline
    original = nbformat.read(LESSON, as_version=nbformat.NO_CONVERT)
    assert (nb.nbformat, nb.nbformat_minor) == (original.nbformat, original.nbformat_minor)
    assert nb.metadata.kernelspec == original.metadata.kernelspec
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert not [cell.id for cell in code if "execution" in cell.metadata]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    for cell in code:
        for output in cell.outputs:
            if output.output_type == "execute_result":
                assert output.execution_count == cell.execution_count


def test_no_adjacent_streams_of_the_same_name(two_runs):
    _, (_, text) = two_runs
    for cell in json.loads(text)["cells"]:
        outputs = cell.get("outputs", [])
        for before, after in zip(outputs, outputs[1:]):
            assert not (before["output_type"] == after["output_type"] == "stream"
                        and before["name"] == after["name"]), f"split stream in cell {cell['id']}"


def test_widget_ids_are_derived_and_match_the_saved_state(two_runs):
    _, (_, text) = two_runs
    nb = json.loads(text)
    state = nb["metadata"]["widgets"][WIDGET_STATE]["state"]
    assert state, "lesson 00 shows a widget, so its state should be saved"
    assert set(state) == {rerun.widget_id(LESSON.name, i) for i in range(len(state))}
    assert all(re.fullmatch(r"[0-9a-f]{32}", model) for model in state)
    views = [output["data"][WIDGET_VIEW]["model_id"] for cell in nb["cells"]
             for output in cell.get("outputs", []) if WIDGET_VIEW in output.get("data", {})]
    assert views and all(model in state for model in views)
    assert views[0] == rerun.widget_id(LESSON.name, 0)  # the first model to appear is number 0
    references = re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state))
    assert references and all(model in state for model in references)
    assert rerun.widget_problems(nbformat.reads(text, as_version=nbformat.NO_CONVERT)) == []


def test_outputs_name_no_path_of_this_machine(two_runs):
    copy, (_, text) = two_runs
    readable = _texts_of_outputs(json.loads(text))
    forbidden = {str(ROOT), str(ROOT.resolve()), str(copy.parent), str(copy.parent.resolve())}
    if Path.home() != Path(Path.home().anchor):
        forbidden |= {str(Path.home()), str(Path.home().resolve())}
    assert not [path for path in forbidden if path in readable]
    assert "Environment check" in readable  # the report is there, only without the paths


def test_environment_report_names_no_path_of_this_machine():
    from cnn_lib.envcheck import check_environment, format_report

    report = format_report(check_environment())
    forbidden = {str(ROOT), str(ROOT.resolve())}
    if Path.home() != Path(Path.home().anchor):
        forbidden |= {str(Path.home()), str(Path.home().resolve())}
    assert not [path for path in forbidden if path in report], report


def test_widget_renaming_rewrites_every_reference():
    v4 = nbformat.v4
    box, slider, layout, output_widget, inner = ("a" * 32, "b" * 32, "c" * 32, "d" * 32, "e" * 32)

    def model(name, **state):
        return {"model_name": name, "model_module": "m", "model_module_version": "1", "state": state}

    nb = v4.new_notebook(cells=[v4.new_code_cell("w", outputs=[v4.new_output(
        "display_data", data={WIDGET_VIEW: {"model_id": box, "version_major": 2, "version_minor": 0},
                              "text/plain": "VBox()"})])])
    nb.metadata.widgets = {WIDGET_STATE: {"version_major": 2, "version_minor": 0, "state": {
        inner: model("Label", layout=f"IPY_MODEL_{layout}"),
        layout: model("Layout"),
        slider: model("IntSlider", layout=f"IPY_MODEL_{layout}"),
        output_widget: model("Output", outputs=[{"output_type": "display_data", "metadata": {},
                                                 "data": {WIDGET_VIEW: {"model_id": inner}}}]),
        box: model("VBox", children=[f"IPY_MODEL_{slider}", f"IPY_MODEL_{output_widget}"]),
    }}}
    rerun.rename_widgets(nb, "x.ipynb")
    new = [rerun.widget_id("x.ipynb", i) for i in range(5)]
    state = nb.metadata.widgets[WIDGET_STATE]["state"]
    assert nb.cells[0].outputs[0].data[WIDGET_VIEW]["model_id"] == new[0]
    assert state[new[0]]["state"]["children"] == [f"IPY_MODEL_{new[1]}", f"IPY_MODEL_{new[3]}"]
    assert state[new[1]]["state"]["layout"] == f"IPY_MODEL_{new[2]}"
    assert state[new[3]]["state"]["outputs"][0]["data"][WIDGET_VIEW]["model_id"] == new[4]
    assert state[new[4]]["state"]["layout"] == f"IPY_MODEL_{new[2]}"
    assert rerun.widget_problems(nb) == []
    before = json.dumps(nb, sort_keys=True)
    assert json.dumps(rerun.rename_widgets(nb, "x.ipynb"), sort_keys=True) == before  # idempotent


def test_streams_are_merged_only_when_adjacent():
    v4 = nbformat.v4
    outputs = [v4.new_output("stream", name="stdout", text="a\n"),
               v4.new_output("stream", name="stdout", text="b\n"),
               v4.new_output("stream", name="stderr", text="10%\r50%\r100%\n"),
               v4.new_output("stream", name="stdout", text="c\n")]
    merged = rerun.coalesce_streams(outputs)
    assert [(o.name, o.text) for o in merged] == [
        ("stdout", "a\nb\n"), ("stderr", "100%\n"), ("stdout", "c\n")]
