"""Who may use the forwarded TensorBoard port: this machine's user's browser, and nobody else.

The tunnel listens on 127.0.0.1, which still lets in every local user and every web page the
browser opens: a page on evil.example can rebind that name to 127.0.0.1 (DNS rebinding) and
read TensorBoard's JSON (/data/environment: the host's paths and flags) as same-origin. So each
connection's first HTTP request is read here before anything reaches the host, and forwarded
only when

- its target is under the random path prefix in the URL we printed (TensorBoard serves under
  it, `--path_prefix`): another local user, or a page, cannot guess it; and
- its Host header is 127.0.0.1, localhost or [::1] (with or without our port): a rebound
  name arrives with its own name in Host and is refused (403).

The request then goes on with `Connection: close`, so TensorBoard answers that one request and
closes: every request it serves is the first of a connection, checked here (nothing can be
smuggled behind a good one on a kept-alive connection). Hand-written: TensorBoard has no Host
allow-list, and a reverse proxy package would be a second server for one check.
"""

from __future__ import annotations

import socket
from urllib.parse import unquote, urlsplit

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT_S = 15
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")
_HOP = (b"connection", b"keep-alive", b"proxy-connection")


class Refusal(Exception):
    def __init__(self, status: int, reason: str, text: str):
        super().__init__(text)
        self.status, self.reason, self.text = status, reason, text

    def response(self) -> bytes:
        body = (self.text + "\n").encode()
        return (f"HTTP/1.1 {self.status} {self.reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """(the request head up to the blank line, what came after it) from a new connection."""
    sock.settimeout(HEAD_TIMEOUT_S)
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            raise Refusal(431, "Request Header Fields Too Large", "request head too large")
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise Refusal(408, "Request Timeout", "no request") from None
        if not chunk:
            raise Refusal(400, "Bad Request", "connection closed before a whole request")
        data += chunk
    sock.settimeout(None)
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def check(head: bytes, prefix: str, port: int) -> bytes:
    """The request head to forward (with `Connection: close`), or Refusal. `prefix`: '/<secret>'."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise Refusal(400, "Bad Request", "not an HTTP request") from None
    request_line, *header_lines = text.split("\r\n")
    words = request_line.split(" ")
    if len(words) != 3 or not words[2].startswith("HTTP/1."):
        raise Refusal(400, "Bad Request", "not an HTTP/1.x request")
    hosts, kept = [], []
    for line in header_lines:
        if not line or line[0] in " \t" or ":" not in line:
            raise Refusal(400, "Bad Request", "malformed header")
        name, _, value = line.partition(":")
        if name.strip().lower() == "host":
            hosts.append(value.strip().lower())
        if name.strip().lower().encode() not in _HOP:
            kept.append(line)
    allowed = {h for name in LOCAL_NAMES for h in (name, f"{name}:{port}")}
    if len(hosts) != 1 or hosts[0] not in allowed:
        raise Refusal(403, "Forbidden", "this TensorBoard answers only to http://127.0.0.1 or http://localhost "
                                        "(a page from another site is not served)")
    target = words[1]
    path = urlsplit(target).path if target.startswith("/") else ""
    segments = unquote(path).split("/")
    if not (path == prefix or path.startswith(prefix + "/")) or "." in segments or ".." in segments:
        raise Refusal(404, "Not Found", "not found (open the URL that `python -m deploy tensorboard` printed)")
    return "\r\n".join([request_line, *kept, "Connection: close"]).encode() + b"\r\n\r\n"
