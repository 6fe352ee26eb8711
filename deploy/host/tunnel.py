"""A local port forwarded to 127.0.0.1:<port> on the host, through the pinned SSH connection.

The `ssh -L` of OpenSSH, done on the paramiko transport that `Remote` already holds
(same pinned host key, same Vast.ai direct/proxy fallback): each browser connection to
127.0.0.1:<local port> here becomes one "direct-tcpip" channel to 127.0.0.1:<remote port>
there. Nothing listens on the host's network interfaces and no port is opened on the
instance. Hand-written because paramiko ships local forwarding only as a demo script
(demos/forward.py) and the `sshtunnel` package would open a second connection of its own,
which could not follow a reconnect; here the listener stays on the same local port while
the transport under it is replaced (`transport` is a callable read on every connection).

With `path_prefix`, the port serves HTTP to this machine's browser only: each connection's
first request is checked by deploy/host/tunnel_gate.py (the secret prefix, a local Host header)
before a channel is opened.
"""

from __future__ import annotations

import select
import socket
import threading
from typing import Callable

import paramiko

from deploy.errors import UsageError
from deploy.host import tunnel_gate


class ForwardRefused(Exception):
    """The host's sshd refused to open the channel (AllowTcpForwarding no, or nothing listens there)."""


class LocalForward:
    def __init__(self, transport: Callable[[], paramiko.Transport | None], remote_port: int = 0,
                 local_port: int = 0, remote_host: str = "127.0.0.1", path_prefix: str | None = None):
        self.transport = transport
        self.path_prefix = path_prefix  # '/<secret>': HTTP under it, from a local Host, only
        self.remote_host, self.remote_port = remote_host, remote_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind(("127.0.0.1", local_port))
        except OSError as exc:
            self.sock.close()
            raise UsageError(f"local port {local_port} is not free ({exc.strerror}): pick another with --port N, "
                             f"or leave --port out for any free one") from None
        self.sock.listen(16)
        self.sock.settimeout(0.5)  # accept() wakes up to see stop(): closing alone does not wake it on Linux
        self.local_port = self.sock.getsockname()[1]
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}{self.path_prefix or ''}/"

    # -- channels --------------------------------------------------------------------
    def open_channel(self, src=("127.0.0.1", 0), timeout: float = 10) -> paramiko.Channel:
        transport = self.transport()
        if transport is None or not transport.is_active():
            raise ForwardRefused("the SSH connection is down")
        try:
            return transport.open_channel("direct-tcpip", (self.remote_host, self.remote_port), src, timeout=timeout)
        except paramiko.ChannelException as exc:
            raise ForwardRefused(f"{exc.text or exc} (code {exc.code})") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ForwardRefused(str(exc) or type(exc).__name__) from None

    def forwarding_allowed(self) -> bool:
        """False when the host's sshd refuses every forward (AllowTcpForwarding no): it answers
        "administratively prohibited" (RFC 4254 reason 1), where a forward it allows to a port with
        no listener fails with "connect failed" (reason 2). Port 1 (tcpmux) is that closed port."""
        transport = self.transport()
        if transport is None or not transport.is_active():
            raise ForwardRefused("the SSH connection is down")
        try:
            transport.open_channel("direct-tcpip", (self.remote_host, 1), ("127.0.0.1", 0), timeout=10).close()
        except paramiko.ChannelException as exc:
            return exc.code != paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        return True

    def check(self) -> None:
        """Open and close one channel: raises ForwardRefused when forwarding cannot work."""
        self.open_channel().close()

    # -- serving ----------------------------------------------------------------------
    def start(self) -> "LocalForward":
        t = threading.Thread(target=self._accept_loop, name="forward-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # the listener was closed by stop()
            threading.Thread(target=self._serve, args=(client, peer), name="forward-conn", daemon=True).start()

    def _serve(self, client: socket.socket, peer) -> None:
        first = b""
        if self.path_prefix is not None:
            try:
                head, rest = tunnel_gate.read_head(client)
                first = tunnel_gate.check(head, self.path_prefix, self.local_port) + rest
            except tunnel_gate.Refusal as refusal:
                try:
                    client.sendall(refusal.response())
                except OSError:
                    pass
                client.close()
                return
            except OSError:
                client.close()
                return
        try:
            chan = self.open_channel(src=peer)
        except ForwardRefused:
            client.close()  # the browser sees a reset connection and retries; the link is being rebuilt
            return
        try:
            if first:
                chan.sendall(first)
            while not self._stopped.is_set():
                ready, _, _ = select.select([client, chan], [], [], 1.0)
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        break
                    chan.sendall(data)
                if chan in ready:
                    data = chan.recv(65536)
                    if not data:
                        break
                    client.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # either end went away; both are closed below
        finally:
            chan.close()
            client.close()

    def stop(self) -> None:
        self._stopped.set()
        try:
            self.sock.close()
        except OSError:
            pass
