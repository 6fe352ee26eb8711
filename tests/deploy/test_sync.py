"""`sync` with real rsync over the fixture's sshd: incremental, resumable, quoted, remote downloads."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy.conftest import tiny_dataset
from tests.trainer.tiny_cache import make_cache
from tests.trainer.videos import indexed_frames, write_opencv


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_dataset(root):
    (root / "Violence").mkdir(parents=True)
    (root / "NonViolence").mkdir(parents=True)
    for i in range(4):
        (root / "Violence" / f"fight {i} 'x'.mp4").write_bytes(os.urandom(30_000))
        (root / "NonViolence" / f"walk_{i}$(id).mp4").write_bytes(os.urandom(30_000))


def test_second_sync_of_unchanged_dataset_sends_almost_nothing(project):
    make_dataset(project.cwd / "dataset")
    assert project.run("up").returncode == 0
    first = project.run("sync")
    assert first.returncode == 0, first.stderr
    ws = project.workspace
    for f in (project.cwd / "dataset").rglob("*.mp4"):
        assert digest(ws / "dataset" / f.relative_to(project.cwd / "dataset")) == digest(f)
    assert (ws / "app" / "trainer" / "cli.py").is_file() and (ws / "app" / "pyproject.toml").is_file()
    assert not (ws / "app" / ".venv").exists() and not (ws / "app" / ".git").exists()
    assert not list((ws / "app").rglob("__pycache__"))
    sent_first = project.state()["last_sync"]["bytes_sent"]
    assert sent_first > 240_000  # the 8 x 30 kB of random videos went over

    second = project.run("sync")
    assert second.returncode == 0, second.stderr
    last = project.state()["last_sync"]
    assert last["bytes_sent"] < 4_000, second.stdout  # file lists only
    assert last["parts"]["dataset"] < 1_500
    assert f"{last['bytes_sent']} bytes sent" in second.stdout

    # a video removed here is removed there (the host trains on exactly this dataset)
    gone = next((project.cwd / "dataset" / "Violence").glob("*.mp4"))
    gone.unlink()
    assert project.run("sync").returncode == 0
    assert not (ws / "dataset" / "Violence" / gone.name).exists()


@pytest.mark.slow
def test_interrupted_sync_resumes_from_the_partial_file(project):
    big = project.cwd / "dataset" / "Violence" / "big.mp4"
    big.parent.mkdir(parents=True)
    big.write_bytes(os.urandom(6_000_000))
    assert project.run("up").returncode == 0
    assert project.run("sync", "--code-only").returncode == 0  # code first, so the dataset is what we cut

    proc = project.popen("sync", "--bwlimit", "1000")  # ~1 MB/s: 6 s for the whole file
    partial = project.workspace / "dataset" / "Violence" / ".rsync-partial" / "big.mp4"
    deadline = time.monotonic() + 30
    tmp_files = []
    while time.monotonic() < deadline:
        tmp_files = [p for p in (project.workspace / "dataset" / "Violence").glob(".big.mp4.*")]
        if tmp_files and tmp_files[0].stat().st_size > 1_500_000:
            break
        time.sleep(0.1)
    assert tmp_files, "the transfer never started"
    os.killpg(proc.pid, signal.SIGKILL)  # the laptop's side dies mid-file, no cleanup of any kind
    proc.wait(10)
    deadline = time.monotonic() + 10  # the receiver moves its temp file to the partial dir as it exits
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert partial.exists() and 1_000_000 < partial.stat().st_size < 6_000_000

    r = project.run("sync")
    assert r.returncode == 0, r.stderr
    assert digest(project.workspace / "dataset" / "Violence" / "big.mp4") == digest(big)
    sent = project.state()["last_sync"]["parts"]["dataset"]
    assert sent < 6_000_000 - 900_000, f"resumed sync re-sent {sent} bytes"
    assert not partial.exists()


def test_missing_local_rsync_is_one_line(project, tmp_path):
    assert project.run("up").returncode == 0
    bin_dir = tmp_path / "bin-without-rsync"
    bin_dir.mkdir()
    for tool in ("ssh",):
        os.symlink(f"/usr/bin/{tool}", bin_dir / tool)
    r = project.run("sync", env={"PATH": str(bin_dir)})
    assert r.returncode == 2
    assert "rsync is not installed on this machine" in r.stderr.strip().splitlines()[-1]


# -- datasets the host downloads itself ------------------------------------------------
SECRET = "s3cr3t-token-never-on-disk"


def tar_gz_of_dataset() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for cls in ("Violence", "NonViolence"):
            for i in range(3):
                data = f"{cls} video {i}".encode() * 100
                info = tarfile.TarInfo(f"real life violence/{cls}/{cls[0]}_{i}.mp4")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def archive_server():
    """127.0.0.1 HTTP server: /data.tar.gz needs the bearer token (Kaggle: test_dataset_download.py)."""
    seen = []
    bodies = {"/data.tar.gz?sig=abc": (f"Bearer {SECRET}", tar_gz_of_dataset())}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            want = bodies.get(self.path)
            if want is None:
                self.send_error(404)
            elif self.headers.get("Authorization") != want[0]:
                self.send_error(401)
            else:
                self.send_response(200)
                self.send_header("Content-Length", str(len(want[1])))
                self.end_headers()
                self.wfile.write(want[1])

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.seen = seen
    yield server
    server.shutdown()


def assert_secret_nowhere(project, tmp_path, secret: str, *outputs: str):
    for text in outputs:
        assert secret not in text
    for root in (project.cwd, project.workspace, tmp_path):
        for f in root.rglob("*"):
            if f.is_file() and f.stat().st_size < 5_000_000:
                assert secret.encode() not in f.read_bytes(), f"secret written to {f}"


def test_host_downloads_an_https_archive_with_a_token_from_the_environment(project, archive_server, tmp_path):
    url = f"http://127.0.0.1:{archive_server.server_port}/data.tar.gz?sig=abc"
    project.write_config(dataset={"path": None, "url": url, "token_env": "DATASET_TOKEN"})
    assert project.run("up").returncode == 0
    r = project.run("sync", env={"DATASET_TOKEN": SECRET})
    assert r.returncode == 0, r.stderr
    ds = project.workspace / "dataset"
    assert sorted(p.name for p in ds.iterdir() if not p.name.startswith(".")) == ["NonViolence", "Violence"]
    assert (ds / "Violence" / "V_2.mp4").read_bytes() == b"Violence video 2" * 100
    assert "sig=abc" not in r.stdout + r.stderr  # a signed URL's query is a secret too
    assert_secret_nowhere(project, tmp_path, SECRET, r.stdout, r.stderr)

    again = project.run("sync", env={"DATASET_TOKEN": SECRET})
    assert again.returncode == 0 and "already downloaded" in again.stdout + again.stderr
    assert len(archive_server.seen) == 1

    wrong = project.run("sync", env={"DATASET_TOKEN": "nope"})  # cached: no request needed, still fine
    assert wrong.returncode == 0
    project.write_config(dataset={"url": url.replace("sig=abc", "sig=other")})
    bad = project.run("sync", env={"DATASET_TOKEN": "nope"})
    assert bad.returncode == 2 and "HTTP 404" in bad.stdout + bad.stderr


# A pyproject whose build backend lives in the tree and whose extras pull nothing: pip
# builds and installs it without any index, so auto-venv is exercised offline.
TINY_PYPROJECT = """
[build-system]
requires = []
build-backend = "tiny_backend"
backend-path = ["."]

[project]
name = "tiny-app"
version = "0.1"

[project.optional-dependencies]
train = []
cpu = []
gpu = []
"""

TINY_BACKEND = '''
import base64, hashlib, zipfile

def _record(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "tiny_app-0.1-py3-none-any.whl"
    files = {"tiny_app_marker.py": b"BUILT = True\\n",
             "tiny_app-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\\nName: tiny-app\\nVersion: 0.1\\n"
                                                b"Provides-Extra: train\\nProvides-Extra: cpu\\nProvides-Extra: gpu\\n",
             "tiny_app-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\\nGenerator: tiny\\nRoot-Is-Purelib: true\\n"
                                             b"Tag: py3-none-any\\n"}
    record = [_record(k, v) for k, v in files.items()] + ["tiny_app-0.1.dist-info/RECORD,,"]
    with zipfile.ZipFile(f"{wheel_directory}/{name}", "w") as zf:
        for k, v in files.items():
            zf.writestr(k, v)
        zf.writestr("tiny_app-0.1.dist-info/RECORD", "\\n".join(record) + "\\n")
    return name
'''


@pytest.mark.slow
def test_auto_venv_builds_a_virtualenv_from_pyproject_once(project):
    from deploy.host.layout import Layout
    from deploy.host.remote import Remote
    from deploy.providers.base import Host
    from deploy.sync import ensure_venv

    project.write_config(remote={"python": "auto-venv"})
    assert project.run("up").returncode == 0
    layout = Layout(project.state()["workspace"])
    app = project.workspace / "app"
    app.mkdir(parents=True)
    (app / "pyproject.toml").write_text(TINY_PYPROJECT)
    (app / "tiny_backend.py").write_text(TINY_BACKEND)
    remote = Remote(Host(**project.state()["host"]), project.cwd / ".deploy" / "known_hosts").connect()
    try:
        ensure_venv(remote, layout)
        venv_python = project.workspace / "venv" / "bin" / "python"
        assert layout.python(project.config) == str(venv_python)
        r = subprocess.run([str(venv_python), "-c", "import tiny_app_marker; print(tiny_app_marker.BUILT)"],
                           capture_output=True, text=True)
        assert r.stdout.strip() == "True", r.stderr
        stamp = (project.workspace / "venv" / ".deploy-stamp").read_text()
        assert stamp.split()[1] in ("train,cpu", "train,gpu")
        mtime = (project.workspace / "venv" / ".deploy-stamp").stat().st_mtime
        ensure_venv(remote, layout)  # unchanged pyproject: nothing rebuilt
        assert (project.workspace / "venv" / ".deploy-stamp").stat().st_mtime == mtime
    finally:
        remote.close()


def test_a_dataset_bigger_than_the_remote_disk_is_refused_before_sending(project):
    project.workspace.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(project.workspace)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        big = project.cwd / "dataset" / "Violence" / "big.mp4"
        big.parent.mkdir(parents=True)
        big.write_bytes(os.urandom(3_000_000))
        assert project.run("up").returncode == 0
        r = project.run("sync")
        assert r.returncode == 2
        line = r.stderr.strip().splitlines()[-1]
        assert "needs 2.9 MB" in line and "free" in line and "larger disk" in line
        assert not (project.workspace / "dataset" / "Violence").exists()  # nothing half-sent
    finally:
        subprocess.run(["umount", str(project.workspace)], capture_output=True)


# -- guards against deleting the host's data ---------------------------------------------
def test_an_empty_or_mostly_missing_dataset_never_empties_the_hosts_copy(project):
    shutil.rmtree(project.cwd / "dataset")
    make_dataset(project.cwd / "dataset")
    tiny_dataset(project.cwd / "dataset")  # + one real video per class: the dataset scan accepts it
    assert project.run("up").returncode == 0
    assert project.run("sync").returncode == 0
    remote = project.workspace / "dataset"
    before = sorted(p.relative_to(remote) for p in remote.rglob("*.mp4"))
    assert len(before) == 10

    # an unmounted external drive: the folder is there, empty. The dataset scan refuses it before
    # anything is sent; the host's copy stays
    for f in (project.cwd / "dataset").rglob("*.mp4"):
        f.unlink()
    r = project.run("sync")
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "no video files" in line and "nothing was sent" in line and "Traceback" not in r.stderr
    assert sorted(p.relative_to(remote) for p in remote.rglob("*.mp4")) == before

    # the wrong folder (videos the scan accepts): most of the host's files would go
    write_opencv(project.cwd / "dataset" / "Violence" / "other_v.mp4", indexed_frames(6))
    write_opencv(project.cwd / "dataset" / "NonViolence" / "other_n.mp4", indexed_frames(7))
    r = project.run("sync")
    assert r.returncode == 2 and "would delete 10 of the 10 file(s)" in r.stderr, r.stderr
    assert sorted(p.relative_to(remote) for p in remote.rglob("*.mp4")) == before

    # asked for explicitly: the mirror happens
    r = project.run("sync", "--delete-remote")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in remote.rglob("*.mp4")) == ["other_n.mp4", "other_v.mp4"]


def test_the_feature_cache_sync_never_deletes_what_the_host_extracted(project):
    cache = make_cache(project.cwd / "cache", {"train": 2, "val": 2})  # the demo config's feature settings
    (cache / "features" / "a.npy").write_bytes(b"x" * 100)
    project.write_config(dataset={"path": None, "cache": str(cache)})
    assert project.run("up").returncode == 0
    assert project.run("sync").returncode == 0
    extracted_there = project.workspace / "cache" / "features" / "host-only.npy"
    extracted_there.write_bytes(b"extracted on the host")
    assert project.run("sync").returncode == 0
    assert extracted_there.read_bytes() == b"extracted on the host"
    assert (project.workspace / "cache" / "features" / "a.npy").is_file()


# -- a live run is never pulled out from under -------------------------------------------
def test_sync_refuses_to_replace_code_or_venv_under_a_live_run(project):
    """A run is alive on the host (deploy/host/shipped/runstate.py's rule): sync would --delete its code and may
    rebuild (rm -rf) its venv; it refuses before changing anything and says how to stop the run."""
    from deploy.host.shipped.runstate import RUN_MARK

    make_dataset(project.cwd / "dataset")
    assert project.run("up").returncode == 0
    assert project.run("sync").returncode == 0
    stale = project.workspace / "app" / "trainer" / "imported_later.py"  # gone here: --delete would remove it
    stale.write_text("# a module the running trainer imports at its end\n")
    venv = project.workspace / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".deploy-stamp").write_text("an older stamp\n")
    run_dir = project.remote_run_dir("r1")
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen(["sh", "-c", "sleep 120", str(run_dir / "run.sh"), RUN_MARK], start_new_session=True)
    (run_dir / "pid").write_text(f"{holder.pid}\n")
    try:
        for python in (None, "auto-venv"):
            if python:
                project.write_config(remote={"python": python})
            r = project.run("sync")
            assert r.returncode == 2, r.stdout + r.stderr
            line = r.stderr.strip().splitlines()[-1]
            assert "run r1 is running" in line and "python -m deploy stop" in line, line
            assert stale.is_file(), "the code under the live run was --deleted"
            assert (venv / ".deploy-stamp").read_text() == "an older stamp\n" and (venv / "bin").is_dir()
    finally:
        holder.kill()
        holder.wait()
    project.write_config(remote={"python": sys.executable})
    r = project.run("sync")  # the run is over: sync goes ahead
    assert r.returncode == 0, r.stderr
    assert not stale.exists()
