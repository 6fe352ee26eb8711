"""Which interpreter runs the on-instance watchdog: the first on the host that has the vastai SDK."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from deploy.providers.vast_watchdog_setup import WatchdogSetup


class _Setup(WatchdogSetup):
    def __init__(self, config):
        self.config = config


def _chosen(config, path_dirs: list[str]) -> str:
    script = WatchdogSetup._watchdog_python_sh(_Setup(config)) + '; printf %s "$wpy"'
    env = {"PATH": os.pathsep.join(path_dirs + ["/usr/bin", "/bin"])}
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, check=True).stdout


def test_the_overlay_venv_is_preferred_once_sync_has_built_it(tmp_path):
    ws = tmp_path / "work space"
    config = {"remote": {"workspace": str(ws), "python": "overlay", "base_python": "/usr/bin/python3"}}
    no_sdk = tmp_path / "bin"
    no_sdk.mkdir()
    (no_sdk / "python3").symlink_to("/usr/bin/python3")  # Debian's: no vastai
    assert _chosen(config, [str(no_sdk)]) == "python3"  # nothing has the SDK yet: the watchdog says so itself
    # what sync's overlay venv holds: the vastai SDK (here: this test run's, through a .pth line)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(ws / "venv")], check=True)
    site = subprocess.run([str(ws / "venv" / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    sdk_dir = os.path.dirname(os.path.dirname(importlib.util.find_spec("vastai").origin))
    with open(os.path.join(site, "sdk.pth"), "w") as fh:
        fh.write(sdk_dir + "\n")
    assert _chosen(config, [str(no_sdk)]) == str(ws / "venv" / "bin" / "python")


def test_the_configured_interpreter_is_used_when_it_has_the_sdk(tmp_path):
    config = {"remote": {"workspace": str(tmp_path), "python": sys.executable}}
    assert _chosen(config, []) == sys.executable
