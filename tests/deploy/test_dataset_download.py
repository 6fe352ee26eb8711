"""The host's own dataset download (deploy/host/shipped/download_dataset.py, started by `sync` over the real
sshd), against archives and servers that misbehave on purpose: links in archives (with and
without tarfile.data_filter, i.e. Debian 12's Python 3.11.2), resumes that must not splice two
files, 416s, redirects, an archive that cannot be unpacked; and Kaggle, whose key never leaves
this machine (a local fake of its download endpoint answers as Kaggle's does: a redirect to a
signed storage URL)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import secrets
import stat
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from deploy.host.shipped import download_dataset


# -- archives ----------------------------------------------------------------------------
def tar_bytes(members, mode="w:gz") -> bytes:
    """members: (TarInfo, data or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def reg(name, data: bytes):
    return tarfile.TarInfo(name), data


def link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def dataset_tar(tag: str = "v1", size: int = 300) -> bytes:
    return tar_bytes([reg(f"set/{cls}/{cls[0]}_{i}.mp4", f"{tag} {cls} {i} ".encode() * size)
                      for cls in ("Violence", "NonViolence") for i in range(3)])


def symlink_attack(outside) -> bytes:
    """The issue's attack: `data/link -> <outside>`, then `data/link/authorized_keys` through it."""
    return tar_bytes([reg("data/Violence/v.mp4", b"video"), link("data/link", str(outside)),
                      reg("data/link/authorized_keys", b"ssh-ed25519 AAAA attacker")])


def relative_symlink_attack() -> bytes:
    return tar_bytes([link("data/up", "../../../../../../../../../../../../tmp"),
                      reg("data/up/evil-from-tar", b"x")])


def zip_with_symlink(target: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("data/link")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
        zf.writestr("data/link/evil", b"x")
    return buf.getvalue()


def zip_with_dotdot() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data/ok.mp4", b"ok")
        zf.writestr("../../escaped.mp4", b"x")
    return buf.getvalue()


# -- unpacking, in this process, with and without tarfile.data_filter ----------------------
@pytest.fixture(params=["this python", "no data_filter (3.11.2)"])
def python_kind(request, monkeypatch):
    if request.param != "this python":
        for attr in ("data_filter", "tar_filter", "fully_trusted_filter"):
            monkeypatch.delattr(tarfile, attr, raising=False)
        assert not hasattr(tarfile, "data_filter")
    return request.param


@pytest.mark.parametrize("attack", ["symlink", "relative symlink", "hard link", "fifo", "device", "dotdot",
                                   "absolute", "zip symlink", "zip dotdot"])
def test_an_archive_with_links_or_escaping_names_is_refused_and_writes_nothing_outside(tmp_path, python_kind,
                                                                                         attack):
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = tmp_path / "a.part"
    data = {
        "symlink": lambda: symlink_attack(outside),
        "relative symlink": relative_symlink_attack,
        "hard link": lambda: tar_bytes([link("data/pw", str(outside / "secret"), tarfile.LNKTYPE)]),
        "fifo": lambda: tar_bytes([(lambda i: (setattr(i, "type", tarfile.FIFOTYPE), (i, None))[1])(
            tarfile.TarInfo("data/fifo"))]),
        "device": lambda: tar_bytes([(lambda i: (setattr(i, "type", tarfile.CHRTYPE), (i, None))[1])(
            tarfile.TarInfo("data/null"))]),
        "dotdot": lambda: tar_bytes([reg("data/../../escaped", b"x")]),
        "absolute": lambda: tar_bytes([reg(str(outside / "abs"), b"x")]),
        "zip symlink": lambda: zip_with_symlink(str(outside)),
        "zip dotdot": zip_with_dotdot,
    }[attack]()
    archive.write_bytes(data)
    (outside / "secret").write_text("the host's own file")
    into = tmp_path / "ds" / "unpacked"
    with pytest.raises(download_dataset.Refused) as exc:
        download_dataset.unpack(str(archive), str(into))
    line = str(exc.value)
    assert "\n" not in line and ("link" in line or "outside" in line or "FIFO" in line or "device" in line), line
    assert sorted(p.name for p in outside.iterdir()) == ["secret"], "written outside the dataset folder"
    assert not [p for p in into.rglob("*") if p.is_symlink()]
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped.mp4").exists()


def test_a_plain_archive_unpacks_the_same_with_and_without_data_filter(tmp_path, python_kind):
    archive = tmp_path / "a.part"
    archive.write_bytes(dataset_tar())
    download_dataset.unpack(str(archive), str(tmp_path / "out"))
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.mp4"))
    assert files == sorted(f"set/{c}/{c[0]}_{i}.mp4" for c in ("Violence", "NonViolence") for i in range(3))
    assert (tmp_path / "out/set/Violence/V_2.mp4").read_bytes() == b"v1 Violence 2 " * 300


# -- a file server that speaks Range, If-Range, ETag, redirects ------------------------------
def serve(handler) -> ThreadingHTTPServer:
    """`handler` on 127.0.0.1:<free port>, in a thread, without request logging."""
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Files:
    """127.0.0.1 HTTP server. /f/<name>: the body, with ETag and Last-Modified; Range and If-Range
    as RFC 9110 says (If-Range that does not match -> the whole file, 200). /r/<name>: a 302 to
    /f/<name>. `cut`: bytes after which the next response's connection is dropped."""

    def __init__(self):
        self.bodies: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.seen: list[tuple[str, dict]] = []
        self.sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.seen.append((self.path, dict(self.headers)))
                path = urlsplit(self.path).path
                if path.startswith("/r/"):
                    self.send_response(302)
                    self.send_header("Location", "/f/" + path[3:])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = outer.bodies.get(path[3:]) if path.startswith("/f/") else None
                if body is None:
                    self.send_error(404)
                    return
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                start = 0
                rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
                if rng and (if_range is None or if_range == etag):
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                cut = outer.cut.pop(path[3:], None)
                if cut is not None:
                    chunk = chunk[:cut]
                    self.close_connection = True
                self.wfile.write(chunk)
                outer.sent += len(chunk)

        self.server = serve(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def files():
    f = Files()
    yield f
    f.server.shutdown()


def sync_from(project, url):
    project.write_config(dataset={"path": None, "url": url})
    return project.run("sync")


def host_dataset(project) -> dict:
    ds = project.workspace / "dataset"
    return {p.relative_to(ds).as_posix(): p.read_bytes() for p in ds.rglob("*.mp4")}


def expected(tar: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        return {m.name.split("/", 1)[1]: tf.extractfile(m).read() for m in tf if m.isreg()}


def test_a_resume_after_the_file_changed_on_the_server_never_splices_two_files(project, files):
    assert project.run("up").returncode == 0
    v1, v2 = dataset_tar("v1", 3000), dataset_tar("v2", 3000)
    files.bodies["data.tar.gz"] = v1
    files.cut["data.tar.gz"] = len(v1) // 2
    first = sync_from(project, files.url + "/f/data.tar.gz")
    assert first.returncode == 2 and "interrupted" in first.stdout + first.stderr
    files.bodies["data.tar.gz"] = v2  # the server's file changed meanwhile
    r = project.run("sync")
    assert r.returncode == 0, r.stdout + r.stderr
    assert host_dataset(project) == expected(v2)
    assert files.seen[-1][1].get("If-Range"), "a resume without If-Range"


def test_a_resume_continues_where_it_stopped_and_keeps_range_across_a_redirect(project, files):
    assert project.run("up").returncode == 0
    body = dataset_tar("v1", 20000)
    files.bodies["data.tar.gz"] = body
    files.cut["data.tar.gz"] = len(body) // 2
    assert sync_from(project, files.url + "/r/data.tar.gz").returncode == 2
    files.sent = 0
    r = project.run("sync")
    assert r.returncode == 0, r.stdout + r.stderr
    assert host_dataset(project) == expected(body)
    after_redirect = [h for p, h in files.seen if p.startswith("/f/")][-1]
    assert after_redirect.get("Range") == f"bytes={len(body) // 2}-", after_redirect
    assert files.sent <= len(body) - len(body) // 2, f"re-sent {files.sent} of {len(body)} bytes"


def test_a_416_is_complete_only_when_the_size_is_known_to_match(project, files):
    """A partial file at least as long as the server's (the file shrank, or a stale one): 416 means
    'not this file', never 'complete'."""
    assert project.run("up").returncode == 0
    small = dataset_tar("new", 10)
    files.bodies["data.tar.gz"] = small
    url = files.url + "/f/data.tar.gz"
    part = download_dataset.part_path(str(project.workspace / ".download"), url)
    os.makedirs(os.path.dirname(part))
    stale = dataset_tar("stale", 5000)  # longer than the new file: the resume asks for a range past its end
    assert len(stale) > len(small)
    with open(part, "wb") as fh:
        fh.write(stale)
    etag = '"' + hashlib.sha256(small).hexdigest()[:16] + '"'  # the server's current ETag, as a race would see it
    with open(part + ".json", "w") as fh:
        fh.write('{"etag": %s, "last_modified": null, "total": null}' % repr(etag).replace("'", '"'))
    r = sync_from(project, url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert host_dataset(project) == expected(small)


def test_an_archive_that_does_not_unpack_is_deleted_so_the_next_sync_downloads_it_again(project, files):
    assert project.run("up").returncode == 0
    files.bodies["data.tar.gz"] = b"<html>a login page, not an archive</html>" * 50
    url = files.url + "/f/data.tar.gz"
    r = sync_from(project, url)
    assert r.returncode == 2
    assert "neither a zip nor a tar" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr
    assert not os.path.exists(download_dataset.part_path(str(project.workspace / ".download"), url))
    files.bodies["data.tar.gz"] = body = dataset_tar()
    r = project.run("sync")
    assert r.returncode == 0, r.stdout + r.stderr
    assert host_dataset(project) == expected(body)


HIDE_DATA_FILTER = "import tarfile\nfor a in ('data_filter', 'tar_filter', 'fully_trusted_filter'):\n" \
                   "    if hasattr(tarfile, a): delattr(tarfile, a)\n"


@pytest.mark.parametrize("host_python", ["this python", "no data_filter (3.11.2)"])
def test_the_tar_attack_through_sync_writes_nothing_outside_and_is_one_line(project, files, tmp_path, host_python):
    """On the real sshd, the host's interpreter as it is, or as Debian 12's 3.11.2 (no data_filter:
    a sitecustomize on the host removes it before our program runs)."""
    if host_python != "this python":
        site = tmp_path / "site 3.11.2"
        site.mkdir()
        (site / "sitecustomize.py").write_text(HIDE_DATA_FILTER)
        wrapper = tmp_path / "python3.11.2"
        wrapper.write_text(f"#!/bin/sh\nPYTHONPATH='{site}' exec '{sys.executable}' \"$@\"\n")
        wrapper.chmod(0o755)
        project.write_config(remote={"python": str(wrapper)})
        probe = os.popen(f"'{wrapper}' -c 'import tarfile; print(hasattr(tarfile, \"data_filter\"))'").read()
        assert probe.strip() == "False"
    outside = tmp_path / "outside"
    outside.mkdir()
    assert project.run("up").returncode == 0
    files.bodies["evil.tar.gz"] = symlink_attack(outside)
    url = files.url + "/f/evil.tar.gz"
    r = sync_from(project, url)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert list(outside.iterdir()) == [], "the archive wrote outside the dataset folder"
    assert "Traceback" not in out
    line = next(ln for ln in out.splitlines() if "refusing the archive" in ln)
    assert "data/link" in line and "symbolic link" in line, line
    assert not os.path.exists(download_dataset.part_path(str(project.workspace / ".download"), url))
    assert not (project.workspace / "dataset").exists()


# -- Kaggle --------------------------------------------------------------------------------
KAGGLE_USER, KAGGLE_KEY = "alice", "kaggle-key-never-on-the-host"


def kaggle_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for cls in ("fight", "nofight"):
            zf.writestr(f"{cls}/clip.mp4", cls.encode() * 500)
    return buf.getvalue()


class FakeKaggle:
    """Kaggle's dataset download, as its clients meet it: `GET /api/v1/datasets/download/{owner}/{slug}`
    with HTTP Basic credentials answers 302 to a signed Cloud Storage URL
    (/kaggle-data-sets/<id>/<version>/compressed/<file>.zip?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=
    ...&X-Goog-Date=...&X-Goog-Expires=259200&X-Goog-SignedHeaders=host&X-Goog-Signature=<hex>, the shape
    of the links Kaggle hands out), a new signature each time; the storage answers a valid signature
    without credentials (and, like GCS, refuses a request that also carries an Authorization header);
    wrong credentials get 401, an unknown dataset 404."""

    def __init__(self, datasets: dict[str, bytes]):
        self.datasets = datasets
        self.signatures: set[str] = set()
        self.api_requests: list[dict] = []
        self.storage_requests: list[dict] = []
        auth = "Basic " + base64.b64encode(f"{KAGGLE_USER}:{KAGGLE_KEY}".encode()).decode()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                if parts.path.startswith("/api/v1/datasets/download/"):
                    outer.api_requests.append(dict(self.headers))
                    slug = parts.path[len("/api/v1/datasets/download/"):]
                    if self.headers.get("Authorization") != auth:
                        return self.send_error(401, "Unauthorized")
                    if slug not in outer.datasets:
                        return self.send_error(404, "Not Found")
                    sig = secrets.token_hex(32)
                    outer.signatures.add(sig)
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/kaggle-data-sets/"
                                                 f"{abs(hash(slug)) % 10**6}/1/compressed/archive.zip?"
                                                 f"X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=gcp-kaggle-com"
                                                 f"%2F20260101%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date=20260101T000000Z"
                                                 f"&X-Goog-Expires=259200&X-Goog-SignedHeaders=host&X-Goog-Signature="
                                                 f"{sig}&slug={slug}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if parts.path.startswith("/kaggle-data-sets/"):
                    q = parse_qs(parts.query)
                    outer.storage_requests.append({"headers": dict(self.headers), "query": q})
                    if self.headers.get("Authorization"):
                        return self.send_error(400, "Cannot use multiple authentication methods")
                    if q.get("X-Goog-Signature", [""])[0] not in outer.signatures:
                        return self.send_error(403, "SignatureDoesNotMatch")
                    body = outer.datasets[q["slug"][0]]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("ETag", '"' + hashlib.md5(body).hexdigest() + '"')
                    self.end_headers()
                    self.wfile.write(body)
                    return None
                return self.send_error(404)

        self.server = serve(Handler)
        self.api = f"http://127.0.0.1:{self.server.server_port}/api/v1"


@pytest.fixture
def fake_kaggle():
    k = FakeKaggle({"owner/violence-set": kaggle_zip()})
    yield k
    k.server.shutdown()


def test_kaggle_the_host_gets_a_signed_link_and_never_the_key(project, fake_kaggle, tmp_path):
    # the host's interpreter records what it reads on stdin: the one channel credentials could use
    seen_stdin = tmp_path / "host stdin"
    wrapper = tmp_path / "recording python"
    wrapper.write_text(f"#!/bin/sh\ntee -a '{seen_stdin}' | '{sys.executable}' \"$@\"\n")
    wrapper.chmod(0o755)
    assert project.run("up").returncode == 0  # (up's probe runs the interpreter with no stdin to end tee)
    project.write_config(dataset={"path": None, "kaggle": "owner/violence-set"}, remote={"python": str(wrapper)})
    env = {"DEPLOY_KAGGLE_API": fake_kaggle.api, "KAGGLE_USERNAME": KAGGLE_USER, "KAGGLE_KEY": KAGGLE_KEY,
           "HOME": str(tmp_path)}
    r = project.run("sync", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (project.workspace / "dataset" / "fight" / "clip.mp4").read_bytes() == b"fight" * 500
    token = base64.b64encode(f"{KAGGLE_USER}:{KAGGLE_KEY}".encode()).decode()
    sent = seen_stdin.read_text()
    assert "X-Goog-Signature=" in sent  # the signed link went to the host...
    assert KAGGLE_KEY not in sent and token not in sent and "Authorization" not in sent  # ...and nothing else
    assert len(fake_kaggle.api_requests) == 1 and len(fake_kaggle.storage_requests) == 1
    assert "Authorization" not in fake_kaggle.storage_requests[0]["headers"]
    for text in (r.stdout, r.stderr):
        assert KAGGLE_KEY not in text and token not in text and "X-Goog-Signature" not in text
    for f in list(project.workspace.rglob("*")) + list((project.cwd / ".deploy").rglob("*")):
        if f.is_file():
            assert token.encode() not in f.read_bytes() and KAGGLE_KEY.encode() not in f.read_bytes(), f

    # a second sync: the marker knows the dataset although the signed link is a new one
    again = project.run("sync", env=env)
    assert again.returncode == 0 and "already downloaded" in again.stdout + again.stderr
    assert len(fake_kaggle.storage_requests) == 1

    # the usual mistakes are one line each, on this machine, before the host does anything
    bad = project.run("sync", env={**env, "KAGGLE_KEY": "wrong"})
    assert bad.returncode == 2 and "refused the credentials" in bad.stderr and "HTTP 401" in bad.stderr
    project.write_config(dataset={"kaggle": "owner/no-such-set"})
    missing = project.run("sync", env=env)
    assert missing.returncode == 2 and "no dataset owner/no-such-set" in missing.stderr
    none = project.run("sync", env={"HOME": str(tmp_path), "KAGGLE_USERNAME": "", "KAGGLE_KEY": "",
                                    "DEPLOY_KAGGLE_API": fake_kaggle.api})
    assert none.returncode == 2 and "KAGGLE_USERNAME" in none.stderr
