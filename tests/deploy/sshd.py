"""A real OpenSSH server on 127.0.0.1 for end-to-end tests of deploy/.

The "remote" host is this same machine: `/usr/sbin/sshd -D -e -f <config>` runs as the
current user (root in CI) on a random free port, with a throw-away host key, a
throw-away user key pair and an AuthorizedKeysFile in a temporary folder, so nothing
in ~/.ssh or /etc/ssh is read or changed.

Failure modes the deploy tests need are verbs here:
- `refuse_for(seconds)`: nothing listens for a while, then the server comes back on the
  same port (a host still booting);
- `drop_connections()`: every open SSH session is cut, the listener stays (a dropped link);
- `regenerate_host_key()`: a new host key on the same address (a reinstalled or
  impersonated machine).

Usage (the `sshd` fixture in conftest.py does this)::

    server = SshServer(tmp_path / "sshd"); server.start()
    server.host, server.port, server.user, server.identity_file
    server.deploy_ssh_config()  # the `ssh:` section of configs/deploy.yaml
    server.stop()
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

SSHD = shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:" + os.environ.get("PATH", "")) or "/usr/sbin/sshd"


def sshd_available() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path, comment: str) -> None:
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, stdout=subprocess.DEVNULL,
    )
    path.chmod(0o600)


class SshServer:
    """One sshd on 127.0.0.1; the port stays the same across stop/start."""

    def __init__(self, root: Path, port: int | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.user = getpass.getuser()
        self.host_key = self.root / "ssh_host_ed25519_key"
        self.identity_file = str(self.root / "id_ed25519")
        self.authorized_keys = self.root / "authorized_keys"
        self.config_file = self.root / "sshd_config"
        self.pid_file = self.root / "sshd.pid"
        self.log_file = self.root / "sshd.log"
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        # Every session's extra environment. sshd takes only the FIRST SetEnv line of its config
        # (sshd_config(5): "the first obtained value will be used"), so all of it goes on one line:
        # change it with set_env(), never by appending a second SetEnv.
        self.session_env: dict[str, str] = {}

        _keygen(self.host_key, "test-host")
        _keygen(Path(self.identity_file), "test-user")
        self.authorized_keys.write_text(Path(self.identity_file + ".pub").read_text())
        self._write_config()

    # -- configuration -------------------------------------------------------------
    def _write_config(self) -> None:
        lines = [
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "StrictModes no",  # the temp folder's permissions are not ~/.ssh's
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PrintMotd no",
            "UseDNS no",
            "MaxStartups 50",
            "MaxSessions 50",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
        ]
        if self.session_env:
            lines.append("SetEnv " + " ".join(f'"{k}={v}"' for k, v in self.session_env.items()))
        self.config_file.write_text("\n".join(lines) + "\n")

    def set_env(self, **env: str) -> None:
        """Add variables to every SSH session's environment (as Vast.ai's containers carry theirs);
        takes effect at the next (re)start."""
        self.session_env.update(env)
        self._write_config()

    def deploy_ssh_config(self) -> dict:
        """The `ssh:` section of configs/deploy.yaml that reaches this server."""
        return {"host": self.host, "port": self.port, "user": self.user, "identity_file": self.identity_file}

    def host_public_key(self) -> str:
        return Path(str(self.host_key) + ".pub").read_text().strip()

    # -- life cycle ----------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> "SshServer":
        with self._lock:
            if self.running:
                return self
            if os.geteuid() == 0:
                # sshd as root needs its privilege-separation directory (absent in containers).
                os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
            log = open(self.log_file, "ab")
            self._proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
            log.close()
        self._wait_listening(timeout)
        return self

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self._proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on {self.host}:{self.port} within {timeout}s: {self.log_tail()}")

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        if not self.running:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # field 4 (after the parenthesised command name) is the parent pid
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self._proc.pid:
                pids.append(int(entry.name))
        return pids

    def drop_connections(self) -> int:
        """Cut every open SSH connection (the listener keeps accepting new ones)."""
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def stop(self) -> None:
        """Stop listening and cut every open connection."""
        with self._lock:
            if self._proc is None:
                return
            sessions = self.session_pids()
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            for pid in sessions:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._proc = None

    def restart(self) -> "SshServer":
        self.stop()
        return self.start()

    def refuse_for(self, seconds: float) -> threading.Thread:
        """Stop now and come back on the same port after `seconds` (in a background thread)."""
        self.stop()
        t = threading.Thread(target=lambda: (time.sleep(seconds), self.start()), daemon=True)
        t.start()
        return t

    def regenerate_host_key(self) -> None:
        """A new host key on the same address; the server restarts if it was running."""
        was_running = self.running
        self.stop()
        _keygen(self.host_key, "test-host-new")
        if was_running:
            self.start()

    def log_tail(self, n: int = 20) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __enter__(self) -> "SshServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
