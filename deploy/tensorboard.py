"""`tensorboard`: TensorBoard of the run on the host, in the laptop's browser, through SSH.

TensorBoard runs on the host (where the event files are being written), bound to
127.0.0.1 there with `--port 0` (a free port the OS picks), and is reached through a
local port forwarded over the pinned SSH connection (deploy/host/tunnel.py). No port is
opened on the instance, nothing is copied, and the graphs are live.

The remote TensorBoard is the command of an SSH session with a pseudo-terminal, so
when the session ends for any reason (Ctrl-C here, SIGTERM, a dropped link, a laptop
killed with -9) sshd hangs the terminal up and TensorBoard gets SIGHUP; on a clean stop
we also kill it by its pid file. The training is a separate `setsid` process (see
start.py) that none of this touches.

The local port is not open to everyone who can reach 127.0.0.1 (other local users, a web page
rebinding its name to 127.0.0.1): TensorBoard serves under a random path prefix
(`--path_prefix`), and the tunnel forwards only requests under it with a local Host header
(deploy/host/tunnel_gate.py). The first line on stdout is exactly
`TensorBoard: http://127.0.0.1:PORT/<secret>/` (scripts read it); everything else goes to
stderr. After a dropped link we reconnect, start a new TensorBoard (same prefix) and keep the
same local port, so the open browser tab keeps working.
"""

from __future__ import annotations

import collections
import re
import secrets
import signal
import sys
import time
import uuid

import paramiko

from deploy.errors import UsageError
from deploy.host import host_text
from deploy.host.layout import Layout
from deploy.host.remote import Remote, explain, q, rpath
from deploy.host.tunnel import ForwardRefused, LocalForward

START_TIMEOUT = 180  # seconds for TensorBoard to say where it listens (it imports TensorFlow when present)
RECONNECT_FOR = 120
_URL = re.compile(rb"https?://[^\s/]+:(\d+)/")


def logdir_for(layout: Layout, state, run: str | None, all_runs: bool) -> tuple[str, str]:
    """(what the user sees, the remote folder TensorBoard reads)."""
    if all_runs:
        return "all runs", layout.runs
    run = run or state.current_run
    if not run:
        raise UsageError("no run started yet: `python -m deploy start` (or `make deploy`) first, "
                         "or `tensorboard --all` for every run on the host")
    return f"run {run}", f"{layout.run_dir(run)}/tensorboard"


class RemoteTensorBoard:
    """One TensorBoard process on the host, owned by this command (pid file per session)."""

    def __init__(self, remote: Remote, python: str, logdir: str, workspace: str, path_prefix: str = ""):
        self.remote, self.python, self.logdir = remote, python, logdir
        self.path_prefix = path_prefix
        self.pid_file = f"{workspace}/.deploy-tensorboard/{uuid.uuid4().hex[:12]}.pid"
        self.chan: paramiko.Channel | None = None
        self.port: int | None = None
        self.output: collections.deque[str] = collections.deque(maxlen=20)

    def preflight(self) -> None:
        """One round trip: the interpreter, the tensorboard package, the folder."""
        py, d = q(self.python), rpath(self.logdir)
        r = self.remote.run(f"""
command -v {py} >/dev/null 2>&1 || {{ echo nopython; exit 0; }}
{py} -c 'import importlib.util as u; print("tensorboard" if u.find_spec("tensorboard") else "notensorboard")'
test -d {rpath(self.logdir.rsplit('/', 1)[0])} && echo parent
test -d {d} && echo logdir
""")
        facts = r.stdout.split()
        host = self.remote.host.host
        if "nopython" in facts:
            raise UsageError(f"no interpreter {self.python} on {host}: run `python -m deploy sync` first "
                             f"(or fix remote.python)")
        if "notensorboard" in facts:
            raise UsageError(f"no TensorBoard on {host}: {self.python} cannot import tensorboard; use the "
                             f"project's image or `pip install tensorboard` there")
        if "tensorboard" not in facts:
            raise UsageError(f"cannot check TensorBoard on {host}: {explain(r.stderr or r.stdout, r.exited)}")
        if "parent" not in facts:
            raise UsageError(f"{self.logdir.rsplit('/', 1)[0]} does not exist on {host}: did `start` succeed?")
        if "logdir" not in facts:
            print(f"note: {self.logdir} does not exist yet (the run has not reached training, or it logs no "
                  f"TensorBoard events); TensorBoard shows it as soon as it appears", file=sys.stderr)

    def _pid_kill(self) -> str:
        # by pid file, and only if that pid is still a TensorBoard (a recycled pid is left alone)
        return (f"pidf={rpath(self.pid_file)}; if [ -f \"$pidf\" ]; then pid=$(cat \"$pidf\"); "
                f"grep -q tensorboard /proc/\"$pid\"/cmdline 2>/dev/null && kill \"$pid\"; fi")

    def start(self) -> int:
        """Start it (ending the one this session started before a dropped link); returns its port."""
        script = (f"mkdir -p {rpath(self.pid_file.rsplit('/', 1)[0])} && {self._pid_kill()}; "
                  f"echo $$ > {rpath(self.pid_file)} && "
                  f"exec {q(self.python)} -m tensorboard.main --logdir {rpath(self.logdir)} --host 127.0.0.1 --port 0"
                  + (f" --path_prefix {q(self.path_prefix)}" if self.path_prefix else ""))
        transport = self.remote.conn.transport
        self.chan = transport.open_session(timeout=30)
        self.chan.get_pty(width=200)  # the hang-up on a lost session is what ends it (see the module doc)
        self.chan.exec_command(f"sh -c {q(script)}")
        buf = b""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.chan.recv_ready():
                buf += self.chan.recv(65536)
                m = _URL.search(buf)
                if m:
                    self._keep(buf)
                    self.port = int(m.group(1))
                    return self.port
            elif self.chan.exit_status_ready():
                self._keep(buf)
                raise UsageError(f"TensorBoard did not start on {self.remote.host.host}: "
                                 f"{explain(chr(10).join(self.output), self.chan.recv_exit_status())}")
            else:
                time.sleep(0.1)
        self._keep(buf)
        raise UsageError(f"TensorBoard on {self.remote.host.host} did not say where it listens within "
                         f"{START_TIMEOUT} s: {explain(chr(10).join(self.output))}")

    def _keep(self, data: bytes) -> None:
        for line in host_text.clean(data).splitlines():  # the host's words: no control sequence of theirs
            if line.strip():
                self.output.append(line.strip())

    def drain(self) -> None:
        """Read what it printed since (warnings), so its pty never fills up."""
        while self.chan is not None and self.chan.recv_ready():
            self._keep(self.chan.recv(65536))

    @property
    def alive(self) -> bool:
        return self.chan is not None and not self.chan.exit_status_ready()

    def stop(self) -> None:
        if self.chan is not None:
            self.chan.close()
            self.chan = None
        transport = self.remote.conn.transport if self.remote.conn is not None else None
        if transport is not None and transport.is_active():
            try:
                self.remote.run(f"{self._pid_kill()}; rm -f {rpath(self.pid_file)}", timeout=15)
            except Exception:  # noqa: BLE001  (a stop must never turn into a traceback; the hang-up ends it anyway)
                pass


def _stop_on_sigterm(*_):
    raise KeyboardInterrupt


def serve(connect, layout: Layout, config: dict, state, run: str | None = None, all_runs: bool = False,
          port: int | None = None) -> int:
    """Run until Ctrl-C / SIGTERM; `connect(retry_for)` returns a connected Remote."""
    what, logdir = logdir_for(layout, state, run, all_runs)
    remote: Remote | None = None
    prefix = "/" + secrets.token_urlsafe(24)  # the URL's secret: 192 random bits, kept across reconnects
    forward = LocalForward(lambda: remote.conn.transport if remote is not None and remote.conn else None,
                           local_port=port or 0, path_prefix=prefix)  # bound first: a busy --port fails early
    old_handler = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    tb = None
    try:
        remote = connect(30)
        tb = RemoteTensorBoard(remote, layout.python(config), logdir, layout.workspace, path_prefix=prefix)
        tb.preflight()
        if not forward.forwarding_allowed():  # asked before TensorBoard starts, not after
            raise UsageError(f"{remote.host.host} refuses SSH port forwarding: allow it in the host's sshd_config "
                             f"(AllowTcpForwarding yes, or local) and restart sshd there")
        print(f"starting TensorBoard on {remote.host.host} for {what} ({logdir})", file=sys.stderr)
        forward.remote_port = tb.start()
        try:
            forward.check()
        except ForwardRefused as exc:
            raise UsageError(f"{remote.host.host} refuses SSH port forwarding ({exc}): allow it in the host's "
                             f"sshd_config (AllowTcpForwarding yes or local)") from None
        forward.start()
        print(f"TensorBoard: {forward.url}", flush=True)
        print(f"-- forwarded through SSH to 127.0.0.1:{forward.remote_port} on {remote.host.host}; Ctrl-C stops "
              f"TensorBoard there, never the run", file=sys.stderr, flush=True)
        while True:
            time.sleep(0.5)
            tb.drain()
            if tb.alive:
                continue
            transport = remote.conn.transport if remote.conn else None
            if transport is not None and transport.is_active():
                tb.drain()
                raise UsageError(f"TensorBoard on {remote.host.host} exited: {explain(chr(10).join(tb.output))}")
            print(f"-- connection to {remote.host.host} lost; reconnecting (the run goes on)", file=sys.stderr,
                  flush=True)
            remote.close()
            remote.connect(retry_for=RECONNECT_FOR)
            forward.remote_port = tb.start()
            print(f"-- reconnected; TensorBoard is back at {forward.url}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("\n-- stopping TensorBoard on the host; the run keeps going", file=sys.stderr)
        return 0
    finally:
        forward.stop()
        if tb is not None:
            tb.stop()
        if remote is not None:
            remote.close()
        signal.signal(signal.SIGTERM, old_handler)
