"""Secrets hygiene: no key in shell history from the README, no credential over plain http://,
and the instance's own API key neither world-readable nor inherited by the training run."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from tests.deploy.conftest import REPO, out


def test_readme_never_shows_a_key_typed_into_an_export():
    readme = (REPO / "README.md").read_text()
    assert not re.search(r"export\s+VAST_API_KEY=", readme.replace("`\n", "` ").replace("\n  ", " "))
    assert "read -rs" in readme and "vastai set api-key" in readme


def test_a_bearer_token_is_never_sent_over_plain_http(project):
    project.write_config(dataset={"path": None, "url": "http://datasets.example.org/rlvs.tar.gz",
                                  "token_env": "MY_TOKEN"})
    assert project.run("up").returncode == 0
    r = project.run("sync", env={"MY_TOKEN": "tok-never-in-clear"})
    assert r.returncode == 2, out(r)
    line = r.stderr.strip().splitlines()[-1]
    assert "plain http://" in line and "https://" in line and "tok-never-in-clear" not in out(r)
    assert not (project.workspace / ".download").exists()  # nothing was started on the host


def test_the_vast_api_key_is_never_sent_over_plain_http(vast):
    vast.set(server_url="http://console.vast.example")
    r = vast.run("offers")
    assert r.returncode == 2 and "plain http://" in r.stderr, out(r)
    assert not vast.fake.requests


def test_onstart_keeps_the_instance_key_out_of_etc_environment(tmp_path):
    from deploy.local.state import State
    from deploy.providers.vast.provider import VastProvider

    shipped = {"image": "r/i:1", "server_url": "https://console.vast.ai"}
    script = VastProvider({"vast": shipped, "remote": {"workspace": str(tmp_path / "ws")}},
                          State(tmp_path / ".deploy"))._onstart()
    env_file = tmp_path / "environment"
    env_file.write_text('PATH="/usr/bin"\nCONTAINER_API_KEY=stale-key\n')
    # the container's start-up, minus what would touch this machine's own sshd
    script = (script.replace("/etc/environment", str(env_file)).replace("ssh-keygen -A", "true")
              .replace("/usr/sbin/sshd", "true").replace("pgrep -x sshd", "true"))
    env = {"PATH": "/usr/bin:/bin", "CONTAINER_API_KEY": "inst-secret", "CONTAINER_ID": "4000001",
           "VAST_CONTAINERLABEL": "C.4000001"}
    subprocess.run(["sh", "-c", script], env=env, check=True, timeout=30)
    text = env_file.read_text()
    assert "CONTAINER_ID=4000001" in text and "VAST_CONTAINERLABEL=C.4000001" in text
    assert "CONTAINER_API_KEY" not in text and "inst-secret" not in text and "stale-key" not in text


def _environ_of_trainer(run_dir: Path) -> bytes | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            if b"trainer\0train" in cmd and str(run_dir).encode() in cmd:
                return (entry / "environ").read_bytes()
        except OSError:
            continue
    return None


def test_the_training_run_does_not_inherit_the_instance_key(project, fake_trainer):
    sshd = project.server
    sshd.set_env(CONTAINER_API_KEY="inst-secret-key")  # as Vast.ai's sessions carry it
    sshd.restart()
    fake_trainer.behave(lines=100, delay=0.1)
    for cmd in ("up", "sync", "start"):
        r = project.run(cmd)
        assert r.returncode == 0, (cmd, out(r))
    run_dir = project.remote_run_dir(project.state()["current_run"])
    environ = None
    deadline = time.monotonic() + 20
    while environ is None and time.monotonic() < deadline:
        environ = _environ_of_trainer(run_dir)
        time.sleep(0.1)
    assert environ is not None, "the trainer never started"
    assert b"CONTAINER_API_KEY" not in environ and b"inst-secret-key" not in environ
    assert b"PYTHONPATH=" in environ  # it is the trainer's environment we read
