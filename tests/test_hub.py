"""The course on JupyterHub, as far as one machine allows: hub/jupyterhub_config.py as shipped
(dummy logins, local processes), three students who log in through the hub's REST API, each with
a server of their own that runs lesson 00 to the end, and work that stays apart.

Skipped, with one line saying why, where JupyterHub or its proxy (configurable-http-proxy, from
npm) is not installed; ``.ci/run`` installs both.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUDENTS = ("ada", "ben", "cy")
LESSON = ROOT / "notebooks" / "00_start_here.ipynb"

pytest.importorskip("jupyterhub", reason="JupyterHub is not installed (pip install jupyterhub)")
nbformat = pytest.importorskip("nbformat")
tornado_websocket = pytest.importorskip("tornado.websocket")


def _proxy():
    found = shutil.which("configurable-http-proxy")
    if found is None:
        pytest.skip("configurable-http-proxy is not on PATH (npm install -g configurable-http-proxy)")
    return found


def _free_port_block(size=3):
    """A port p with p, p+1, ..., p+size-1 free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + size > 65535:
            continue
        ok = True
        for port in range(base + 1, base + size):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
        if ok:
            return base
    pytest.skip("no free block of ports on 127.0.0.1")


class Hub:
    def __init__(self, url, token):
        self.url, self.token = url, token

    def request(self, method, path, body=None, token=None, expect=(200, 201, 202, 204)):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Authorization": f"token {token or self.token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode(errors="replace")
        if expect and status not in expect:
            raise AssertionError(f"{method} {path}: HTTP {status}: {text[:500]}")
        return status, (json.loads(text) if text.strip().startswith(("{", "[")) else text)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    proxy = _proxy()
    state = tmp_path_factory.mktemp("hub")
    port = _free_port_block()
    token = uuid.uuid4().hex
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, CNN_COURSE_HUB_DIR=str(state), CNN_COURSE_HUB_PORT=str(port),
               CNN_COURSE_STUDENTS=",".join(STUDENTS), CNN_COURSE_HUB_TOKEN=token,
               PATH=os.pathsep.join([bin_dir, str(Path(proxy).parent), os.environ["PATH"]]))
    env.pop("JUPYTERHUB_API_TOKEN", None)
    log = open(state / "hub.log", "w")
    config = ROOT / "hub" / "jupyterhub_config.py"
    process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=state, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    hub = Hub(f"http://127.0.0.1:{port}", token)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if hub.request("GET", "/hub/api/", expect=())[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the hub did not start:\n" + (state / "hub.log").read_text()[-3000:])
            time.sleep(0.5)
        hub.state = state
        yield hub
    finally:
        for student in STUDENTS:
            try:
                hub.request("DELETE", f"/hub/api/users/{student}/server", expect=())
            except OSError:
                pass
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


async def _run_notebook(ws_url, token, nb):
    """Run every code cell of ``nb`` in a kernel reached through the hub's websocket, in order, as
    a browser does; fill in the outputs. Returns the errors of cells not tagged raises-exception."""
    from tornado.httpclient import HTTPRequest

    connection = await tornado_websocket.websocket_connect(
        HTTPRequest(ws_url, headers={"Authorization": f"token {token}"}))
    session, errors = uuid.uuid4().hex, []
    try:
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            msg_id = uuid.uuid4().hex
            connection.write_message(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session,
                           "username": "student", "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": cell.source, "silent": False, "store_history": True,
                            "user_expressions": {}, "allow_stdin": False, "stop_on_error": False}}))
            cell.outputs = []
            while True:
                raw = await asyncio.wait_for(connection.read_message(), timeout=120)
                assert raw is not None, "the kernel's websocket closed"
                message = json.loads(raw)
                if message.get("parent_header", {}).get("msg_id") != msg_id or message["channel"] != "iopub":
                    continue
                kind, content = message["msg_type"], message["content"]
                if kind == "status" and content["execution_state"] == "idle":
                    break
                if kind in ("stream", "display_data", "execute_result", "error"):
                    output = {"output_type": kind, **content}
                    output.pop("transient", None)
                    if kind == "execute_result":
                        output.setdefault("metadata", {})
                    cell.outputs.append(nbformat.from_dict(output))
                    if kind == "error" and "raises-exception" not in cell.metadata.get("tags", []):
                        errors.append(f"cell {index}: {content['ename']}: {content['evalue']}")
    finally:
        connection.close()
    return errors


def test_three_students_each_run_lesson_00_on_their_own_server_and_stay_apart(hub):
    tokens = {}
    for student in STUDENTS:
        # 409: the hub has already made the account from its class list (allowed_users)
        hub.request("POST", f"/hub/api/users/{student}", expect=(201, 409))
        # the student's own login token, made through the REST API
        status, made = hub.request("POST", f"/hub/api/users/{student}/tokens", {"note": "test login"})
        tokens[student] = made["token"]
        status, me = hub.request("GET", "/hub/api/user", token=tokens[student])
        assert me["name"] == student
        hub.request("POST", f"/hub/api/users/{student}/server", token=tokens[student])
    deadline = time.monotonic() + 180
    for student in STUDENTS:
        while not (hub.request("GET", f"/hub/api/users/{student}")[1]["servers"].get("", {}).get("ready")):
            assert time.monotonic() < deadline, f"{student}'s server did not start:\n" + \
                (hub.state / "hub.log").read_text()[-3000:]
            time.sleep(1)

    lesson = nbformat.read(str(LESSON), as_version=4)
    for student in STUDENTS:
        base = f"/user/{student}/api"
        hub.request("PUT", f"{base}/contents/00_start_here.ipynb",
                    {"type": "notebook", "format": "json", "content": lesson}, token=tokens[student])
        status, kernel = hub.request("POST", f"{base}/kernels", {"name": "python3"}, token=tokens[student])
        ws_url = hub.url.replace("http", "ws", 1) + f"{base}/kernels/{kernel['id']}/channels"
        nb = nbformat.from_dict(hub.request("GET", f"{base}/contents/00_start_here.ipynb",
                                            token=tokens[student])[1]["content"])
        start = time.monotonic()
        errors = asyncio.run(_run_notebook(ws_url, tokens[student], nb))
        assert not errors, f"{student}: lesson 00 failed on the hub: {errors}"
        # the student's own mark, left by their kernel in their home folder
        marker = nbformat.v4.new_code_cell(f"open('whose.txt', 'w').write({student!r})")
        nb.cells.append(marker)
        only_marker = nbformat.v4.new_notebook(cells=[marker])
        assert not asyncio.run(_run_notebook(ws_url, tokens[student], only_marker))
        hub.request("PUT", f"{base}/contents/00_start_here.ipynb",
                    {"type": "notebook", "format": "json", "content": nb}, token=tokens[student])
        hub.request("DELETE", f"{base}/kernels/{kernel['id']}", token=tokens[student])
        print(f"{student}: lesson 00 ran on the hub in {time.monotonic() - start:.1f} s")

    for student in STUDENTS:
        home = hub.state / "home" / student
        assert (home / "whose.txt").read_text() == student
        saved = nbformat.read(str(home / "00_start_here.ipynb"), as_version=4)
        assert any("Correct!" in o.get("text", "") for c in saved.cells if c.cell_type == "code"
                   for o in c.outputs), f"{student}'s saved lesson has no check-cell output"
        for other in STUDENTS:
            if other != student:  # another student's token opens nothing of this student's
                status, _ = hub.request("GET", f"/user/{student}/api/contents/whose.txt",
                                        token=tokens[other], expect=())
                assert status in (403, 404), f"{other} reached {student}'s files: HTTP {status}"
