"""A real Docker registry on 127.0.0.1 for tests: Debian's `docker-registry` (distribution 2.8),
started with a config written here, images pushed through its HTTP API.

- `RegistryServer(tmp, auth=None|"basic"|"token", tls=...)`: plain HTTP and no auth (a local
  registry as Docker users run one), HTTPS + htpasswd (a private registry), or HTTPS + token auth
  (the Docker Hub / GHCR flow: a 401 with `Bearer realm=...,service=...,scope=...`, a token from
  the realm). The token server is `TokenServer` below: it signs JWTs the registry verifies
  against the certificate in `auth.token.rootcertbundle` (distribution's token auth).
- `push_image()`: blob uploads (POST /v2/<repo>/blobs/uploads/, then PUT ?digest=) and a manifest
  PUT, as `docker push` does; an OCI index over linux/amd64 + linux/arm64 when asked.

Everything binds 127.0.0.1; TLS uses a self-signed certificate (SAN 127.0.0.1, localhost) that
the tests trust through REQUESTS_CA_BUNDLE.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import secrets
import socket
import ssl
import subprocess
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from tests.deploy.background_http import serve, shutdown

REGISTRY_BIN = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed CA-capable certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=True, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256()))
    cert_pem, key_pem = folder / "cert.pem", folder / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    return cert_pem, key_pem


class TokenServer:
    """The realm of a token-auth registry: GET ?service=&scope=repository:NAME:pull -> {"token"}.

    Anonymous pulls are granted for every repository except `private`, which needs the Basic
    user/password given here (as GHCR answers a private package). Requests are recorded.
    """

    def __init__(self, cert: Path, key: Path, service: str, issuer: str, private: set[str], login: tuple[str, str]):
        self.cert, self.key, self.service, self.issuer = cert, key, service, issuer
        self.private, self.login = private, login
        self.requests: list[dict] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}/token"

    def _jwt(self, access: list[dict], subject: str) -> str:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        der = x509.load_pem_x509_certificate(self.cert.read_bytes()).public_bytes(serialization.Encoding.DER)
        header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + 300, "nbf": now - 30,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}".encode()
        key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        return signing_input.decode() + "." + b64url(key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()))

    def start(self) -> "TokenServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                q = parse_qs(urlsplit(self.path).query)
                auth = self.headers.get("Authorization") or ""
                user = ""
                if auth.startswith("Basic "):
                    u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                    if (u, p) != server.login:
                        self.send_response(401)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    user = u
                access = []
                for scope in q.get("scope", []):
                    kind, _, rest = scope.partition(":")
                    name, _, actions = rest.rpartition(":")
                    if kind == "repository" and (name not in server.private or user):
                        access.append({"type": "repository", "name": name,
                                       "actions": [a for a in actions.split(",") if a == "pull"]})
                server.requests.append({"scope": q.get("scope", []), "service": q.get("service"), "user": user})
                token = server._jwt(access, user)
                body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        http.socket = ctx.wrap_socket(http.socket, server_side=True)
        self._server = serve(http)
        return self

    def stop(self) -> None:
        shutdown(self._server)


class RegistryServer:
    """`docker-registry serve` on 127.0.0.1:<random port> over a storage folder (which several may share)."""

    def __init__(self, folder: Path, storage: Path | None = None, auth: str | None = None, tls: bool = False,
                 login: tuple[str, str] = ("reader", "s3cret-pass"), private: set[str] | None = None):
        self.folder, self.auth, self.tls, self.login = folder, auth, tls or auth is not None, login
        self.storage = storage or folder / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.token: TokenServer | None = None
        self.cert = self.key = None
        self.private = private or set()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def _config(self) -> str:
        lines = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true", "storage:",
                 "  filesystem:", f"    rootdirectory: {self.storage}", "  delete:", "    enabled: true",
                 "http:", f"  addr: {self.host}", "  secret: test-only-secret"]
        if self.tls:
            lines += ["  tls:", f"    certificate: {self.cert}", f"    key: {self.key}"]
        if self.auth == "basic":
            import bcrypt

            htpasswd = self.folder / "htpasswd"
            htpasswd.write_text(f"{self.login[0]}:{bcrypt.hashpw(self.login[1].encode(), bcrypt.gensalt(5)).decode()}\n")
            lines += ["auth:", "  htpasswd:", "    realm: test-registry", f"    path: {htpasswd}"]
        elif self.auth == "token":
            lines += ["auth:", "  token:", f"    realm: {self.token.url}", "    service: test-registry",
                      "    issuer: test-token-issuer", f"    rootcertbundle: {self.cert}"]
        return "\n".join(lines) + "\n"

    def start(self) -> "RegistryServer":
        if self.tls:
            self.cert, self.key = make_cert(self.folder)
        if self.auth == "token":
            self.token = TokenServer(self.cert, self.key, "test-registry", "test-token-issuer", self.private,
                                     self.login).start()
        cfg = self.folder / "config.yml"
        cfg.write_text(self._config())
        self.log = open(self.folder / "registry.log", "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("docker-registry exited: " + (self.folder / "registry.log").read_text()[-2000:])
            try:
                requests.get(f"{self.url}/v2/", timeout=1, verify=str(self.cert) if self.tls else True)
                return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("docker-registry did not answer in 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.token is not None:
            self.token.stop()
        if getattr(self, "log", None):
            self.log.close()

    def env(self) -> dict:
        """What a client process needs to trust this registry's certificate."""
        return {"REQUESTS_CA_BUNDLE": str(self.cert)} if self.tls else {}


# -- pushing, as `docker push` does (to a registry without auth) --------------------------------------
def _put_blob(base: str, repo: str, data: bytes) -> str:
    d = digest(data)
    r = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=10)
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    loc = loc if loc.startswith("http") else base + loc
    r = requests.put(loc, params={"digest": d}, data=data, timeout=30,
                     headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return d


def _put_manifest(base: str, repo: str, ref: str, manifest: dict, media: str) -> str:
    body = json.dumps(manifest).encode()
    r = requests.put(f"{base}/v2/{repo}/manifests/{ref}", data=body, headers={"Content-Type": media}, timeout=30)
    assert r.status_code == 201, r.text
    return digest(body)


def push_image(base: str, repo: str, tag: str, layers: list[bytes], *, oci: bool = True, index: bool = False,
               arm_layers: list[bytes] | None = None) -> dict:
    """Push an image (its layers as given) and return {"manifest": digest, "layers": [(digest, size)]}."""
    def one(blobs: list[bytes], arch: str) -> tuple[str, dict, list]:
        config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": [digest(b) for b in blobs]}}).encode()
        cfg_digest = _put_blob(base, repo, config)
        media_layer = ("application/vnd.oci.image.layer.v1.tar+gzip" if oci
                       else "application/vnd.docker.image.rootfs.diff.tar.gzip")
        described = [{"mediaType": media_layer, "digest": _put_blob(base, repo, b), "size": len(b)} for b in blobs]
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json" if oci else
                               "application/vnd.docker.container.image.v1+json",
                               "digest": cfg_digest, "size": len(config)},
                    "layers": described}
        return cfg_digest, manifest, [(x["digest"], x["size"]) for x in described]

    _, amd, amd_layers = one(layers, "amd64")
    if not index:
        return {"manifest": _put_manifest(base, repo, tag, amd, amd["mediaType"]), "layers": amd_layers}
    _, arm, _ = one(arm_layers or [os.urandom(777)], "arm64")
    entries = []
    for m, arch in ((arm, "arm64"), (amd, "amd64")):  # amd64 second: a client must pick, not take the first
        d = _put_manifest(base, repo, digest(json.dumps(m).encode()), m, m["mediaType"])
        entries.append({"mediaType": m["mediaType"], "digest": d, "size": len(json.dumps(m).encode()),
                        "platform": {"architecture": arch, "os": "linux"}})
    idx = {"schemaVersion": 2, "mediaType": OCI_INDEX if oci else DOCKER_LIST, "manifests": entries}
    return {"manifest": _put_manifest(base, repo, tag, idx, idx["mediaType"]), "layers": amd_layers}
