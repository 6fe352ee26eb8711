"""Reaching the host: first-contact pinning, a changed key refused, retry while booting, clear failures."""

from __future__ import annotations

import subprocess
import time

import pytest

from deploy.errors import UsageError
from deploy.host.remote import Remote
from deploy.providers.base import Host
from deploy.sync import rsync
from tests.deploy.sshd import free_port


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_up_pins_the_host_key_and_probes_the_host(project):
    r = project.run("up")
    assert r.returncode == 0, r.stderr
    known = (project.cwd / ".deploy" / "known_hosts").read_text()
    assert f"[127.0.0.1]:{project.server.port}" in known
    assert project.server.host_public_key().split()[1] in known
    state = project.state()
    assert state["host"]["port"] == project.server.port
    assert state["workspace"] == str(project.workspace)  # created, resolved, awkward characters intact
    assert project.workspace.is_dir()
    assert "ready: Python 3." in r.stdout


def test_changed_host_key_is_refused_with_how_to_forget_it(project):
    assert project.run("up").returncode == 0
    project.server.regenerate_host_key()
    for cmd in ("status", "up"):
        r = project.run(cmd)
        assert r.returncode == 2, r.stdout + r.stderr
        line = last_line(r.stderr)
        assert "CHANGED" in line and "ssh-keygen -R" in line and "known_hosts" in line
    # rsync's ssh (OpenSSH, not paramiko) checks the same pinned file and refuses too
    remote = Remote(Host(**project.state()["host"]), project.cwd / ".deploy" / "known_hosts")
    with pytest.raises(UsageError, match="does not match the one pinned"):
        rsync(remote, [str(project.config_path), f"{remote.target}:{project.workspace}/"], "probe")
    # following the advice works
    subprocess.run(["ssh-keygen", "-R", f"[127.0.0.1]:{project.server.port}", "-f",
                    str(project.cwd / ".deploy" / "known_hosts")], check=True, capture_output=True)
    assert project.run("up").returncode == 0


def test_up_retries_while_the_host_boots(project):
    # 6 s: `up` first spends a second or two on the local preflight (deploy/preflight.py); its
    # attempts then come at +0, +1, +3 and +7 s, so the host is still "booting" at the first
    # one and back before the fourth (provider ssh gives up after 4 refused attempts)
    project.server.refuse_for(6.0)
    t0 = time.monotonic()
    r = project.run("up")
    assert r.returncode == 0, r.stderr
    assert "waiting for" in r.stderr and "retrying" in r.stderr
    assert time.monotonic() - t0 >= 5.5


def test_unreachable_host_is_one_line_after_retrying(project):
    project.write_config(ssh={"port": free_port(), "retry_for": 2, "connect_timeout": 2})
    r = project.run("up")
    assert r.returncode == 2
    assert "cannot reach" in last_line(r.stderr) and "Traceback" not in r.stderr


def test_refused_key_is_one_line_without_retrying(project, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    project.write_config(ssh={"identity_file": str(other)})
    t0 = time.monotonic()
    r = project.run("up")
    assert r.returncode == 2
    assert "refused SSH key" in last_line(r.stderr) and "authorized_keys" in last_line(r.stderr)
    assert time.monotonic() - t0 < 15  # a wrong key does not wait out the boot retries


def test_commands_before_up_say_so(project):
    for cmd in ("sync", "start", "logs", "status", "fetch"):
        r = project.run(cmd)
        assert r.returncode == 2 and "deploy up" in last_line(r.stderr), (cmd, r.stderr)


def test_large_stdin_with_chatty_output_does_not_deadlock(project):
    """Input is sent while both output streams are drained: 1 MB in, 1 MB back on each stream."""
    assert project.run("up").returncode == 0
    remote = Remote(Host(**project.state()["host"]), project.cwd / ".deploy" / "known_hosts").connect()
    try:
        data = "".join(f"{i:07d}\n" for i in range(131072))  # 1 MiB
        t0 = time.monotonic()
        r = remote.run("tee /dev/stderr | wc -c", stdin=data, timeout=60)
        assert r.exited == 0
        assert r.stdout.strip() == str(len(data))
        assert r.stderr == data
        assert time.monotonic() - t0 < 30
    finally:
        remote.close()


CTRL_C_SCRIPT = """
import json, sys
from deploy.host.remote import Remote
from deploy.providers.base import Host
host, known, marker, stdin = json.loads(sys.argv[1])
remote = Remote(Host(**host), known).connect()
try:
    remote.run(f"touch {marker}; sleep 30", stdin="x" if stdin else None)
except KeyboardInterrupt:
    print("interrupted")
    sys.exit(130)
print("the command ran to its end")
"""


@pytest.mark.parametrize("with_stdin", [False, True], ids=["fabric-run", "raw-channel"])
def test_ctrl_c_during_a_remote_command_reaches_us_at_once(project, tmp_path, with_stdin):
    """invoke's runner answers a KeyboardInterrupt by writing ^C to the command's stdin and waiting
    for it to end: a Ctrl-C during any remote command was swallowed (watch never stopped)."""
    import json
    import signal
    import sys

    assert project.run("up").returncode == 0
    marker = tmp_path / "started"
    args = json.dumps([project.state()["host"], str(project.cwd / ".deploy" / "known_hosts"), str(marker),
                       with_stdin])
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_SCRIPT, args], stdout=subprocess.PIPE, text=True,
                            env=project.env(), cwd=project.cwd)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the remote command never started"
        time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=25)
    assert (proc.returncode, out.strip()) == (130, "interrupted")
    assert time.monotonic() - t0 < 5


# -- mistakes fail at once, as one line; odd local paths work ------------------------------
def test_a_host_name_that_does_not_resolve_fails_at_once(project):
    project.write_config(ssh={"host": "no-such-host.invalid", "retry_for": 120})
    t0 = time.monotonic()
    r = project.run("up")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot resolve the host name 'no-such-host.invalid'" in last_line(r.stderr)
    assert time.monotonic() - t0 < 20  # not the 120 s of boot retries


def test_a_refused_port_on_provider_ssh_fails_within_a_few_attempts_naming_it(project):
    port = free_port()
    project.write_config(ssh={"port": port, "retry_for": 300, "connect_timeout": 2})
    t0 = time.monotonic()
    r = project.run("up")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"127.0.0.1:{port}" in last_line(r.stderr) and "refused" in last_line(r.stderr)
    assert time.monotonic() - t0 < 30


def test_a_host_that_garbles_its_banner_is_one_line_without_paramiko_tracebacks(project):
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = threading.Event()

    def serve():  # a booting host: the port accepts, but no SSH banner comes (garbage, then close)
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.sendall(b"\x00\xff not ssh\r\n")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        project.write_config(ssh={"port": srv.getsockname()[1], "retry_for": 3, "connect_timeout": 2})
        r = project.run("up")
    finally:
        stop.set()
        t.join(5)
        srv.close()
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "Exception (client)" not in r.stderr, r.stderr
    assert "cannot reach" in last_line(r.stderr)


def test_a_space_in_the_local_project_path_does_not_break_rsync(sshd, tmp_path):
    from tests.deploy.conftest import DeployProject

    root = tmp_path / "my projects" / "violence trainer"
    root.mkdir(parents=True)
    project = DeployProject(root, sshd, tmp_path / "ws")  # with a tiny dataset of real videos in its dataset/
    assert project.run("up").returncode == 0
    r = project.run("sync")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "ws" / "dataset" / "violent" / "v0.mp4").is_file()


def test_a_missing_pin_is_not_reported_as_a_changed_key(project, tmp_path):
    """Only a key that really changed may suggest `ssh-keygen -R`; a file without the pin says so."""
    assert project.run("up").returncode == 0
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    remote = Remote(Host(**project.state()["host"]), empty)
    with pytest.raises(UsageError) as exc:
        rsync(remote, [str(project.config_path), f"{remote.target}:{project.workspace}/"], "probe")
    assert "not known" in str(exc.value) and "ssh-keygen" not in str(exc.value)
    assert "does not match" not in str(exc.value)
