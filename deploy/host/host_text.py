"""The one sanitiser for text a host sends that is shown on the user's terminal.

A rented host is someone else's machine: its train.log, command output, file names and error
messages may carry terminal control sequences (an OSC 52 write to the clipboard, a title change,
a screen clear, a DCS string some terminals answer) or bidi overrides that make text read as
something else. Everything from a host passes through here before it reaches a terminal:
`logs` and `logs -f`, `watch`, `status`, the output streamed while the host downloads a dataset
or builds a venv, and the host's words inside our one-line errors.

What is removed: every escape sequence WHOLE (ESC + CSI/OSC/DCS/SOS/PM/APC strings and the short
ESC forms, and their 8-bit C1 forms), every other C0 control but newline and tab, DEL, C1 controls
(U+0080-U+009F) and the bidi embedding/override/isolate marks. A lone carriage return becomes a
newline (it would let a line overwrite the text before it); CR LF becomes LF.

Hand-written (a small state machine) because no maintained library does this: rich's escape()
escapes its own markup, not control characters, and a regex cannot follow a sequence split
across two reads of a stream (`logs -f` hands over whatever bytes the network delivered).
"""

from __future__ import annotations

import codecs
import re

ESC, BEL, CSI8, ST8 = "\x1b", "\x07", "\x9b", "\x9c"
_STRING_INTRO = "]PX^_"  # after ESC: OSC, DCS, SOS, PM, APC
_STRING8 = "\x90\x98\x9d\x9e\x9f"  # DCS SOS OSC PM APC as C1 controls
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# anything that needs the slow path; plain text (the usual case) is returned as it is
_SPECIAL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CSI_WHOLE = re.compile(r"\x1b\[[0-?]{0,64}[ -/]{0,8}[@-~]")
_MAX_SEQUENCE = 4096  # a CSI longer than this is not a sequence a terminal knows: give up on it

_TEXT, _ESC, _ESC_INTER, _CSI, _STRING, _STRING_ESC = range(6)


class TerminalStream:
    """Bytes (or text) from a host in, safe text out; sequences may be split across feeds."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._state = _TEXT
        self._cr = False  # a CR whose meaning depends on the next character
        self._seq_len = 0

    def feed(self, data: bytes | str) -> str:
        text = self._decoder.decode(data) if isinstance(data, (bytes, bytearray)) else data
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            if self._state == _TEXT and not self._cr:  # plain text up to the next special character, as is
                m = _SPECIAL.search(text, i)
                j = m.start() if m else n
                out.append(text[i:j])
                if m is None:
                    break
                i = j
                whole = _CSI_WHOLE.match(text, i)  # the usual sequence (a colour), whole in this piece
                if whole:
                    i = whole.end()
                    continue
            self._step(text[i], out)
            i += 1
        return "".join(out)

    def close(self) -> str:
        """The end of the stream: a dangling CR is a line end; an unfinished sequence is dropped."""
        out: list[str] = []
        for ch in self._decoder.decode(b"", final=True):
            self._step(ch, out)
        if self._cr:
            out.append("\n")
            self._cr = False
        self._state = _TEXT
        return "".join(out)

    def _step(self, ch: str, out: list[str]) -> None:
        state = self._state
        if state == _TEXT:
            if self._cr:
                self._cr = False
                out.append("\n")
                if ch == "\n":
                    return
            if ch == "\r":
                self._cr = True
            elif ch == ESC:
                self._state = _ESC
            elif ch == CSI8:
                self._state, self._seq_len = _CSI, 0
            elif ch in _STRING8:
                self._state = _STRING
            elif ch in "\n\t" or not (ch < " " or "\x7f" <= ch <= "\x9f" or ch in _BIDI):
                out.append(ch)
            # any other control character, DEL, C1 or bidi mark: dropped
        elif state in (_ESC, _ESC_INTER):
            if ch == "[" and state == _ESC:
                self._state, self._seq_len = _CSI, 0
            elif ch in _STRING_INTRO and state == _ESC:
                self._state = _STRING
            elif " " <= ch <= "/":
                self._state = _ESC_INTER  # intermediate bytes (ESC ( B, ESC # 8, ...)
            elif "0" <= ch <= "~":
                self._state = _TEXT  # the final byte: a complete two-or-more-character sequence
            else:
                self._state = _TEXT  # not a sequence after all: the character counts as text
                self._step(ch, out)
        elif state == _CSI:
            self._seq_len += 1
            if "@" <= ch <= "~":
                self._state = _TEXT  # final byte
            elif not (" " <= ch <= "?") or self._seq_len > _MAX_SEQUENCE:
                self._state = _TEXT  # broken sequence: what follows is text again
                self._step(ch, out)
        elif state == _STRING:
            # OSC/DCS/...: everything up to BEL or ST is the sequence's payload. A newline ends it too,
            # so that an unterminated string cannot swallow the rest of a log.
            if ch in (BEL, ST8):
                self._state = _TEXT
            elif ch == ESC:
                self._state = _STRING_ESC
            elif ch == "\n":
                self._state = _TEXT
                out.append(ch)
        elif state == _STRING_ESC:
            if ch == "\\":
                self._state = _TEXT  # ST (ESC \)
            else:
                self._state = _STRING
                self._step(ch, out)


def clean(text: str | bytes) -> str:
    """One piece of host text, whole, made safe to print (newlines and tabs kept)."""
    stream = TerminalStream()
    return stream.feed(text) + stream.close()


def one_line(text: str | bytes) -> str:
    """Host text for one line of ours (an error message, a table cell): line ends and tabs become spaces."""
    return clean(text).replace("\n", " ").replace("\t", " ").strip()


class Writer:
    """`on_bytes` for Remote.stream: a host's output to a binary stream (stdout), sanitised."""

    def __init__(self, binary_stream):
        self.out = binary_stream
        self.stream = TerminalStream()

    def __call__(self, data: bytes) -> None:
        self.write(self.stream.feed(data))

    def write(self, text: str) -> None:
        if text:
            self.out.write(text.encode("utf-8", errors="replace"))
            self.out.flush()

    def close(self) -> None:
        self.write(self.stream.close())
