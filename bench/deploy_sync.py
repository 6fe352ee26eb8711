"""Bytes on the wire for `python -m deploy sync`: a first sync versus a second, unchanged one.

Starts a real OpenSSH server on 127.0.0.1 (the deploy tests' fixture, needs
openssh-server and rsync), writes a synthetic video dataset with `trainer synth`,
then runs `deploy up`, `deploy sync` twice and `deploy sync` after adding one video,
reading the bytes rsync reports as sent. The first sync is the baseline: the ratio
says how much of a full upload an unchanged re-sync costs.

    .venv/bin/python bench/deploy_sync.py [--videos 200] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.deploy.sshd import SshServer, sshd_available  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    if not sshd_available() or not shutil.which("rsync"):
        print("needs openssh-server and rsync (apt-get install openssh-server rsync)", file=sys.stderr)
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-deploy-sync-"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPATH", None)
    project = work / "project"
    project.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "trainer", "synth", "--out", str(project / "dataset"),
                    "--videos", str(args.videos), "--seed", "0"], check=True, env=env, capture_output=True)
    server = SshServer(work / "sshd").start()
    try:
        import yaml

        cfg = project / "deploy.yaml"
        cfg.write_text(yaml.safe_dump({
            "provider": "ssh", "ssh": server.deploy_ssh_config(),
            "remote": {"workspace": str(work / "remote workspace"), "python": sys.executable},
            "dataset": {"path": str(project / "dataset")},
            "train": {"config": str(REPO / "configs" / "demo.yaml")},
        }))

        def deploy(*a) -> dict:
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "deploy", "--config", str(cfg), *a], cwd=project, env=env,
                               capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"deploy {' '.join(a)} failed: {r.stderr.strip()}")
            last = json.loads((project / ".deploy" / "state.json").read_text()).get("last_sync", {})
            return {**last, "seconds": time.perf_counter() - t0}

        deploy("up")
        first = deploy("sync")
        second = deploy("sync")
        video = next(p for p in sorted((project / "dataset").rglob("*")) if p.is_file())
        shutil.copy(video, video.with_name("added_after_first_sync" + video.suffix))
        third = deploy("sync")
    finally:
        server.stop()
    size = first["total_size"]
    print(f"dataset: {args.videos} synthetic videos; code + dataset = {size:,} bytes in the synced files")
    print(f"{'sync':<34}{'bytes sent':>14}{'of a full upload':>18}{'seconds':>9}")
    for label, r in (("first (baseline, full upload)", first), ("second, nothing changed", second),
                     ("third, one video added", third)):
        print(f"{label:<34}{r['bytes_sent']:>14,}{r['bytes_sent'] / first['bytes_sent']:>17.2%} "
              f"{r['seconds']:>8.1f}")
    print(f"ratio second/first: {second['bytes_sent'] / first['bytes_sent']:.4f}  "
          f"(dataset part alone: {second['parts'].get('dataset', 0):,} bytes)")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
