"""`python -m trainer --help`: what the tool does in one sentence, then every command with its one-line help."""

import os
import re
import subprocess
import sys

from trainer.cli import build_parser


def test_top_level_help_says_what_the_tool_does_and_lists_every_command_on_one_line():
    env = {**os.environ, "COLUMNS": "80"}  # a plain terminal's width
    out = subprocess.run([sys.executable, "-m", "trainer", "--help"], capture_output=True, text=True, check=True,
                         env=env).stdout
    description = out.split("\n\n")[1]
    assert description.startswith("Train a video violence classifier") and description.count(". ") == 0, description
    verbs = build_parser()._subparsers._group_actions[0]
    for choice in verbs._choices_actions:
        # each command on one line of its own: its name, then its whole help, not wrapped onto the next
        assert re.search(rf"^ +{choice.dest} +{re.escape(choice.help)}$", out, re.M), (choice.dest, out)
    assert "argument parsing" not in out
