"""Every user error caught on the laptop, in one line, before anything is rented or billed (issue 22,
items 1 and 10): `check` for both providers (a real read-only visit to the fixture's sshd for provider
ssh), `up` before renting or connecting, `sync` and `start` refusing what `check` refuses, and the
deploy CLI's papercuts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import REPO, out, tiny_dataset
from tests.trainer.tiny_cache import make_cache


def fixes(r) -> list[str]:
    return [ln for ln in r.stdout.splitlines() if ln.startswith("FIX")]


def conflicted(dataset: Path) -> tuple[Path, Path]:
    """The same clip under both classes (as merged datasets such as RWF-2000 + RLVS contain)."""
    a = dataset / "violent" / "v0.mp4"
    b = dataset / "nonviolent" / "same_clip.mp4"
    shutil.copy(a, b)
    return a, b


# --- check --------------------------------------------------------------------------------

def test_check_with_provider_ssh_visits_the_host_read_only(project):
    r = project.run("check")
    assert r.returncode == 0, out(r)
    ok = [ln for ln in r.stdout.splitlines() if ln.startswith("ok")]
    for what in ("train ", "python ", "dataset ", "SSH ", "workspace ", "rsync ", "tensorflow ", "disk "):
        assert any(ln[6:].startswith(what) for ln in ok), (what, r.stdout)
    assert "2 videos (1 violent, 1 non-violent" in r.stdout
    assert "first contact" in r.stdout and "Python 3." in r.stdout and "TensorFlow 2." in r.stdout
    assert any(ln.startswith("warn  GPUs") for ln in r.stdout.splitlines())  # no nvidia-smi here
    # read-only: nothing made on the host, no key pinned, no state written
    assert not project.workspace.exists()
    assert not (project.cwd / ".deploy").exists()


def test_check_names_a_trainer_flag_typo_before_anything_is_rented_provider_ssh(project):
    project.write_config(train={"args": ["--epocs", "2"]})
    r = project.run("check")
    assert r.returncode == 2, out(r)
    line = next(ln for ln in fixes(r) if "train.args" in ln)
    assert "--epocs" in line and "--epochs" in line  # the trainer's own parser, with its suggestion
    assert "Traceback" not in out(r) and not project.workspace.exists()


def test_check_names_a_trainer_flag_typo_before_anything_is_rented_provider_vast(vast):
    vast.fake.add_offer()
    vast.project.write_config(train={"args": ["--epocs", "2"]})
    r = vast.run("check")
    assert r.returncode == 2, out(r)
    assert any("train.args" in ln and "--epocs" in ln for ln in fixes(r)), r.stdout
    assert not vast.fake.create_bodies and not vast.fake.instances


def test_check_lists_each_local_mistake_in_one_line(project, tmp_path):
    conflicted(project.cwd / "dataset")
    bad_yaml = tmp_path / "train.yaml"
    bad_yaml.write_text("train:\n  epochs: [3\n")
    project.write_config(train={"config": str(bad_yaml), "args": []}, remote={"python": "python3 -u"})
    r = project.run("check")
    assert r.returncode == 2, out(r)
    f = fixes(r)
    assert any("train.config" in ln and "line 3, column 1" in ln for ln in f), f
    assert any("python" in ln and "'python3 -u'" in ln and "not one program" in ln for ln in f), f
    assert any("label conflict" in ln and "violent/v0.mp4 (violent)" in ln and
               "nonviolent/same_clip.mp4 (nonviolent)" in ln for ln in f), f
    assert "Traceback" not in out(r)


def test_check_compares_a_local_feature_cache_with_the_train_config(project):
    cache = make_cache(project.cwd / "cache", {"train": 4, "val": 4})  # thumbnail at 16 px
    cfg = project.cwd / "train.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"backbone": "thumbnail", "weights": "none", "image_size": 24}}))
    project.write_config(dataset={"path": None, "cache": str(cache)}, train={"config": str(cfg), "args": []})
    r = project.run("check")
    assert r.returncode == 2, out(r)
    assert any("dataset.cache" in ln and "data.image_size: config 24, cache 16" in ln for ln in fixes(r)), r.stdout


def test_check_reports_an_unreachable_host_and_a_refused_key(project, sshd, tmp_path):
    other_key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    project.write_config(ssh={"identity_file": str(other_key)})
    r = project.run("check")
    assert r.returncode == 2 and any("SSH" in ln and "refused SSH key" in ln for ln in fixes(r)), out(r)
    sshd.stop()
    project.write_config(ssh=sshd.deploy_ssh_config())
    r = project.run("check")
    assert r.returncode == 2 and any("SSH" in ln and str(sshd.port) in ln for ln in fixes(r)), out(r)


# --- up, sync, start: refuse what check refuses ------------------------------------------------

def test_up_dry_run_flags_the_shipped_placeholder_host(project):
    shipped = yaml.safe_load((REPO / "configs" / "deploy.yaml").read_text())
    assert shipped["ssh"]["host"] == "gpu-box"
    project.write_config(ssh={"host": "gpu-box"})
    r = project.run("up", "--dry-run")
    assert r.returncode == 2, out(r)
    assert "gpu-box" in r.stderr and "example" in r.stderr and "would use" not in r.stdout


def test_up_refuses_before_connecting(project, sshd):
    project.write_config(train={"args": ["--batch-size", "many"]})
    sshd.stop()  # nothing to connect to: a refusal must come from the laptop, at once
    r = project.run("up", timeout=60)
    assert r.returncode == 2 and "--batch-size" in r.stderr and "nothing was rented" in r.stderr, out(r)
    assert "waiting for" not in r.stderr and not (project.cwd / ".deploy" / "state.json").exists()


def test_sync_refuses_a_label_conflict_before_sending_anything(project):
    assert project.run("up").returncode == 0
    a, b = conflicted(project.cwd / "dataset")
    r = project.run("sync")
    assert r.returncode == 2, out(r)
    line = r.stderr.strip().splitlines()[-1]
    assert "label conflict" in line and "violent/v0.mp4" in line and "nonviolent/same_clip.mp4" in line
    assert "nothing was sent" in line
    assert not (project.workspace / "app").exists() and not (project.workspace / "dataset").exists()
    b.unlink()
    assert project.run("sync").returncode == 0


def test_start_refuses_what_check_refuses(project, fake_trainer):
    assert project.run("up").returncode == 0 and project.run("sync").returncode == 0
    project.write_config(train={"args": ["--epocs", "2"]})
    r = project.run("start")
    assert r.returncode == 2 and "--epocs" in r.stderr and "nothing was rented, sent or started" in r.stderr, out(r)
    runs = project.workspace / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    assert "current_run" not in project.state()


# --- papercuts (item 10) --------------------------------------------------------------------

def test_config_is_accepted_after_the_verb(project):
    r = subprocess.run([*project.argv("check")[:3], "check", "--config", str(project.config_path)], cwd=project.cwd,
                       env=project.env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, out(r)


def test_deploy_config_yaml_errors_say_line_and_column(project):
    project.config_path.write_text("provider: ssh\nssh: {host: a, port: 22\ndataset: {path: x}\n")
    r = project.run("status")
    assert r.returncode == 2 and "line 3, column 8" in r.stderr and "not valid YAML" in r.stderr, out(r)


def test_a_changed_ssh_host_is_said_not_silently_ignored(project, sshd):
    assert project.run("up").returncode == 0
    project.write_config(ssh={"host": "localhost"})  # the same machine under another name: a new host to `up`
    r = project.run("status")
    assert r.returncode == 0, out(r)
    assert f"config now says {sshd.user}@localhost:{sshd.port}" in r.stderr
    assert f"uses {sshd.user}@127.0.0.1:{sshd.port}" in r.stderr
    r = subprocess.run(project.argv("ssh"), cwd=project.cwd, env=project.env(), capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert f"uses {sshd.user}@127.0.0.1:{sshd.port}" in r.stderr, out(r)
    r = project.run("sync")
    assert r.returncode == 2 and "ssh.host changed" in r.stderr and "python -m deploy up" in r.stderr, out(r)
    assert project.run("up").returncode == 0
    r = project.run("status")
    assert r.returncode == 0 and "config now says" not in r.stderr


def test_down_with_nothing_rented_does_not_demand_the_api_key(vast):
    r = vast.run("down", key=None)
    assert r.returncode == 0, out(r)
    assert "nothing is recorded as rented" in r.stdout and not vast.fake.requests
    # with a key, Vast.ai is asked for a crash's unrecorded instance as before
    r = vast.run("down")
    assert r.returncode == 0 and "nothing is rented for this project" in r.stdout, out(r)


@pytest.mark.parametrize("py,ok", [("python3", True), ("/opt/my envs/bin/python", True), ("auto-venv", True),
                                   ("python3 -u", False), ("~/venv/bin/python", False), ("venv/bin/python", False),
                                   ("C:\\Python311\\python.exe", False), ("", False)])
def test_remote_python_must_be_one_program_the_run_script_can_start(py, ok):
    from deploy.preflight import python_problem

    assert (python_problem(py) is None) == ok


def test_tiny_dataset_is_what_the_preflight_accepts(tmp_path):
    from deploy.local import trainer_cli

    out = trainer_cli.scan(str(tiny_dataset(tmp_path / "ds")), None)
    assert out.ok and out.report["videos"] == 2 and out.report["problems"] == []
