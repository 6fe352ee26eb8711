"""Host text never reaches the terminal raw: `logs` (plain and --follow, through a pipe and under a
real terminal, tmux) shows train.log's text without its control sequences, and the one sanitiser
(deploy/host/host_text.py) that every path uses removes what a terminal would act on."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from deploy.host import host_text
from tests.deploy.watch_support import wait_for

# What a hostile train.log carries: an OSC 52 clipboard write, a window-title change (OSC 0, ended by
# BEL), a screen clear and cursor home (CSI), a colour (SGR), a DCS string ended by ST, an 8-bit CSI
# (U+009B), DEL, a backspace that would hide text, and a bidi override.
PAYLOAD = ("epoch 1 visible text\n"
           "\x1b]52;c;cHduZWQ=\x07clipboard line\n"
           "\x1b]0;PWNED-TITLE\x07title line\n"
           "\x1b[2J\x1b[Hafter clear\n"
           "\x1b[31mred\x1b[0m plain\n"
           "\x1bP1$qm\x1b\\dcs line\n"
           "\u009b2Jc1 line\x7f\n"
           "over\x08\x08\x08\x08hidden?\n"
           "\u202etxt.exe\n"
           "tab\tkept\r\n"
           "last line\n")
CLEAN = ("epoch 1 visible text\nclipboard line\ntitle line\nafter clear\nred plain\ndcs line\nc1 line\n"
         "overhidden?\ntxt.exe\ntab\tkept\nlast line\n")


def test_the_sanitiser_removes_sequences_whole_and_keeps_text_newlines_and_tabs():
    assert host_text.clean(PAYLOAD) == CLEAN
    assert host_text.clean("plain text, ünïcödé, 日本\n") == "plain text, ünïcödé, 日本\n"
    # a lone CR would let a line overwrite what came before: it becomes a new line
    assert host_text.clean("shown\rcovered") == "shown\ncovered"
    # an unterminated OSC swallows nothing past the end of its line
    assert host_text.clean("\x1b]0;no end\nnext line\n") == "\nnext line\n"
    assert host_text.one_line("a\nb\x1b[2Jc\t d  e\n") == "a bc  d  e"


def test_a_stream_split_anywhere_gives_the_same_text():
    data = PAYLOAD.encode()
    for size in (1, 2, 3, 7, 64):
        stream = host_text.TerminalStream()
        out = "".join(stream.feed(data[i:i + size]) for i in range(0, len(data), size)) + stream.close()
        assert out == CLEAN, size
    # invalid UTF-8 (a raw 0x9b byte, 8-bit CSI on a Latin-1 terminal) is not passed through
    stream = host_text.TerminalStream()
    out = stream.feed(b"a\x9b2Jb\xff\n") + stream.close()
    assert "\x9b" not in out and "\x1b" not in out and out.startswith("a") and out.endswith("b\ufffd\n")


def hostile_run(project, name="r1"):
    run_dir = project.remote_run_dir(name)
    run_dir.mkdir(parents=True)
    (run_dir / "train.log").write_text(PAYLOAD)
    (run_dir / "exit_status").write_text("0\n")
    return run_dir


@pytest.mark.parametrize("follow", [False, True])
def test_logs_through_a_pipe_carry_no_control_sequence(project, follow):
    assert project.run("up").returncode == 0
    hostile_run(project)
    r = project.run("logs", "--run", "r1", *(["-f"] if follow else []))
    assert r.returncode == 0, r.stderr
    assert r.stdout == CLEAN


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
def test_logs_under_a_terminal_show_the_text_and_nothing_acts_on_the_terminal(project, tmp_path):
    assert project.run("up").returncode == 0
    hostile_run(project)
    sock = str(tmp_path / "tmux.sock")
    tmux = ["tmux", "-S", sock]
    cmd = " ".join(shlex.quote(a) for a in project.argv("logs", "--run", "r1", "-f"))
    subprocess.run(tmux + ["-f", "/dev/null", "new-session", "-d", "-s", "l", "-x", "160", "-y", "40",
                           "-c", str(project.cwd), f"echo BEFORE-MARKER; {cmd}; echo EXIT=$?; sleep 600"],
                   check=True, env=project.env())
    # accept OSC 52 from the pane (tmux's default ignores it) so that a clipboard write would show
    subprocess.run(tmux + ["set-option", "-g", "set-clipboard", "on"], check=True)
    try:
        def screen(*flags) -> str:
            return subprocess.run(tmux + ["capture-pane", "-p", *flags, "-t", "l"], capture_output=True,
                                  text=True).stdout

        wait_for(lambda: "EXIT=" in screen(), timeout=60, what="logs to end")
        shown = screen()
        assert "EXIT=0" in shown
        for line in CLEAN.splitlines():
            assert line.split("\t")[0] in shown, (line, shown)
        assert "BEFORE-MARKER" in shown, "the log cleared the screen"
        title = subprocess.run(tmux + ["display-message", "-p", "-t", "l", "#{pane_title}"], capture_output=True,
                               text=True).stdout
        assert "PWNED" not in title, "the log changed the terminal's title"
        buffers = subprocess.run(tmux + ["list-buffers"], capture_output=True, text=True).stdout
        assert buffers.strip() == "", f"the log wrote the clipboard: {buffers}"
        assert "\x1b[31m" not in screen("-e") and "[31m" not in screen("-e"), "the log's colour reached the terminal"
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)
