"""`python -m deploy check`: each misconfiguration is one line saying what to fix; nothing is rented.

Also the SSH agent fix in deploy/host/remote.py: a passphrase-protected `ssh.identity_file`
works through ssh-agent instead of being "refused" at every attempt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import out


def _lines(r, level: str) -> list[str]:
    return [ln for ln in r.stdout.splitlines() if ln.startswith(level)]


def test_check_passes_a_good_setup_and_rents_nothing(vast):
    vast.fake.add_offer()
    vast.fake.balance = 0.0  # a funded account can read balance 0: its money is `credit` (authentication.mdx)
    r = vast.run("check")
    assert r.returncode == 0, out(r)
    for what in ("API key", "credit", "SSH key", "image", "offers"):
        assert any(what in ln for ln in _lines(r, "ok")), (what, r.stdout)
    assert any("credit $25.00 (balance $0.00)" in ln for ln in _lines(r, "ok")), r.stdout
    assert not _lines(r, "FIX") and vast.api_key not in out(r)
    assert not vast.fake.create_bodies and not vast.fake.instances
    assert {q["method"] for q in vast.fake.requests} <= {"GET", "POST"}  # reads and searches only
    assert all(q["path"].rstrip("/") in ("/api/v0/users/current", "/api/v0/ssh", "/api/v0/bundles")
               for q in vast.fake.requests)


def test_check_names_each_misconfiguration_in_one_line(vast, tmp_path):
    vast.fake.add_offer(dph_base=2.4)  # above max_price_per_hour 2.0
    vast.fake.credit = 0.0
    vast.set(image="ghcr.io/someone/violence-trainer:1.0")
    vast.project.write_config(ssh={"identity_file": str(tmp_path / "no-such-key")})
    r = vast.run("check")
    assert r.returncode == 2, out(r)
    fixes = _lines(r, "FIX")
    assert any("credit" in ln and "billing" in ln for ln in fixes), fixes
    assert any("SSH key" in ln and "ssh-keygen" in ln for ln in fixes), fixes
    assert any("image" in ln and "vast.image_login" in ln and "private" in ln for ln in fixes), fixes
    assert any("offers" in ln and "max_price_per_hour" in ln for ln in fixes), fixes
    assert "Traceback" not in r.stderr and vast.api_key not in out(r)
    assert not vast.fake.instances


def test_check_reports_a_rejected_key_and_a_malformed_image(vast):
    vast.set(image="Registry.Example/Violence Trainer:1.0")
    r = vast.run("check", key="wrong-key")
    assert r.returncode == 2, out(r)
    fixes = _lines(r, "FIX")
    assert any("API key" in ln and "rejected" in ln for ln in fixes) and "wrong-key" not in out(r)
    assert any("image" in ln and "not a valid image reference" in ln for ln in fixes), fixes


def test_image_login_is_sent_from_the_environment_and_never_shown(vast):
    vast.fake.add_offer()
    vast.set(image="ghcr.io/someone/violence-trainer:1.0",
             image_login={"username": "someone", "password_env": "GHCR_READ_TOKEN"})
    r = vast.run("check")
    assert r.returncode == 2 and any("GHCR_READ_TOKEN" in ln for ln in _lines(r, "FIX")), out(r)
    env = vast.env()
    env["GHCR_READ_TOKEN"] = "ghp_secret-token-value"
    r = vast.project.run("up", "--dry-run", env=env)
    assert r.returncode == 0 and "ghp_secret" not in out(r) and "$GHCR_READ_TOKEN" in r.stdout, out(r)
    r = vast.project.run("up", env=env)
    assert r.returncode == 0, out(r)
    assert vast.fake.create_bodies[-1]["image_login"] == "-u someone -p ghp_secret-token-value ghcr.io"
    assert "ghp_secret" not in out(r) and "ghp_secret" not in (vast.project.cwd / ".deploy" / "state.json").read_text()
    assert vast.project.run("down", "--force", env=env).returncode == 0


@pytest.fixture
def agent(tmp_path):
    if not shutil.which("ssh-agent"):
        pytest.skip("ssh-agent not installed")
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    for _ in range(100):
        if sock.exists():
            break
        import time
        time.sleep(0.05)
    yield str(sock)
    proc.terminate()
    proc.wait(timeout=10)


def _passphrase_key(tmp_path: Path, sshd, sock: str | None) -> Path:
    key = tmp_path / "id_locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-C", "locked", "-f", str(key)],
                   check=True)
    with open(sshd.authorized_keys, "a") as f:
        f.write(key.with_suffix(".pub").read_text())
    if sock:
        askpass = tmp_path / "askpass.sh"
        askpass.write_text("#!/bin/sh\necho 'correct horse'\n")
        askpass.chmod(0o755)
        env = {**os.environ, "SSH_AUTH_SOCK": sock, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force",
               "DISPLAY": ":0"}
        subprocess.run(["ssh-add", str(key)], env=env, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return key


def test_a_passphrase_key_in_the_agent_connects(sshd, tmp_path, agent, monkeypatch):
    from deploy.host.remote import Remote
    from deploy.providers.base import Host

    key = _passphrase_key(tmp_path, sshd, agent)
    monkeypatch.setenv("SSH_AUTH_SOCK", agent)
    host = Host(sshd.host, sshd.port, sshd.user, identity_file=str(key))
    with Remote(host, tmp_path / "known_hosts", connect_timeout=5).connect(retry_for=0) as r:
        assert r.run("echo agent-ok").stdout.strip() == "agent-ok"


def test_check_reports_a_passphrase_key_missing_from_the_agent_and_accepts_it_once_added(vast, tmp_path, agent):
    vast.fake.add_offer()
    key = _passphrase_key(tmp_path, vast.sshd, None)
    vast.project.write_config(ssh={"identity_file": str(key)})
    env = {**vast.env(), "SSH_AUTH_SOCK": agent}
    r = vast.project.run("check", env=env)
    assert r.returncode == 2 and any("ssh-add" in ln for ln in _lines(r, "FIX")), out(r)
    askpass = tmp_path / "askpass.sh"
    askpass.write_text("#!/bin/sh\necho 'correct horse'\n")
    askpass.chmod(0o755)
    subprocess.run(["ssh-add", str(key)], env={**os.environ, "SSH_AUTH_SOCK": agent, "SSH_ASKPASS": str(askpass),
                                               "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"},
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)
    r = vast.project.run("check", env=env)
    assert r.returncode == 0 and any("passphrase" in ln and "agent" in ln for ln in _lines(r, "ok")), out(r)


def test_check_warns_of_a_large_image_pull_and_names_the_image_free_way(vast):
    vast.fake.add_offer()
    vast.set(image_gb=6.8)  # today's GPU image
    r = vast.run("check")
    assert r.returncode == 0, out(r)  # a warning, not a fix: it works, it costs
    warn = [ln for ln in _lines(r, "warn") if "6.8 GB" in ln]
    assert warn and "vastai/tensorflow:2.19.0-cuda-12.4.1" in warn[0] and "overlay" in warn[0] and \
        "image-thin" in warn[0], r.stdout
    vast.set(image_gb=0.3)
    small = vast.run("check")
    assert not [ln for ln in _lines(small, "warn") if "pulls" in ln]
    assert any("pulls 0.3 GB" in ln for ln in _lines(small, "ok")), small.stdout


def test_check_wants_overlay_with_the_vendor_tensorflow_image(vast, hub):
    vast.fake.add_offer()
    vast.set(image="vastai/tensorflow:2.19.0-cuda-12.4.1", image_gb=None)
    r = vast.run("check")  # remote.python is the test interpreter: TensorFlow in /venv/main goes unused
    assert r.returncode == 2
    assert any("/venv/main" in ln and "remote.python: overlay" in ln for ln in _lines(r, "FIX")), r.stdout
    vast.project.write_config(remote={"python": "overlay"})
    r = vast.run("check")
    assert r.returncode == 0, out(r)
    ok = _lines(r, "ok")
    assert any("vastai/tensorflow:2.19.0-cuda-12.4.1 exists" in ln for ln in ok), r.stdout
    # the pull counts the TensorFlow layers only: the vastai/base-image layers under them are cached
    assert any(f"pulls {hub.tf_bytes / 1e9:.1f} GB" in ln and "2 of 4 layers" in ln for ln in ok), r.stdout


# -- the image's registry, asked for real (Debian's docker-registry on 127.0.0.1) -------------------------
@pytest.fixture
def hub(tmp_path, vast):
    """A registry standing in for Docker Hub (DEPLOY_REGISTRY_MAP docker.io=...), holding the vendor's
    public tags: vastai/base-image under vastai/tensorflow, as derivatives/tensorflow builds them."""
    from tests.deploy.registry_server import RegistryServer, push_image

    reg = RegistryServer(tmp_path / "hub").start()
    base = [os.urandom(40_000), os.urandom(50_000)]
    push_image(reg.url, "vastai/base-image", "cuda-12.4.1-cudnn-devel-ubuntu22.04", base)
    tf_layers = [os.urandom(60_000), os.urandom(1_000)]
    for tag in ("2.19.0-cuda-12.4.1", "2.16.1-cuda-12.4.1", "latest"):
        push_image(reg.url, "vastai/tensorflow", tag, base + tf_layers, index=True)
    push_image(reg.url, "you/violence-trainer", "1.0", [os.urandom(300_000)])
    reg.tf_bytes = sum(len(b) for b in tf_layers)
    old = vast.project.env
    vast.project.env = lambda extra=None: {**old(extra), "DEPLOY_REGISTRY_MAP": f"docker.io={reg.host}"}
    yield reg
    reg.stop()


def test_check_names_a_missing_tag_and_the_tags_that_exist(vast, hub):
    vast.fake.add_offer()
    vast.project.write_config(remote={"python": "overlay"})
    vast.set(image="vastai/tensorflow:2.21.0")  # what the README recommended: no such tag on Docker Hub
    r = vast.run("check")
    assert r.returncode == 2, out(r)
    fix = [ln for ln in _lines(r, "FIX") if "image" in ln]
    assert fix and "no tag '2.21.0'" in fix[0], r.stdout
    assert "vastai/tensorflow:2.19.0-cuda-12.4.1, vastai/tensorflow:2.16.1-cuda-12.4.1" in fix[0], fix[0]
    assert not vast.fake.instances


def test_check_reads_an_existing_images_size_from_its_registry(vast, hub):
    vast.fake.add_offer()
    vast.set(image="you/violence-trainer:1.0", image_gb=None)
    r = vast.run("check")
    assert r.returncode == 0, out(r)
    assert any("you/violence-trainer:1.0 exists" in ln and "0.00 GB" in ln for ln in _lines(r, "ok")), r.stdout
    assert any("pulls 0.0 GB" in ln and "registry manifest" in ln for ln in _lines(r, "ok")), r.stdout


def test_up_refuses_a_missing_tag_before_renting(vast, hub):
    vast.fake.add_offer()
    vast.set(image="you/violence-trainer:2.0")
    r = vast.run("up")
    assert r.returncode == 2, out(r)
    last = r.stderr.strip().splitlines()[-1]
    assert "no tag '2.0'" in last and "you/violence-trainer:1.0" in last and "nothing was rented" in last
    assert not vast.fake.create_bodies and not vast.fake.instances
