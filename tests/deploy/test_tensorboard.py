"""`tensorboard`: TensorBoard runs on the host, bound to 127.0.0.1 there, and answers here
on a local port forwarded through the pinned SSH connection (real sshd, real TensorBoard
from the venv, real event files written by tensorboard's own writer)."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import urllib.request

import pytest

from tests.deploy.sshd import free_port
from tests.deploy.watch_support import deploy_and_start, epoch_trainer, run_alive, sshd, wait_for  # noqa: F401

pytest.importorskip("tensorboard")

URL_LINE = re.compile(r"^TensorBoard: http://127\.0\.0\.1:(\d+)(/[A-Za-z0-9_-]{20,}/)$")  # port, secret prefix


def write_events(run_dir, steps: int = 3) -> None:
    from tensorboard.summary import Writer

    w = Writer(str(run_dir / "tensorboard" / "train"))
    for step in range(steps):
        w.add_scalar("epoch_loss", 0.7 - 0.1 * step, step=step)
    w.close()


def get(url: str, timeout: float = 30) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode(errors="replace")


def listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP listener on `port` is bound to, from /proc/net/tcp{,6}."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(addr)
    return found


def start_tensorboard(project, *args):
    proc = project.popen("tensorboard", *args)
    first = proc.stdout.readline()  # blocks until TensorBoard answers on the host
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    return proc, first, err


@pytest.mark.slow
def test_tensorboard_of_a_running_run_answers_here_survives_a_drop_and_stops_alone(project, epoch_trainer, sshd):
    run = deploy_and_start(project)
    write_events(project.remote_run_dir(run))
    port = free_port()
    proc, first, err = start_tensorboard(project, "--port", port)
    try:
        assert URL_LINE.match(first.rstrip("\n")), (first, "".join(err))
        assert int(URL_LINE.match(first.rstrip("\n")).group(1)) == port
        base = f"http://127.0.0.1:{port}" + URL_LINE.match(first.rstrip("\n")).group(2).rstrip("/")
        status, page = get(base + "/")
        assert status == 200 and "<title>TensorBoard</title>" in page
        status, runs = get(base + "/data/runs")
        assert json.loads(runs) == ["train"]
        status, tags = get(base + "/data/plugin/scalars/tags")
        assert "epoch_loss" in json.loads(tags)["train"]

        # on the host TensorBoard listens on 127.0.0.1 only: nothing is opened to the network
        pid_files = list((project.workspace / ".deploy-tensorboard").glob("*.pid"))
        assert len(pid_files) == 1
        tb_pid = int(pid_files[0].read_text())
        wait_for(lambda: "forwarded through SSH to 127.0.0.1:" in "".join(err), what="the forward line")
        remote_port = int(re.search(r"to 127\.0\.0\.1:(\d+) on", "".join(err)).group(1))
        assert listening_addresses(remote_port) == {"0100007F"}  # 127.0.0.1, and no 0.0.0.0 / ::

        # a dropped link: a new TensorBoard behind the same local URL, the old one is gone
        assert sshd.drop_connections() >= 1
        wait_for(lambda: "reconnected" in "".join(err), timeout=120, what="the reconnect")
        assert json.loads(get(base + "/data/runs")[1]) == ["train"]
        wait_for(lambda: not _alive(tb_pid), timeout=20, what="the old TensorBoard to end")
        assert run_alive(project, run)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "the run keeps going" in "".join(err)
    assert not list((project.workspace / ".deploy-tensorboard").glob("*.pid")), "TensorBoard left on the host"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert run_alive(project, run)
    assert "Traceback" not in "".join(err)


def test_a_busy_local_port_is_one_line_and_touches_nothing(project, epoch_trainer):
    assert project.run("up").returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        r = project.run("tensorboard", "--all", "--port", busy.getsockname()[1])
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not free" in lines[0] and "--port" in lines[0], r.stderr
    assert not (project.workspace / ".deploy-tensorboard").exists()


def test_no_run_and_no_tensorboard_on_the_host_are_one_line_each(project, epoch_trainer, tmp_path):
    assert project.run("up").returncode == 0
    r = project.run("tensorboard")
    assert r.returncode == 2 and "no run started yet" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # an interpreter without the tensorboard package
    bare = tmp_path / "bare python"
    bare.write_text("#!/bin/sh\nexec /usr/bin/env python3 -S -I \"$@\"\n")  # -S: no site-packages
    bare.chmod(0o755)
    project.write_config(remote={"python": str(bare)})
    (project.workspace / "runs").mkdir(parents=True, exist_ok=True)
    r = project.run("tensorboard", "--all")
    assert r.returncode == 2 and r.stdout == ""
    assert "no TensorBoard on 127.0.0.1" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_host_that_refuses_forwarding_is_one_line_before_tensorboard_starts(project, epoch_trainer, sshd):
    sshd.forwarding = False
    sshd.apply()
    assert project.run("up").returncode == 0
    (project.workspace / "runs").mkdir(parents=True, exist_ok=True)
    r = project.run("tensorboard", "--all")
    assert r.returncode == 2 and r.stdout == ""
    assert "refuses SSH port forwarding" in r.stderr and "AllowTcpForwarding" in r.stderr, r.stderr
    assert not list((project.workspace / ".deploy-tensorboard").glob("*.pid"))


def raw_get(port: int, target: str, host: str, extra: str = "") -> bytes:
    """One HTTP/1.1 request as a browser (or a DNS-rebinding page) would send it; the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n{extra}".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.slow
def test_the_tunnel_serves_only_its_secret_prefix_to_local_host_names(project, epoch_trainer, sshd):
    """Another local user or a web page (DNS rebinding: evil.example resolving to 127.0.0.1) can reach
    the local port, but not TensorBoard: the URL carries a random path prefix (TensorBoard's
    --path_prefix), and only Host headers of 127.0.0.1/localhost are served."""
    run = deploy_and_start(project)
    write_events(project.remote_run_dir(run))
    proc, first, err = start_tensorboard(project)
    try:
        m = URL_LINE.match(first.rstrip("\n"))
        assert m, (first, "".join(err))
        port, prefix = int(m.group(1)), m.group(2)
        answer = raw_get(port, prefix + "data/environment", f"127.0.0.1:{port}")
        assert status_of(answer) == 200 and b"data_location" in answer, answer[:400]
        assert status_of(raw_get(port, prefix + "data/runs", f"localhost:{port}")) == 200
        # without the prefix, or with a guessed one: nothing reaches TensorBoard
        for target in ("/data/environment", "/", "/" + "A" * 32 + "/data/environment",
                       prefix + "../data/environment", prefix.rstrip("/") + "x/data/environment"):
            answer = raw_get(port, target, f"127.0.0.1:{port}")
            assert status_of(answer) == 404 and b"data_location" not in answer, (target, answer[:200])
        # a page served by evil.example that rebound its name to 127.0.0.1 (it even knows the prefix)
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", ""):
            answer = raw_get(port, prefix + "data/environment", host)
            assert status_of(answer) in (400, 403) and b"data_location" not in answer, (host, answer[:200])
        # a second request smuggled behind a good one on the same connection is never served
        answer = raw_get(port, prefix + "data/runs", f"127.0.0.1:{port}",
                         extra=f"GET /data/environment HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n")
        assert answer.count(b"HTTP/1.") == 1 and b"data_location" not in answer, answer[:400]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"tensorboard" in fh.read()
    except OSError:
        return False
