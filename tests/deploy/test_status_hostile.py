"""`status` and `watch` against a host whose answers are odd or hostile (real sshd, a run started
with `up`/`sync`/`start`, stand-in `nvidia-smi` and `df` on the host's PATH, a doctored watchdog
status file): a section that cannot be read is shown as unreadable, never a traceback, and no
control sequence of the host's reaches the output."""

from __future__ import annotations

import json
import signal
import threading

from tests.deploy.watch_support import deploy_and_start, epoch_trainer, sshd, wait_for  # noqa: F401

HUGE_NAME = "A" * 200_000  # one CSV field over the csv module's 128 KiB limit: _csv.Error before
HOSTILE = "\x1b]0;PWNED\x07\x1b[2J"


def stand_in(sshd, name: str, text: str) -> None:
    """A `name` on the host's PATH that prints `text` whatever it is asked."""
    (sshd.bin_dir / f"{name}.out").write_text(text)
    script = sshd.bin_dir / name
    script.write_text(f'#!/bin/sh\ncat "$(dirname "$0")/{name}.out"\n')
    script.chmod(0o755)


def gpu_csv(name: str) -> str:
    return ("index, name, utilization.gpu [%], memory.used [MiB], memory.total [MiB], power.draw [W], "
            f"power.limit [W], temperature.gpu\n0, {name}, 97 %, 30012 MiB, 32760 MiB, 245.67 W, 250.00 W, 71\n")


def test_odd_host_output_is_shown_as_unreadable_and_hostile_text_is_cleaned(project, epoch_trainer, sshd):
    epoch_trainer.behave(epochs=2, delay=60)  # alive, quiet: the log's last lines stay the ones written below
    run = deploy_and_start(project)
    stand_in(sshd, "nvidia-smi", gpu_csv(HUGE_NAME))
    stand_in(sshd, "df", "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x lots some many 5% /\n")
    wd = project.workspace / ".watchdog"
    wd.mkdir()
    (wd / "status.json").write_text(json.dumps({
        "at": "yesterday", "will_stop": {"rule": 7, "at": "soon"}, "activity": 5,
        "last_stop_attempt": {"at": "x", "result": HOSTILE + "stopped", "reason": HOSTILE}}))
    (wd / "watchdog.log").write_text(f"{HOSTILE}watchdog line\n")
    with open(project.remote_run_dir(run) / "train.log", "a") as log:
        log.write(f"{HOSTILE}a log line\n")

    r = project.run("status")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Traceback" not in out and "\x1b" not in out and "\x07" not in out
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    assert "unreadable" in rows["gpu"] and "unreadable" in rows["disk"], r.stdout
    assert "unreadable" in r.stdout.split("watchdog", 1)[1], r.stdout
    assert "a log line" in r.stdout and "watchdog line" in r.stdout

    j = project.run("status", "--json")
    assert j.returncode == 0, j.stderr
    info = json.loads(j.stdout)
    assert {"gpu", "disk"} <= set(info["unreadable"]) and info["watchdog"]["unreadable"], info
    assert "disk_free_gb" not in info and info["watchdog"]["last_tick_age_s"] is None

    proc = project.popen("watch", "--interval", "0.5")
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        wait_for(lambda: any(ln.startswith("gpu") and "unreadable" in ln for ln in lines), timeout=60,
                 what="the unreadable GPU row")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(20)
    text = "".join(lines) + proc.stderr.read()
    assert code == 0 and "Traceback" not in text and "\x1b" not in text, text[-2000:]
    assert any(ln.startswith("disk") and "unreadable" in ln for ln in lines)

    # readable, but hostile: the GPU's name carries a title change and a screen clear
    stand_in(sshd, "nvidia-smi", gpu_csv(f"{HOSTILE}NVIDIA RTX 5000 Ada Generation"))
    r = project.run("status")
    assert r.returncode == 0 and "\x1b" not in r.stdout, r.stdout
    assert "NVIDIA RTX 5000 Ada Generation" in r.stdout and "97% busy" in r.stdout


def test_a_df_of_words_does_not_break_sync(project, sshd):
    (project.cwd / "dataset" / "Violence").mkdir(parents=True)
    (project.cwd / "dataset" / "Violence" / "a.mp4").write_bytes(b"video" * 100)
    assert project.run("up").returncode == 0
    stand_in(sshd, "df", "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x lots some many 5% /\n")
    r = project.run("sync")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert (project.workspace / "dataset" / "Violence" / "a.mp4").is_file()


def test_up_prints_the_hosts_gpu_names_and_disk_without_its_control_sequences(project, sshd):
    stand_in(sshd, "nvidia-smi", f"{HOSTILE}NVIDIA RTX 5000 Ada Generation, 32760 MiB\n")
    stand_in(sshd, "df", "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x lots some many 5% /\n")
    r = project.run("up")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "NVIDIA RTX 5000 Ada Generation" in r.stdout and "\x1b" not in r.stdout + r.stderr, r.stdout
