"""JupyterHub for a class taking the course: a working example, and what a school changes.

As it is, this file runs the course for a few students on one machine, with no real logins and
every student's server running as the user who started the hub. That is how it is tested
(``tests/test_hub.py``: three students log in through the hub's REST API, each gets a server,
runs lesson 00 to the end, and none can reach another's files through the hub). Run it, from
the course folder, in the environment where the course is installed::

    npm install -g configurable-http-proxy         # the hub's proxy (Node.js)
    jupyterhub -f hub/jupyterhub_config.py         # then open http://127.0.0.1:8000

Lines marked SCHOOL are what a real class needs instead (see the README, "A class on JupyterHub").
Environment variables set the demo's places: CNN_COURSE_HUB_DIR (state and home folders,
default /tmp/cnn-course-hub), CNN_COURSE_HUB_PORT (default 8000), CNN_COURSE_STUDENTS (default
"ada,ben,cy"), CNN_COURSE_HUB_TOKEN (an API token for the teacher's scripts; none if unset).
"""

import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821 (JupyterHub provides it)

state = Path(os.environ.get("CNN_COURSE_HUB_DIR", "/tmp/cnn-course-hub"))
(state / "home").mkdir(parents=True, exist_ok=True)
port = int(os.environ.get("CNN_COURSE_HUB_PORT", "8000"))

# Where students connect. SCHOOL: a public address behind HTTPS (c.JupyterHub.ssl_cert/ssl_key,
# or a reverse proxy), e.g. c.JupyterHub.bind_url = "https://hub.school.example".
c.JupyterHub.bind_url = f"http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{port + 1}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{port + 2}"
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")

# Who may log in. SCHOOL: the school's sign-on instead of "dummy" (any password works), e.g.
# c.JupyterHub.authenticator_class = "generic-oauth" (pip install oauthenticator) or an LTI
# authenticator for a learning-management system; and the class list or a group.
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = set(os.environ.get("CNN_COURSE_STUDENTS", "ada,ben,cy").split(","))

# Where each student's server runs. "simple" starts a process as the hub's own user with a home
# folder per student: fine to try the course, but students are kept apart only by the hub, not by
# the operating system. SCHOOL: a spawner that isolates them, with the image that repo2docker
# builds from this repository (binder/): "docker" (pip install dockerspawner;
# c.DockerSpawner.image = "<that image>"), KubeSpawner (Zero to JupyterHub), or "systemd" with
# real accounts; and limits (c.Spawner.mem_limit = "2G", c.Spawner.cpu_limit = 1: every lesson
# runs in well under a minute on 2 cores).
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(state / "home" / "{username}")
c.Spawner.cmd = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]
c.Spawner.default_url = "/lab"
if hasattr(os, "geteuid") and os.geteuid() == 0:  # a hub started as root (a container): servers too
    c.Spawner.args = ["--allow-root"]
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 120

# A token for the teacher's scripts (create students, start servers), if one is given.
token = os.environ.get("CNN_COURSE_HUB_TOKEN")
if token:
    c.JupyterHub.services = [{"name": "teacher", "api_token": token}]
    c.JupyterHub.load_roles = [{"name": "teacher", "services": ["teacher"],
                                "scopes": ["admin:users", "admin:servers", "tokens", "access:servers"]}]
