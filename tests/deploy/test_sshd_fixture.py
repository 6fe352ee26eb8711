"""The OpenSSH fixture itself: a real login works, and its failure modes do what they say."""

from __future__ import annotations

import subprocess


def _ssh(server, known_hosts, *cmd, timeout=15):
    return subprocess.run(
        ["ssh", "-p", str(server.port), "-i", server.identity_file, "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=accept-new",
         "-o", "ConnectTimeout=5", f"{server.user}@{server.host}", *cmd],
        capture_output=True, text=True, timeout=timeout,
    )


def test_login_runs_a_command(sshd, tmp_path):
    r = _ssh(sshd, tmp_path / "kh", "echo", "hello-from-sshd")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hello-from-sshd"


def test_every_variable_set_reaches_the_session(sshd, tmp_path):
    """sshd takes only the first SetEnv line: a second one (say CONTAINER_API_KEY after the
    watch tests' PATH) was silently dropped, and the watchdog found no instance key."""
    sshd.set_env(FIRST_VAR="one")
    sshd.set_env(SECOND_VAR="two words")
    sshd.restart()
    r = _ssh(sshd, tmp_path / "kh", "echo", "$FIRST_VAR/$SECOND_VAR")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "one/two words"


def test_refuse_then_come_back_on_same_port(sshd, tmp_path):
    port = sshd.port
    t = sshd.refuse_for(1.0)
    assert _ssh(sshd, tmp_path / "kh", "true").returncode == 255
    t.join(10)
    assert sshd.port == port and sshd.running
    assert _ssh(sshd, tmp_path / "kh", "true").returncode == 0


def test_regenerated_host_key_is_refused_by_a_pinning_client(sshd, tmp_path):
    kh = tmp_path / "kh"
    assert _ssh(sshd, kh, "true").returncode == 0
    sshd.regenerate_host_key()
    r = _ssh(sshd, kh, "true")
    assert r.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in r.stderr


def test_drop_connections_cuts_an_open_session(sshd, tmp_path):
    # Wait for the remote command's own output, not for "some child of the listener": the
    # start-up probe's short-lived pre-auth child counts as one, and under load it can be the
    # only child seen before it exits (that race made this test fail in CI).
    p = subprocess.Popen(
        ["ssh", "-p", str(sshd.port), "-i", sshd.identity_file, "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={tmp_path / 'kh'}", "-o", "StrictHostKeyChecking=accept-new",
         f"{sshd.user}@{sshd.host}", "echo ready; sleep 60"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        assert sshd.drop_connections() >= 1
        assert p.wait(10) == 255
        assert sshd.running
    finally:
        if p.poll() is None:
            p.kill()
