"""fetch against a host that misbehaves on purpose (real sshd, real rsync, a doctored `sha256sum`
on the host's PATH): nothing is written outside runs/<run>/, refused names are named, sizes are
capped and the free space is checked before anything is copied."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess

import pytest

from tests.deploy.watch_support import sshd  # noqa: F401  (sshd with a folder of ours first on the host's PATH)

PAYLOAD = b"#!/bin/sh\necho pwned\n"


def files_under(root) -> set:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def ended_run(project, name="r1"):
    run_dir = project.remote_run_dir(name)
    run_dir.mkdir(parents=True)
    (run_dir / "exit_status").write_text("0\n")
    (run_dir / "train.log").write_text("epoch 1\n")
    (run_dir / "best_model.keras").write_bytes(os.urandom(50_000))
    (run_dir / "plots").mkdir()
    (run_dir / "plots" / "loss.png").write_bytes(b"\x89PNG real plot")
    return run_dir


def doctor_sha256sum(sshd, extra_lines: list[str]) -> None:
    """The host's sha256sum prints the real hashes, then whatever the host wants us to believe."""
    script = sshd.bin_dir / "sha256sum"
    script.write_text("#!/bin/sh\n/usr/bin/sha256sum \"$@\"\n"
                      + "".join(f"printf '%s\\n' {shlex.quote(line)}\n" for line in extra_lines))
    script.chmod(0o755)


def test_the_symlink_and_dotdot_attack_writes_nothing_outside_the_run_and_is_named(project, sshd, tmp_path):
    """The attack of issue 23: `plots/L/` + `../`x40 + a path, where plots/L is a relative symlink into
    a 40-deep folder chain, so that the staged copy "verifies" and the install climbs out of runs/."""
    assert project.run("up").returncode == 0
    run_dir = ended_run(project)
    target = tmp_path / "outside" / "X" / "evil.sh"  # where the payload would land (the issue: /tmp/X/evil.sh)
    rel_target = str(target).lstrip("/")
    chain = run_dir / "plots" / "/".join(["c"] * 40)
    chain.mkdir(parents=True)
    os.symlink("/".join(["c"] * 40), run_dir / "plots" / "L")
    (run_dir / "plots" / rel_target).parent.mkdir(parents=True)
    (run_dir / "plots" / rel_target).write_bytes(PAYLOAD)
    # a symlink to a laptop file whose content the host can guess, listed as a TensorBoard event file
    (run_dir / "tensorboard").mkdir()
    bait = tmp_path / "laptop-secret.txt"
    bait.write_text("the laptop's own file\n")
    os.symlink(str(bait), run_dir / "tensorboard" / "events.out.tfevents.1.host")
    evil = "./plots/L/" + "../" * 40 + rel_target
    bait_digest = hashlib.sha256(bait.read_bytes()).hexdigest()
    doctor_sha256sum(sshd, [f"{hashlib.sha256(PAYLOAD).hexdigest()}  {evil}",
                            f"{bait_digest}  ./tensorboard/events.out.tfevents.1.host",
                            f"{'0' * 64}  /etc/passwd"])
    before = files_under(project.cwd)

    r = project.run("fetch", "--run", "r1")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert not target.exists() and not (tmp_path / "outside").exists(), "the payload escaped runs/"
    assert "Traceback" not in out
    local = project.cwd / "runs" / "r1"
    new = files_under(project.cwd) - before
    outside = {p for p in new if local not in p.parents and project.cwd / ".deploy" not in p.parents}
    assert not outside, f"written outside runs/r1/: {outside}"
    assert not [p for p in local.rglob("*") if p.is_symlink()], "a symlink was installed"
    assert (local / "plots" / "loss.png").read_bytes() == b"\x89PNG real plot"  # the real results still came
    assert (local / "best_model.keras").read_bytes() == (run_dir / "best_model.keras").read_bytes()
    # fetch names what it refused, and why
    assert "refused" in out and "plots/L/../../" in out and "'..'" in out, out
    assert "/etc/passwd" in out and "tensorboard/events.out.tfevents.1.host" in out
    files = project.state()["runs"]["r1"]["fetches"][-1]["files"]
    assert set(files) == {"best_model.keras", "plots/loss.png", "train.log"}


def test_a_host_cannot_make_fetch_fill_the_disk(project, sshd):
    """A sparse file costs the host nothing and us its full size: --max-size refuses it by name, and
    the default cap is a sane one."""
    assert project.run("up").returncode == 0
    run_dir = ended_run(project)
    with open(run_dir / "metrics.json", "wb") as fh:
        fh.truncate(512 * 1024 * 1024)  # 512 MB of nothing on the host
    r = project.run("fetch", "--run", "r1", "--max-size", "1M")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert not (project.cwd / "runs" / "r1" / "metrics.json").exists()
    assert "metrics.json" in out and "--max-size" in out and "512.0 MB" in out, out
    assert (project.cwd / "runs" / "r1" / "best_model.keras").is_file()
    assert project.state()["runs"]["r1"]["final_fetch"] is False  # a result left behind: `down` must still wait
    staged = sum(p.stat().st_blocks * 512 for p in (project.cwd / "runs").rglob("*") if p.is_file())
    assert staged < 5_000_000, f"{staged} bytes on the laptop's disk"
    bad = project.run("fetch", "--run", "r1", "--max-size", "lots")
    assert bad.returncode == 2 and "--max-size" in bad.stderr and "Traceback" not in bad.stderr


def test_fetch_checks_the_free_space_before_copying(project, sshd):
    runs = project.cwd / "runs"
    runs.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(runs)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        assert project.run("up").returncode == 0
        run_dir = ended_run(project)
        with open(run_dir / "metrics.json", "wb") as fh:
            fh.truncate(64 * 1024 * 1024)
        r = project.run("fetch", "--run", "r1")
        assert r.returncode == 2, r.stdout + r.stderr
        line = r.stderr.strip().splitlines()[-1]
        assert "64.0 MB" in line and "free" in line and "Traceback" not in r.stderr, line
        assert not list(runs.rglob("*.keras")), "copied before checking the room"
    finally:
        subprocess.run(["umount", str(runs)], capture_output=True)


def test_links_left_in_the_staging_or_run_folder_are_never_written_through(project, sshd, tmp_path):
    """A staging folder or a runs/<run>/ with a symlink in it (left by an older fetch that copied the
    host's links): the staged one is removed unread, the installed one blocks the install, by name."""
    assert project.run("up").returncode == 0
    ended_run(project)
    outside = tmp_path / "outside"
    outside.mkdir()
    staging = project.cwd / "runs" / ".fetching" / "r1"
    staging.mkdir(parents=True)
    os.symlink(str(outside / "model"), staging / "best_model.keras")
    local = project.cwd / "runs" / "r1"
    local.mkdir()
    os.symlink(str(outside), local / "plots")
    r = project.run("fetch", "--run", "r1")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert list(outside.iterdir()) == [], "written through a symlink"
    assert (local / "best_model.keras").is_file() and not (local / "best_model.keras").is_symlink()
    assert "not installed: runs/r1/plots/loss.png" in out and "plots is not a folder" in out, out
    assert project.state()["runs"]["r1"]["final_fetch"] is False


def test_the_local_rsync_cannot_write_a_file_over_the_cap_whatever_the_sender_said(tmp_path):
    """fetch runs rsync under RLIMIT_FSIZE = --max-size: a sender that announced a small file and
    sends more (a modified rsync on the host) gets a write error, not our disk."""
    from deploy.sync import _file_size_cap

    src, dst = tmp_path / "big", tmp_path / "copy"
    src.write_bytes(os.urandom(200_000))
    r = subprocess.run(["rsync", str(src), str(dst)], capture_output=True, preexec_fn=_file_size_cap(50_000))
    assert r.returncode != 0, r.stderr
    left = [p for p in tmp_path.iterdir() if p.name != "big"]
    assert all(p.stat().st_size <= 50_000 for p in left), [(p.name, p.stat().st_size) for p in left]
    assert not dst.exists()


def test_checkpoints_come_only_when_asked(project, sshd):
    assert project.run("up").returncode == 0
    run_dir = ended_run(project)
    (run_dir / "checkpoint_epoch_001.keras").write_bytes(os.urandom(1000))
    (run_dir / "resume_state.json").write_text('{"epoch": 1}')
    (run_dir / "tensorboard" / "train").mkdir(parents=True)
    (run_dir / "tensorboard" / "train" / "events.out.tfevents.1700000000.host.1.v2").write_bytes(b"ev")
    local = project.cwd / "runs" / "r1"
    r = project.run("fetch", "--run", "r1")
    assert r.returncode == 0 and "refused" not in r.stdout, r.stdout + r.stderr
    assert not (local / "checkpoint_epoch_001.keras").exists() and not (local / "resume_state.json").exists()
    assert (local / "tensorboard" / "train" / "events.out.tfevents.1700000000.host.1.v2").read_bytes() == b"ev"
    r = project.run("fetch", "--run", "r1", "--checkpoints")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (local / "checkpoint_epoch_001.keras").read_bytes() == (run_dir / "checkpoint_epoch_001.keras").read_bytes()
    assert (local / "resume_state.json").read_text() == '{"epoch": 1}'
