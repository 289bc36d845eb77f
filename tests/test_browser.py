"""The lessons in a real browser: every lesson opened in JupyterLab, run from top to bottom, and
every widget used the way a student uses it; a subset in Notebook 7.

nbval proves that the cells run in a kernel; only a browser shows whether a student sees the
widgets ("Error displaying widget", a slider that moves but redraws nothing). For every lesson:
Run All Cells from the menu, then fail on an error output in a cell not tagged raises-exception
(read from the notebook the browser saved), on a widget that did not render, and on a browser
console error of the course's making. Then each widget is driven with the mouse (a slider dragged,
a button or toggle pressed; in Lab also a slider stepped with the keyboard), and after every
action the test checks the new value: the slider's readout shows the value the kernel now holds,
every caption the browser shows is the text the kernel computed for it, the figure was redrawn,
and where the lesson's widget has a rule a student can check (lesson 00's square, lesson 01's
weighted sum), that the numbers on the page obey it. Screenshots of each widget before and after
each action go to ``$CNN_COURSE_SCREENSHOTS`` (default: a temporary folder, printed).

Skipped, with one line saying why, where Playwright or Chromium is missing. Setup:
``pip install playwright`` (its driver; no browser download is needed) and a Chromium
(``apt-get install chromium``; or set ``CNN_COURSE_CHROMIUM`` to a Chromium executable).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
)
nbformat = pytest.importorskip("nbformat")
CHROMIUM = (
    os.environ.get("CNN_COURSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)
if not CHROMIUM:
    pytest.skip(
        "no Chromium found (apt-get install chromium, or set CNN_COURSE_CHROMIUM)", allow_module_level=True
    )

WIDGET_OUTPUT = ".jp-OutputArea-output:has(> .jupyter-widgets)"

#: What a student does with each lesson's widgets, in order: (widget number in the lesson, action,
#: the control's description, argument). "drag": move a slider to that value with the mouse;
#: "key": focus a slider and press that key (Lab only: in Notebook 7 the key never reaches it);
#: "click": press a button or a toggle button with that text; "check": tick a checkbox.
ACTIONS = {
    "00_start_here.ipynb": [(0, "drag", "test slider", 7), (0, "key", "test slider", "ArrowRight")],
    "01_convolution_forward.ipynb": [
        (0, "drag", "output row", 2),
        (0, "drag", "output column", 1),
        (0, "key", "output row", "ArrowLeft"),
        (0, "drag", "stride", 2),
    ],
    "05_pooling.ipynb": [
        (0, "drag", "kernel", 3),
        (0, "click", "pooling", "avg"),
        (0, "click", "pooling", "max"),
        (0, "drag", "output row", 1),
        (0, "check", "dy only at this output", None),
        (0, "key", "stride", "ArrowLeft"),
    ],
    "06_convolution_backward.ipynb": [
        (0, "drag", "input row", 1),
        (0, "drag", "input col", 4),
        (0, "drag", "stride", 2),
        (0, "key", "padding", "ArrowRight"),
    ],
    "07_training_on_mnist.ipynb": [
        (0, "drag", "when", 0),
        (1, "drag", "image", 3),
        (1, "drag", "channel", 2),
        (1, "key", "image", "ArrowRight"),
    ],
    "11_gan_from_scratch.ipynb": [
        (0, "drag", "t (z_a -> z_b)", 0.5),
        (0, "click", None, "new pair z_a, z_b"),
        (0, "key", "t (z_a -> z_b)", "ArrowRight"),
    ],
}
#: Notebook 7: at least one lesson per kind of control (slider, toggle buttons, checkbox, button).
NOTEBOOK7 = ["00_start_here.ipynb", "05_pooling.ipynb", "11_gan_from_scratch.ipynb"]
#: Console errors of the course's making: from the widgets (ipywidgets' manager, the course's
#: explorers) or naming cnn_lib. The front ends' own (Notebook 7 reading a setting schema it lacks,
#: a resource a bare server refuses) are printed in the test's output but do not fail it.
COURSE_CONSOLE = re.compile(r"widget|jupyter-widgets|cnn_lib|Error displaying", re.I)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """JupyterLab (with Notebook 7 beside it) on 127.0.0.1, token off, every Jupyter folder
    temporary (config, data, runtime, settings, workspaces), news and autosave off, serving a
    copy of the lessons."""

    def __init__(self, root: Path):
        self.root, self.notebooks = root, root / "notebooks"
        # a copy of the lessons as shipped for each front end: a notebook saved by one (its widget
        # state is not saved by default) is not what the other should open
        for front in ("lab", "notebook"):
            shutil.copytree(
                ROOT / "notebooks", self.notebooks / front, ignore=shutil.ignore_patterns("*.py", "*.cfg")
            )
        settings = root / "settings"
        for plugin, values in {
            "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
            "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        }.items():
            path = settings / (plugin + ".jupyterlab-settings")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.env = dict(
            os.environ,
            JUPYTER_CONFIG_DIR=str(root / "config"),
            JUPYTER_DATA_DIR=str(root / "data"),
            JUPYTER_RUNTIME_DIR=str(root / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"),
            JUPYTER_PLATFORM_DIRS="1",
        )
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "server.log", "w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                f"--port={self.port}",
                "--ServerApp.ip=127.0.0.1",
                "--IdentityProvider.token=",
                "--ServerApp.password=",
                f"--ServerApp.root_dir={self.notebooks}",
                "--LabApp.news_url=",
                "--ServerApp.allow_root=True",
                "--ServerApp.disable_check_xsrf=True",
            ],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(self.url + "/api/status", timeout=5)
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(
                        "JupyterLab did not start:\n" + (root / "server.log").read_text()[-3000:]
                    ) from None
                time.sleep(0.5)

    def api(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def kernel_state(self, notebook, code):
        """Run ``code`` in the kernel behind ``notebook`` (a client of its own, beside the browser's)
        and return what it printed, parsed as JSON."""
        from jupyter_client import BlockingKernelClient

        session = next(s for s in self.api("/api/sessions") if s["path"].endswith(notebook))
        client = BlockingKernelClient(
            connection_file=str(self.root / "runtime" / f"kernel-{session['kernel']['id']}.json")
        )
        client.load_connection_file()
        client.start_channels()
        try:
            printed = []
            client.execute_interactive(
                code,
                store_history=False,
                timeout=60,
                output_hook=lambda m: (
                    printed.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None
                ),
            )
            return json.loads("".join(printed))
        finally:
            client.stop_channels()

    def shut_down_kernels(self):
        for session in self.api("/api/sessions"):
            request = urllib.request.Request(f"{self.url}/api/sessions/{session['id']}", method="DELETE")
            urllib.request.urlopen(request, timeout=30)

    def stop(self):
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


#: What the kernel holds for every widget the notebook made: each control's description -> value,
#: and every caption (HTML and Label values).
KERNEL_WIDGETS = """
import json as _json
from ipywidgets.widgets.widget import _instances as _all
_controls, _texts = {}, []
for _w in list(_all.values()):
    if type(_w).__name__ in ("HTML", "Label"):
        _texts.append(_w.value)
    elif getattr(_w, "description", None) and hasattr(_w, "value") and not hasattr(_w, "children"):
        # a selection slider or dropdown shows its label
        _shown = _w.label if isinstance(getattr(_w, "label", None), str) else _w.value
        _controls[_w.description] = _shown if isinstance(_shown, (bool, int, float, str)) else str(_shown)
print(_json.dumps({"controls": _controls, "texts": _texts}))
"""


def _plain(text):
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


@pytest.fixture(scope="module")
def server():
    root = Path(tempfile.mkdtemp(prefix="cnn-course-browser-"))
    started = Server(root)
    yield started
    started.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots():
    folder = Path(
        os.environ.get("CNN_COURSE_SCREENSHOTS") or tempfile.mkdtemp(prefix="cnn-course-screenshots-")
    )
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nwidget screenshots: {folder}")
    return folder


def _open_and_run_all(server, browser, lesson, front):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    console = []
    page.on(
        "console", lambda m: console.append(m.text) if m.type == "error" or "cnn-course:" in m.text else None
    )
    page.on("pageerror", lambda e: console.append(f"uncaught: {e}"))
    url = (
        f"{server.url}/lab/tree/lab/{lesson}?reset"
        if front == "lab"
        else f"{server.url}/notebooks/notebook/{lesson}"
    )
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_function(
        "document.querySelector('.jp-Notebook-ExecutionIndicator, .jp-KernelStatus') !== null || true"
    )
    deadline = time.monotonic() + 60
    while not any(
        s["path"].endswith(lesson) and s["kernel"]["execution_state"] == "idle"
        for s in server.api("/api/sessions")
    ):
        assert time.monotonic() < deadline, f"{lesson}: the kernel did not start"
        page.wait_for_timeout(300)
    start = time.monotonic()
    page.click("li.lm-MenuBar-item:has-text('Run')")
    page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
    page.wait_for_timeout(1000)
    deadline = time.monotonic() + 300
    while True:
        idle = all(
            s["kernel"]["execution_state"] == "idle"
            for s in server.api("/api/sessions")
            if s["path"].endswith(lesson)
        )
        if idle and page.locator(".jp-InputPrompt:has-text('[*]')").count() == 0:
            page.wait_for_timeout(500)  # outputs still arriving after the last reply
            if all(
                s["kernel"]["execution_state"] == "idle"
                for s in server.api("/api/sessions")
                if s["path"].endswith(lesson)
            ):
                break
        assert time.monotonic() < deadline, f"{lesson}: Run All did not finish in 300 s"
        page.wait_for_timeout(500)
    seconds = time.monotonic() - start
    path = server.notebooks / front / lesson
    before = path.stat().st_mtime_ns
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while path.stat().st_mtime_ns == before:
        assert time.monotonic() < deadline, f"{lesson}: saving from the browser did not write the file"
        page.wait_for_timeout(200)
    page.wait_for_timeout(500)
    return page, console, seconds


def _errors_in_saved(path):
    nb = nbformat.read(str(path), as_version=4)
    errors, widget_views = [], 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            if output.output_type == "error" and "raises-exception" not in cell.metadata.get("tags", []):
                errors.append(f"cell {index}: {output.ename}: {output.evalue}")
            if "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
                widget_views += 1
    return errors, widget_views


def _widget(page, number):
    """The ``number``-th widget output, scrolled into view until it stops moving (Lab's windowed
    notebook keeps moving the page after scrollIntoView)."""
    output = page.locator(WIDGET_OUTPUT).nth(number)
    last = None
    for _ in range(20):
        output.scroll_into_view_if_needed()
        page.wait_for_timeout(250)
        box = output.bounding_box()
        if box is not None and last is not None and abs(box["y"] - last["y"]) < 1:
            break
        last = box
    return output


def _control(widget, description):
    """The one row (slider, toggle buttons, checkbox) whose description is ``description``."""
    rows = widget.locator(".widget-inline-hbox, .widget-toggle-buttons, .widget-checkbox")
    exact = rows.filter(has=widget.page.locator(f"label.widget-label:text-is('{description}')"))
    return exact.first if exact.count() else rows.filter(has_text=description).first


def _snapshot(widget):
    """What a student sees of a widget: readouts, captions, and the figures' pixels (their data URLs)."""
    return {
        "readouts": widget.locator(".widget-readout").all_inner_texts(),
        "texts": [
            _plain(t) for t in widget.locator(".widget-html-content, div.widget-label").all_inner_texts()
        ],
        "images": widget.locator("img").evaluate_all(
            "els => els.map(e => e.src.length + ':' + e.src.slice(-64))"
        ),
    }


def _drag(page, control, value):
    track = control.locator(".noUi-base, .slider-container").first
    handle = control.locator(".noUi-handle").first
    readout = control.locator(".widget-readout").first
    handle.scroll_into_view_if_needed()
    box, knob = track.bounding_box(), handle.bounding_box()
    low, high = (
        float(v)
        for v in control.evaluate(
            "el => { const s = el.querySelector('.noUi-target'); const o = s.noUiSlider.options.range;"
            " return [o.min, o.max]; }"
        )
    )
    target_x = box["x"] + box["width"] * (value - low) / (high - low)
    y = knob["y"] + knob["height"] / 2
    page.mouse.move(knob["x"] + knob["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(target_x, y, steps=12)
    page.mouse.up()
    return readout


def _act(page, widget, action, description, argument):
    if action == "drag":
        control = _control(widget, description)
        readout = _drag(page, control, argument)
        page.wait_for_timeout(300)
        return control, readout
    if action == "key":
        control = _control(widget, description)
        control.locator(".noUi-handle").first.focus()
        page.keyboard.press(argument)
        return control, control.locator(".widget-readout").first
    if action == "click":
        scope = _control(widget, description) if description else widget
        scope.locator(f"button:text-is('{argument}')").first.click()
        return None, None
    if action == "check":
        _control(widget, description).locator("input[type=checkbox]").first.click()
        return None, None
    raise ValueError(action)


def _wait_for_change(page, widget, before, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        page.wait_for_timeout(300)
        now = _snapshot(widget)
        if now != before:
            page.wait_for_timeout(700)  # let the redraw finish
            return _snapshot(widget)
    return _snapshot(widget)


def _check_rules(lesson, state, seen):
    """The rules a student can check by eye on the page."""
    if lesson == "00_start_here.ipynb":
        value = state["controls"]["test slider"]
        assert f"{value} squared is {value**2}" in seen["texts"], seen
    if lesson == "01_convolution_forward.ipynb":
        caption = next(t for t in seen["texts"] if "y[" in t)
        found = re.search(r"y\[(\d+), (\d+)\] = (.*) = (-?[\d.]+)$", caption)
        assert found, caption
        row, col = int(found.group(1)), int(found.group(2))
        assert (row, col) == (state["controls"]["output row"], state["controls"]["output column"]), caption
        total = sum(float(a) * float(b) for a, b in re.findall(r"(-?[\d.]+)\*(-?[\d.]+)", found.group(3)))
        assert abs(total - float(found.group(4))) < 1e-6, f"the page's sum does not add up: {caption}"


def _exercise_widgets(server, page, lesson, front, shots):
    clicked = []
    for step, (number, action, description, argument) in enumerate(ACTIONS.get(lesson, [])):
        if action == "key" and front != "lab":
            continue  # Notebook 7: arrow keys on a focused slider never reach it (upstream); the mouse works
        widget = _widget(page, number)
        before = _snapshot(widget)
        name = f"{front}-{lesson[:2]}-w{number}-{step}-{action}"
        widget.screenshot(path=str(shots / f"{name}-before.png"))
        page.evaluate(f"console.info('cnn-course: {name}')")
        control, readout = _act(page, widget, action, description, argument)
        after = _wait_for_change(page, widget, before)
        widget.screenshot(path=str(shots / f"{name}-after.png"))
        assert after != before, (
            f"{lesson}: {action} {description or ''} {argument}: nothing on the page changed"
        )
        state = server.kernel_state(lesson, KERNEL_WIDGETS)
        if readout is not None:  # the readout shows what the kernel holds, and it moved as asked
            shown = readout.inner_text().strip()
            held = state["controls"][description]
            if action == "drag" and isinstance(argument, (int, float)) and not isinstance(held, str):
                assert abs(float(held) - argument) < 1e-9, (
                    f"{lesson}: dragged {description} to {argument}, kernel has {held}"
                )
            assert shown == str(held) or (
                shown.replace(".", "", 1).lstrip("-").isdigit() and abs(float(shown) - float(held)) < 1e-9
            ), (lesson, description, shown, held)
        kernel_texts = {_plain(t) for t in state["texts"]}
        for text in after["texts"]:
            if text:
                assert text in kernel_texts, (
                    f"{lesson}: the page shows {text!r}, which the kernel never computed"
                )
        _check_rules(lesson, state, after)
        changed = [k for k in after if after[k] != before[k]]
        clicked.append(f"{action} {description or argument} -> {argument}: {', '.join(changed)} changed")
    return clicked


def _render_errors(page):
    """Widgets that failed to render: ipywidgets writes "Error displaying widget" into the output."""
    return page.locator(".jp-OutputArea-output").get_by_text("Error displaying widget").count()


def _console_errors(console):
    steps = [m for m in console if m.startswith("cnn-course:")]
    console = [m for m in console if m not in steps]
    ours = [m for m in console if COURSE_CONSOLE.search(m)]
    others = sorted(set(m.splitlines()[0][:160] for m in console if m not in ours))
    if others:
        print(f"\n  (console errors not of the course's making: {others})")
    return ours


@pytest.mark.parametrize("lesson", LESSONS, ids=[name[:2] for name in LESSONS])
def test_lesson_runs_and_its_widgets_work_in_jupyterlab(server, browser, shots, lesson):
    page, console, seconds = _open_and_run_all(server, browser, lesson, "lab")
    try:
        errors, views = _errors_in_saved(server.notebooks / "lab" / lesson)
        assert not errors, f"{lesson}: errors in the browser's run: {errors}"
        assert _render_errors(page) == 0, f"{lesson}: a widget failed to render"
        for number in range(views):
            assert _widget(page, number).locator(".jupyter-widgets").count() > 0
        clicked = _exercise_widgets(server, page, lesson, "lab", shots)
        assert not _console_errors(console), f"{lesson}: browser console errors: {_console_errors(console)}"
        print(f"\n{lesson} (Lab): ran in {seconds:.1f} s, {views} widget(s); " + "; ".join(clicked))
    finally:
        page.close()
        server.shut_down_kernels()


@pytest.mark.parametrize("lesson", NOTEBOOK7, ids=[name[:2] for name in NOTEBOOK7])
def test_lesson_runs_and_its_widgets_work_in_notebook_7(server, browser, shots, lesson):
    page, console, seconds = _open_and_run_all(server, browser, lesson, "notebook")
    try:
        errors, views = _errors_in_saved(server.notebooks / "notebook" / lesson)
        assert not errors, f"{lesson}: errors in the browser's run: {errors}"
        assert _render_errors(page) == 0, f"{lesson}: a widget failed to render"
        clicked = _exercise_widgets(server, page, lesson, "notebook", shots)
        assert not _console_errors(console), f"{lesson}: browser console errors: {_console_errors(console)}"
        print(f"\n{lesson} (Notebook 7): ran in {seconds:.1f} s, {views} widget(s); " + "; ".join(clicked))
    finally:
        page.close()
        server.shut_down_kernels()
