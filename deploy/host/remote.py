"""One SSH connection to the host: fabric/paramiko for commands, the same settings for rsync.

Host keys: accepted on first contact and pinned in `.deploy/known_hosts` (OpenSSH
format, so the `ssh` that rsync runs checks the very same pin with
StrictHostKeyChecking=yes). A changed key stops everything with the command that
forgets the old one. Connection attempts retry with backoff while a host boots.

Every remote command is a POSIX sh script passed as `sh -c '<script>'`, so the login
shell of the remote user (bash, zsh, fish...) never re-interprets it; callers build
scripts with `q()` (shlex.quote) around every value.
"""

from __future__ import annotations

import errno
import logging
import shlex
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko
from fabric import Config, Connection
from fabric.runners import Remote as FabricRunner

from deploy.errors import UsageError
from deploy.host import host_text
from deploy.providers.base import Host

q = shlex.quote

# paramiko logs its transport thread's failures ("Error reading SSH protocol banner", with a
# traceback) through `logging`; unconfigured, Python's last-resort handler prints them on
# stderr while a host boots. We report connection failures ourselves, as one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False

DISK_FULL = "No space left on device"
# A link can die silently (a frozen sshd, a NAT that forgot us): TCP still accepts what we
# send, so only an answer proves the server is there. A stream with no output for
# IDLE_PROBE_S asks for one (a keepalive@openssh.com global request, which OpenSSH
# answers, even if only to refuse it); none within PROBE_TIMEOUT_S means the link is dead.
IDLE_PROBE_S = 10.0
PROBE_TIMEOUT_S = 5.0


class _InterruptibleRunner(FabricRunner):
    """fabric's runner, except that Ctrl-C reaches us. invoke answers a KeyboardInterrupt by
    typing ^C into the command's stdin and waiting for the command to end; ours run without a
    pty and never read stdin, so that wait swallowed the user's Ctrl-C (`watch` and `logs -f`
    kept going). Closing the channel ends the threads that read its output (invoke joins
    them before the exception leaves); the command on the host gets a hang-up, as with ssh."""

    def send_interrupt(self, interrupt: KeyboardInterrupt) -> None:
        self.channel.close()
        raise interrupt


_CONFIG = Config(overrides={"runners": {"remote": _InterruptibleRunner}})


def rpath(path: str) -> str:
    """A remote path for a sh script: quoted, but a leading ~ still means the remote $HOME."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + q(path[2:])
    return q(path)


def host_label(host: Host) -> str:
    return f"{host.user}@{host.host}:{host.port}"


def known_hosts_name(host: Host) -> str:
    return host.host if host.port == 22 else f"[{host.host}]:{host.port}"


class _PinOnFirstContact(paramiko.AutoAddPolicy):
    """AutoAddPolicy saves to the loaded known_hosts file; we also say so, once."""

    def missing_host_key(self, client, hostname, key):
        super().missing_host_key(client, hostname, key)
        fp = key.fingerprint if hasattr(key, "fingerprint") else key.get_name()
        print(f"pinned the host key of {hostname} ({fp}) in {client._host_keys_filename}", file=sys.stderr)


@dataclass
class Result:
    stdout: str
    stderr: str
    exited: int

    @property
    def ok(self) -> bool:
        return self.exited == 0


class Remote:
    def __init__(self, host: Host, known_hosts: Path, connect_timeout: float = 15):
        self.host = host
        self.known_hosts = Path(known_hosts)
        self.connect_timeout = connect_timeout
        self.conn: Connection | None = None
        if host.identity_file and not Path(host.identity_file).expanduser().is_file():
            raise UsageError(f"SSH key {host.identity_file} not found: fix ssh.identity_file in the deploy config")

    # -- connecting -----------------------------------------------------------------
    def _candidates(self) -> list[Host]:
        out = [self.host]
        for fb in self.host.fallbacks or []:
            out.append(Host(host=fb.get("host", self.host.host), port=int(fb.get("port", self.host.port)),
                            user=fb.get("user", self.host.user),
                            identity_file=fb.get("identity_file", self.host.identity_file)))
        return out

    def _open(self, host: Host) -> Connection:
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        self.known_hosts.touch(exist_ok=True)
        kwargs = {"banner_timeout": self.connect_timeout, "auth_timeout": self.connect_timeout}
        if host.identity_file:
            # The agent stays on: a passphrase-protected key loaded there (ssh-add) is how it is used
            # without a prompt. paramiko tries the key file first, then the agent's keys.
            kwargs.update(key_filename=str(Path(host.identity_file).expanduser()), look_for_keys=False,
                          allow_agent=True)
        conn = Connection(host.host, user=host.user, port=host.port, connect_timeout=self.connect_timeout,
                          connect_kwargs=kwargs, config=_CONFIG)
        conn.client.load_host_keys(str(self.known_hosts))
        conn.client.set_missing_host_key_policy(_PinOnFirstContact())
        conn.open()
        conn.transport.set_keepalive(15)
        return conn

    def connect(self, retry_for: float = 30, retry_auth: bool = False, quiet: bool = False,
                refused_attempts: int | None = None) -> "Remote":
        """Connect, retrying refused/timed-out attempts with backoff for `retry_for` seconds.

        A host name that does not resolve is a typo, not a boot delay: it fails at once.
        `refused_attempts`: give up after that many refused connections (provider ssh: a
        host we are not booting, so a refused port is most likely the wrong port).
        """
        deadline = time.monotonic() + retry_for
        delay, attempt, last, refused = 1.0, 0, "", 0
        while True:
            attempt += 1
            for cand in self._candidates():
                try:
                    self.conn = self._open(cand)
                    self.host = cand if cand is self.host else Host(**{**cand.to_dict(), "fallbacks": []})
                    return self
                except paramiko.BadHostKeyException:
                    raise UsageError(
                        f"the host key of {known_hosts_name(cand)} CHANGED since it was pinned in {self.known_hosts}: "
                        f"if the machine was really reinstalled, forget the old key with "
                        f"`ssh-keygen -R {q(known_hosts_name(cand))} -f {q(str(self.known_hosts))}` and retry; "
                        f"otherwise do not connect") from None
                except paramiko.AuthenticationException as exc:
                    last = f"the host refused the key ({exc})"
                    if not retry_auth:
                        raise UsageError(
                            f"{host_label(cand)} refused SSH key {cand.identity_file or '(agent/default keys)'}: "
                            f"add its .pub to ~{cand.user}/.ssh/authorized_keys there, or fix ssh.user / "
                            f"ssh.identity_file") from None
                except socket.gaierror as exc:
                    raise UsageError(f"cannot resolve the host name {cand.host!r} ({exc.strerror or exc}): check "
                                     f"ssh.host (a typo?) and this machine's network") from None
                except (OSError, socket.timeout, EOFError, paramiko.SSHException) as exc:
                    if _refused(exc):
                        refused += 1
                        last = f"connection refused at {cand.host}:{cand.port}"
                    else:
                        last = str(exc) or type(exc).__name__
            if refused_attempts is not None and refused >= refused_attempts * len(self._candidates()):
                raise UsageError(
                    f"nothing accepts SSH connections at {self.host.host}:{self.host.port} (connection refused, "
                    f"{attempt} attempt(s)): check ssh.host / ssh.port, and that sshd runs there") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UsageError(
                    f"cannot reach {host_label(self.host)} after {attempt} attempt(s) ({last}): check that the "
                    f"host is up and that ssh.host / ssh.port are right") from None
            if not quiet:
                print(f"waiting for {host_label(self.host)} ({last}); retrying in {min(delay, remaining):.0f}s",
                      file=sys.stderr)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 15)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> "Remote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running commands ----------------------------------------------------------
    def run(self, script: str, stdin: str | None = None, hide: bool = True, timeout: float | None = None) -> Result:
        """Run a sh script; never raises for a non-zero exit (see `check`)."""
        if self.conn is None:
            self.connect()
        if stdin is not None:
            return self._run_with_stdin(script, stdin.encode(), timeout)
        try:
            r = self.conn.run(f"sh -c {q(script)}", hide=hide, warn=True, pty=False, timeout=timeout,
                              in_stream=False)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise UsageError(f"lost the connection to {host_label(self.host)} ({exc}): run the command again") from None
        return Result(r.stdout, r.stderr, r.exited)

    def _run_with_stdin(self, script: str, data: bytes, timeout: float | None) -> Result:
        # Not fabric's run(in_stream=...): invoke feeds a non-tty stream one byte per
        # 10 ms poll, 25 s for a 2.5 kB script. The raw channel instead, with stdin sent
        # from a thread while stdout and stderr are drained together: sending all the
        # input before reading can deadlock once the remote's output fills the window.
        try:
            chan = self.conn.transport.open_session(timeout=timeout)
            chan.exec_command(f"sh -c {q(script)}")

            def send() -> None:
                try:
                    chan.sendall(data)
                    chan.shutdown_write()
                except (OSError, EOFError, paramiko.SSHException):
                    pass  # the remote ended early; its exit status tells the story

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            out, err = bytearray(), bytearray()
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                busy = False
                if chan.recv_ready():
                    out += chan.recv(65536)
                    busy = True
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    busy = True
                if not busy:
                    if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        chan.close()
                        raise socket.timeout(f"no answer within {timeout:.0f} s")
                    time.sleep(0.01)
            code = chan.recv_exit_status()
            sender.join(timeout=5)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise UsageError(f"lost the connection to {host_label(self.host)} ({exc}): run the command again") from None
        return Result(out.decode(errors="replace"), err.decode(errors="replace"), code)

    def check(self, script: str, what: str, stdin: str | None = None, hide: bool = True) -> str:
        """Run a script that must succeed; a failure becomes one line saying what failed."""
        r = self.run(script, stdin=stdin, hide=hide)
        if not r.ok:
            raise UsageError(f"{what} failed on {self.host.host}: {explain(r.stderr or r.stdout, r.exited)}")
        return r.stdout

    def stream(self, script: str, on_bytes=None, stdin: bytes | None = None) -> int | None:
        """Run a script and hand its output bytes (stdout and stderr merged) to `on_bytes` as they come.

        Raw paramiko channel rather than fabric's run: callers need exact byte counts
        (to resume a log exactly where a dropped connection left it) and no decoding.
        Returns the exit code, or None when the connection dropped before it ended.
        """
        if self.conn is None:
            self.connect()
        out = on_bytes or host_text.Writer(sys.stdout.buffer)  # the host's output, sanitised (host_text.py)
        try:
            chan = self.conn.transport.open_session()
            chan.set_combine_stderr(True)
            chan.settimeout(1.0)
            chan.exec_command(f"sh -c {q(script)}")
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            quiet_since = time.monotonic()
            while True:
                try:
                    data = chan.recv(65536)
                except socket.timeout:
                    if not self.conn.transport.is_active():
                        return None
                    if time.monotonic() - quiet_since >= IDLE_PROBE_S:
                        if not self.server_answers(PROBE_TIMEOUT_S):
                            return None  # dead link: the caller reconnects
                        quiet_since = time.monotonic()
                    continue
                quiet_since = time.monotonic()
                if not data:
                    break
                out(data)
            if not self.conn.transport.is_active() and not chan.exit_status_ready():
                return None
            code = chan.recv_exit_status()
            return None if code == -1 else code
        except (OSError, EOFError, paramiko.SSHException):
            return None

    def server_answers(self, timeout: float) -> bool:
        """Does the SSH server still answer? (see IDLE_PROBE_S; paramiko's own keepalive never waits
        for a reply, so it cannot tell.) The request runs in a thread: paramiko would wait forever."""
        transport = self.conn.transport if self.conn is not None else None
        if transport is None or not transport.is_active():
            return False
        answered = threading.Event()

        def ask() -> None:
            try:
                transport.global_request("keepalive@openssh.com", wait=True)
            except Exception:  # noqa: BLE001  (any failure means: no answer)
                return
            answered.set()

        threading.Thread(target=ask, daemon=True).start()
        return answered.wait(timeout) and transport.is_active()

    # -- the same settings for OpenSSH (rsync -e, `deploy ssh`) ----------------------
    def ssh_argv(self, interactive: bool = False) -> list[str]:
        h = self.host
        argv = ["ssh", "-p", str(h.port),
                # quoted: OpenSSH splits UserKnownHostsFile on whitespace ("/my project/..." -> 2 files)
                "-o", f'UserKnownHostsFile="{self.known_hosts.absolute()}"',
                "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "UpdateHostKeys=no", "-o", f"ConnectTimeout={int(self.connect_timeout)}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if h.identity_file:
            argv += ["-i", str(Path(h.identity_file).expanduser().absolute()), "-o", "IdentitiesOnly=yes"]
        if not interactive:
            argv += ["-o", "BatchMode=yes"]
        return argv

    @property
    def target(self) -> str:
        return f"{self.host.user}@{self.host.host}"


def _refused(exc: BaseException) -> bool:
    """Connection refused (nothing listens there), as raised directly or wrapped by paramiko."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return bool(exc.errors) and all(getattr(e, "errno", None) == errno.ECONNREFUSED for e in exc.errors.values())
    return getattr(exc, "errno", None) == errno.ECONNREFUSED


def explain(text: str, code: int | None = None) -> str:
    """The one line of a failed command's output worth showing, with a hint for the usual causes."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if any(DISK_FULL in ln for ln in lines):
        return "the host's disk is full (No space left on device): free space in the workspace, or rent a larger disk"
    last = host_text.one_line(lines[-1]) if lines else "no output"
    return f"{last} (exit code {code})" if code is not None else last
