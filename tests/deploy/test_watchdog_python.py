"""Which interpreter runs the on-instance watchdog: the first Python >= 3.8 on the host (it needs no package)."""

from __future__ import annotations

import os
import subprocess

from deploy.providers.vast.watchdog_setup import WatchdogSetup


class _Setup(WatchdogSetup):
    def __init__(self, config):
        self.config = config


def _chosen(config, path_dirs: list[str]) -> str:
    script = WatchdogSetup._watchdog_python_sh(_Setup(config)) + '; printf %s "$wpy"'
    env = {"PATH": os.pathsep.join(path_dirs + ["/bin"])}
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, check=True).stdout


def _fake_python(folder, version: tuple[int, int]) -> None:
    """A `python3` that answers the version probe as Python <version> would."""
    folder.mkdir()
    exe = folder / "python3"
    exe.write_text(f"#!/bin/sh\n[ \"$1\" = -c ] || exit 9\nexec /usr/bin/python3 -c \"import sys; "
                   f"sys.exit({version} < (3, 8))\"\n")
    exe.chmod(0o755)


def test_a_python_without_any_package_is_enough(tmp_path):
    """Vast's images have no importable vastai (vast-ai/base-image Dockerfile:283-293); the old rule
    looked for one and found nothing there."""
    config = {"remote": {"workspace": str(tmp_path), "python": "overlay"}}
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python3").symlink_to("/usr/bin/python3")  # Debian's: no vastai
    assert subprocess.run([str(bare / "python3"), "-c", "import vastai"], capture_output=True).returncode != 0
    assert _chosen(config, [str(bare)]) == "python3"


def test_a_python_older_than_3_8_is_passed_over(tmp_path):
    config = {"remote": {"workspace": str(tmp_path), "python": "/nowhere/python"}}
    _fake_python(tmp_path / "old", (3, 7))
    assert _chosen(config, [str(tmp_path / "old")]) == "/usr/bin/python3"


def test_no_usable_python_leaves_it_empty(tmp_path):
    config = {"remote": {"workspace": str(tmp_path), "python": "/nowhere/python"}}
    _fake_python(tmp_path / "old", (3, 6))
    script = WatchdogSetup._watchdog_python_sh(_Setup(config)).replace("/usr/bin/python3", "/nowhere/python3")
    out = subprocess.run(["sh", "-c", script + '; printf "[%s]" "$wpy"'], capture_output=True, text=True,
                         env={"PATH": f"{tmp_path / 'old'}:/bin"}, check=True).stdout
    assert out == "[]"
