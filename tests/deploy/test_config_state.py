"""configs/deploy.yaml validation and the .deploy/ state: no network, no host."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from deploy import config
from deploy.errors import UsageError
from deploy.local.state import State
from deploy.providers.base import Host

REPO_CONFIG = "configs/deploy.yaml"


def test_shipped_config_loads_with_every_design_key():
    cfg = config.load(REPO_CONFIG)
    assert cfg["provider"] == "ssh"
    assert {"host", "port", "user", "identity_file"} <= set(cfg["ssh"])
    assert {"workspace", "python"} <= set(cfg["remote"])
    assert {"config", "args"} <= set(cfg["train"])
    assert {"server_url", "image", "disk_gb", "gpu_name", "num_gpus", "min_reliability",
            "max_price_per_hour"} <= set(cfg["vast"])


@pytest.mark.parametrize("raw, words", [
    ({"sssh": {}}, "unknown key 'sssh'"),
    ({"ssh": {"prot": 22}}, "unknown key 'ssh.prot'"),
    ({"ssh": {"port": "22"}}, "'ssh.port' must be int"),
    ({"ssh": {"port": 70000}}, "ssh.port must be 1-65535"),
    ({"train": {"args": "--epochs 2"}}, "'train.args' must be list"),
    ({"dataset": {"url": "ftp://x/y.zip"}}, "must start with http"),
    ({"dataset": {"url": "https://x/y.zip", "kaggle": "a/b"}}, "only one of"),
    ({"dataset": {"kaggle": "not a slug"}}, "OWNER/DATASET"),
    ({"dataset": {"token_env": "Bearer abc.def"}}, "variable NAME"),
])
def test_mistakes_are_one_line_errors(raw, words):
    with pytest.raises(UsageError) as exc:
        config.validate(raw)
    assert words in str(exc.value)
    assert "\n" not in str(exc.value)


def test_cli_reports_bad_config_with_exit_2(tmp_path):
    bad = tmp_path / "deploy.yaml"
    bad.write_text(yaml.safe_dump({"ssh": {"port": "twenty-two"}}))
    r = subprocess.run([sys.executable, "-m", "deploy", "--config", str(bad), "status"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "deploy", "--config", str(tmp_path / "nope.yaml"), "up"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not found" in r.stderr


def test_deploy_never_imports_tensorflow_or_trainer():
    code = ("import sys, deploy.cli, deploy.sync, deploy.start, deploy.logs, deploy.fetch, deploy.status, "
            "deploy.providers.ssh; bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'trainer', "
            "'keras')]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


def test_state_round_trip_and_results_fetched(tmp_path):
    s = State(tmp_path / ".deploy")
    assert s.results_fetched() is True  # nothing ever ran: nothing to lose
    s.set_host("ssh", Host("h", 2222, "u", "/k"), "/ws")
    s.record_start("r1")
    assert s.results_fetched("r1") is False
    s.record_fetch("r1", {"metrics.json": "ab" * 32}, final=False)  # mid-run fetch
    assert s.results_fetched("r1") is False and s.unfetched_runs() == ["r1"]
    s.record_fetch("r1", {"metrics.json": "cd" * 32}, final=True)
    s.data["vast"] = {"instance_id": 7}
    s.save()
    again = State(tmp_path / ".deploy")
    assert again.results_fetched("r1") is True
    assert again.get_host() == Host("h", 2222, "u", "/k")
    assert again.data["vast"] == {"instance_id": 7}
    assert not list((tmp_path / ".deploy").glob("*.tmp"))  # atomic writes leave no temporaries
    json.loads((tmp_path / ".deploy" / "state.json").read_text())


def test_disk_full_is_explained():
    from deploy.host.remote import explain

    msg = explain("rsync: write failed on \"/ws/dataset/x.mp4\": No space left on device (28)\n", 11)
    assert "disk is full" in msg and "larger disk" in msg
    assert explain("", 3) == "no output (exit code 3)"


@pytest.mark.parametrize("content, words", [
    ("[]", "a JSON list"),
    ('{"runs": []}', "'runs' is not an object"),
    ('{"runs": {"r1": "done"}}', "run 'r1' is not an object"),
    ('{"host": "gpu-box"}', "'host' is not"),
    ('{"host": {"host": "h", "port": "22"}}', "'host' is not"),
    ('{"current_run": 5}', "'current_run' is not a string"),
])
def test_a_state_file_of_the_wrong_shape_is_one_line(tmp_path, content, words):
    (tmp_path / ".deploy").mkdir()
    (tmp_path / ".deploy" / "state.json").write_text(content)
    cfg = tmp_path / "deploy.yaml"
    cfg.write_text(yaml.safe_dump({"provider": "ssh", "ssh": {"host": "127.0.0.1"}}))
    for cmd in ("status", "down"):
        r = subprocess.run([sys.executable, "-m", "deploy", "--config", str(cfg), cmd], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        line = r.stderr.strip().splitlines()[-1]
        assert "not a deploy state file" in line and words in line, line
