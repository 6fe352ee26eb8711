"""A fake of the Vast.ai HTTP API on 127.0.0.1, for driving the real `vastai` SDK in tests.

It speaks the JSON the installed SDK (vastai 1.9.1, `vastai/api/*.py`) sends and reads:

- `POST /api/v0/bundles/`            offer search: `{field: {op: value}}` filters (eq, neq,
                                      gt, gte, lt, lte, in, notin), `order: [[field, asc|desc]]`,
                                      `type`, `limit`, `allocated_storage` -> `{"offers": [...]}`
- `PUT  /api/v0/asks/<offer>/`        create: the SDK's create payload -> `{"success", "new_contract",
                                      "instance_api_key"}`; 404/410 when the offer is gone
- `GET  /api/v1/instances/`          paginated list: `select_filters`, `order_by`, `limit`,
                                      `after_token` (JSON in the query string) -> `{"instances",
                                      "next_token", "total_instances"}`
- `GET  /api/v0/instances/<id>/`      `{"instances": row}` (null once destroyed)
- `PUT  /api/v0/instances/<id>/`      `{"state": "running"|"stopped"}` or `{"label": ...}`
- `DELETE /api/v0/instances/<id>/`    destroy
- `PUT  /api/v0/instances/request_logs/<id>/` -> `{"result_url"}`, fetched without auth
- `POST /api/v0/instances/<id>/ssh/`  attach a public key: appended to the test sshd's
                                      authorized_keys, so SSH only works once it is attached
- `GET|POST /api/v0/ssh/`             account keys

Every request needs `Authorization: Bearer <key>`. The user's key may do everything; an
instance's own key (`CONTAINER_API_KEY`, returned at create as `instance_api_key`) may only
read and stop/start that one instance, as on Vast.ai. Each request is logged with the key
kind that made it (`requests`), so tests can assert which key a component used.

Instances go null -> loading -> running on a clock (`loading_after`, `running_after` seconds
after create); an offer's `behaviour` can make its instance exit while loading or never
leave loading. A running instance's SSH endpoint is whatever `ssh_direct` / `ssh_proxy`
say: in the tests, the fixture's local OpenSSH server.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


# Offer fields the SDK's `offers_fields` knows, with plausible values for a 2 x RTX 5000 Ada box.
OFFER_DEFAULTS = {
    "gpu_name": "RTX 5000Ada",
    "num_gpus": 2,
    "gpu_ram": 32760,
    "gpu_total_ram": 65520,
    "gpu_arch": "nvidia",
    "compute_cap": 890,
    "cpu_cores": 32,
    "cpu_cores_effective": 16.0,
    "cpu_ram": 128000,
    "disk_space": 500.0,
    "disk_bw": 2000.0,
    "dph_base": 1.0,
    "storage_cost": 0.15,  # $/GB/month
    "inet_down": 900.0,
    "inet_up": 800.0,
    "inet_down_cost": 0.002,
    "inet_up_cost": 0.002,
    "reliability": 0.995,
    "reliability2": 0.995,
    "cuda_max_good": 12.4,
    "driver_version": "550.54.15",
    "direct_port_count": 20,
    "verification": "verified",
    "verified": True,
    "rentable": True,
    "rented": False,
    "external": False,
    "dlperf": 60.0,
    "total_flops": 130.0,
    "geolocation": "Sweden, SE",
    "hosting_type": 0,
    "min_bid": 0.4,
    "duration": 30 * 86400.0,
    "static_ip": True,
    "pci_gen": 4.0,
    "pcie_bw": 25.0,
}


def _matches(value, op: str, want) -> bool:
    if op == "eq":
        return value == want
    if op == "neq":
        return value != want
    if op in ("in", "notin"):
        inside = value in (want if isinstance(want, list) else [want])
        return inside if op == "in" else not inside
    if value is None:
        return False
    try:
        value, want = float(value), float(want)
    except (TypeError, ValueError):
        return False
    return {"gt": value > want, "gte": value >= want, "lt": value < want, "lte": value <= want}[op]


def _coerce(want):
    """The SDK's string queries send numbers as strings ("0.98"); compare them as numbers."""
    if isinstance(want, str):
        try:
            return float(want)
        except ValueError:
            return want
    return want


@dataclass
class FakeInstance:
    id: int
    offer: dict
    body: dict
    api_key: str
    created: float
    behaviour: str = "ok"          # ok | exit_while_loading | stuck_loading
    destroyed: bool = False
    stopped_at: float | None = None
    resumed_at: float | None = None
    outbid: bool = False
    attached_keys: list = field(default_factory=list)
    label: str | None = None
    foreign: bool = False          # pre-seeded by a test (the user's other instances)


class FakeVast:
    """The fake service. `start()` it, point the SDK's `server_url` at `.url`, `stop()` it."""

    def __init__(self, api_key: str | None = None, *, loading_after: float = 0.3,
                 running_after: float = 0.8, page_size_cap: int = 25):
        self.api_key = api_key or "user-" + secrets.token_hex(16)
        self.loading_after = loading_after
        self.running_after = running_after
        self.page_size_cap = page_size_cap
        self.offers: dict[int, dict] = {}
        self.instances: dict[int, FakeInstance] = {}
        self.account_keys: list[dict] = []
        self.requests: list[dict] = []   # {"method", "path", "body", "auth": user|instance|none|bad}
        self.create_bodies: list[dict] = []
        self.searches: list[dict] = []
        self.gone_offers: set[int] = set()       # 404 at create (rented by someone else)
        self.gone_status = 404
        self.rate_limit_remaining = 0            # answer this many next requests with 429
        self.rate_limit_paths: tuple[str, ...] = ()  # only these path prefixes (empty: any)
        self.ssh_direct: tuple[str, int] | None = None
        self.ssh_proxy: tuple[str, int] | None = None
        self.authorized_keys_file = None         # where an attached key must land for SSH to work
        self.fixed_instance_key = None           # CONTAINER_API_KEY for every instance (a test's sshd SetEnv's it)
        self.keep_live = False                   # a test that means to leave an instance rented sets this
        self._ids = itertools.count(4_000_001)
        self._offer_ids = itertools.count(9_000_001)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None

    # -- test set-up ------------------------------------------------------------------
    def add_offer(self, behaviour: str = "ok", **fields) -> dict:
        offer = dict(OFFER_DEFAULTS)
        offer.update(fields)
        offer.setdefault("id", next(self._offer_ids))
        offer.setdefault("ask_contract_id", offer["id"])
        offer.setdefault("machine_id", 70_000 + offer["id"] % 10_000)
        offer.setdefault("host_id", 80_000 + offer["id"] % 10_000)
        offer["_behaviour"] = behaviour
        with self._lock:
            self.offers[offer["id"]] = offer
        return offer

    def add_foreign_instances(self, n: int, label: str = "someone-elses-job") -> None:
        """Instances the user already runs for other work (to exercise pagination and label lookup)."""
        offer = self.add_offer(rentable=False, rented=True)
        with self._lock:
            for _ in range(n):
                iid = next(self._ids)
                self.instances[iid] = FakeInstance(
                    iid, offer, {"image": "other/image", "env": {}, "disk": 10}, "inst-" + secrets.token_hex(8),
                    time.time() - 3600, label=label, foreign=True)

    def live_instances(self, include_foreign: bool = False) -> list[FakeInstance]:
        with self._lock:
            return [i for i in self.instances.values() if not i.destroyed and (include_foreign or not i.foreign)]

    def instance_key(self, iid: int) -> str:
        return self.instances[iid].api_key

    def outbid(self, iid: int) -> None:
        """An interruptible instance loses its bid: stopped by the service, resumes later."""
        with self._lock:
            inst = self.instances[iid]
            inst.outbid, inst.stopped_at = True, time.time()

    def rebid_wins(self, iid: int) -> None:
        with self._lock:
            inst = self.instances[iid]
            inst.outbid, inst.stopped_at, inst.resumed_at = False, None, time.time()

    def requests_by(self, auth: str) -> list[dict]:
        return [r for r in self.requests if r["auth"] == auth]

    # -- life cycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeVast":
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- the instance row, as GET /api/v1/instances/ returns it ---------------------------
    def _status(self, inst: FakeInstance) -> tuple[str | None, str, str, str]:
        """(actual_status, intended_status, cur_state, status_msg) at this moment."""
        if inst.outbid:
            return "exited", "running", "stopped", "Instance outbid: stopped until your bid is highest again"
        if inst.stopped_at is not None:
            return "exited", "stopped", "stopped", "Stopped by request"
        age = time.time() - (inst.resumed_at or inst.created)
        if age < self.loading_after:
            return None, "running", "running", ""
        if inst.behaviour == "exit_while_loading" and age >= self.running_after:
            return "exited", "running", "stopped", "Error response from daemon: failed to create shim task: OCI runtime create failed"
        if inst.behaviour == "stuck_loading" or age < self.running_after:
            return "loading", "running", "running", "Pulling image: 3 of 11 layers done"
        return "running", "running", "running", "success, running " + str(inst.body.get("image"))

    def _row(self, inst: FakeInstance) -> dict:
        actual, intended, cur, msg = self._status(inst)
        o = inst.offer
        disk = float(inst.body.get("disk") or 0)
        price = round(o["dph_base"] + o["storage_cost"] * disk / (30 * 24), 6)
        if inst.body.get("price") is not None:  # interruptible: you pay your bid
            price = round(float(inst.body["price"]) + o["storage_cost"] * disk / (30 * 24), 6)
        running = actual == "running"
        direct, proxy = self.ssh_direct, self.ssh_proxy
        env = dict(inst.body.get("env") or {})
        env.update({"CONTAINER_ID": str(inst.id), "CONTAINER_API_KEY": inst.api_key})
        return {
            "id": inst.id,
            "machine_id": o["machine_id"],
            "host_id": o["host_id"],
            "actual_status": actual,
            "intended_status": intended,
            "cur_state": cur,
            "next_state": cur,
            "status_msg": msg,
            "image_uuid": inst.body.get("image"),
            "image_runtype": inst.body.get("runtype"),
            "image_args": [],
            "label": inst.label,
            "num_gpus": o["num_gpus"],
            "gpu_name": o["gpu_name"],
            "gpu_util": 0.0,
            "gpu_arch": o.get("gpu_arch"),
            "gpu_temp": 40.0,
            "cuda_max_good": o.get("cuda_max_good"),
            "driver_version": o.get("driver_version"),
            "cpu_cores_effective": o.get("cpu_cores_effective"),
            "cpu_ram": o.get("cpu_ram"),
            "disk_space": inst.body.get("disk"),
            "disk_util": 0.01,
            "disk_usage": 0.1,
            "inet_up": o.get("inet_up"),
            "inet_down": o.get("inet_down"),
            "reliability2": o.get("reliability2"),
            "dph_base": o["dph_base"],
            "dph_total": price,
            "storage_cost": o.get("storage_cost"),
            "is_bid": inst.body.get("price") is not None,
            "min_bid": o.get("min_bid"),
            "ssh_host": proxy[0] if (proxy and running) else None,
            "ssh_port": proxy[1] if (proxy and running) else None,
            "ssh_idx": "1",
            "public_ipaddr": direct[0] if (direct and running) else None,
            "ports": ({"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(direct[1])}]}
                      if (direct and running) else {}),
            "direct_port_start": 40000,
            "direct_port_end": 40019,
            "local_ipaddrs": "10.0.0.2",
            "jupyter_token": None,
            "extra_env": [[k, v] for k, v in env.items()],
            "onstart": inst.body.get("onstart"),
            "uptime_mins": max(0.0, (time.time() - inst.created) / 60),
            "start_date": inst.created,
            "end_date": inst.created + o.get("duration", 86400),
            "template_id": None,
            "template_hash_id": None,
            "template_name": None,
        }

    # -- request handling -------------------------------------------------------------------
    def _auth(self, header: str | None) -> tuple[str, int | None]:
        if not header:
            return "none", None
        if not header.startswith("Bearer "):
            return "bad", None
        token = header[len("Bearer "):]
        if token == self.api_key:
            return "user", None
        for inst in self.instances.values():
            if token == inst.api_key and not inst.destroyed:
                return "instance", inst.id
        return "bad", None

    def handle(self, method: str, path: str, query: dict, body, auth_header: str | None):
        """-> (status, json body or text, extra headers)."""
        with self._lock:
            if path.startswith("/logs/"):  # the result_url of request_logs: unauthenticated, like S3
                return self._logs_text(int(path.strip("/").split("/")[1]))
            auth, own_instance = self._auth(auth_header)
            self.requests.append({"method": method, "path": path, "query": query, "body": body, "auth": auth})
            if auth in ("none", "bad"):
                return 401, {"success": False, "error": "auth_error", "msg": "Invalid or missing API key"}, {}
            if self.rate_limit_remaining > 0 and (
                    not self.rate_limit_paths or path.startswith(self.rate_limit_paths)):
                self.rate_limit_remaining -= 1
                return 429, {"success": False, "error": "rate_limited", "msg": "slow down"}, {"Retry-After": "0"}
            parts = [p for p in path.split("/") if p]
            route = (method, tuple(parts))
            if auth == "instance":
                return self._handle_instance_key(own_instance, method, parts, body)
            return self._route(route, parts, query, body)

    def _handle_instance_key(self, own: int, method: str, parts: list, body):
        # An instance key reaches only its own instance (Vast.ai's instance-scoped keys).
        if len(parts) == 4 and parts[:3] == ["api", "v0", "instances"] and parts[3] == str(own):
            if method == "GET":
                return 200, {"instances": self._row(self.instances[own])}, {}
            if method == "PUT" and set(body) == {"state"}:
                return self._set_state(own, body["state"])
        return 403, {"success": False, "error": "forbidden", "msg": "instance key may not do this"}, {}

    def _route(self, route, parts, query, body):
        method = route[0]
        if method == "POST" and parts == ["api", "v0", "bundles"]:
            return self._search(body)
        if method == "PUT" and parts[:3] == ["api", "v0", "asks"] and len(parts) == 4:
            return self._create(int(parts[3]), body)
        if method == "GET" and parts == ["api", "v1", "instances"]:
            return self._list(query)
        if parts[:3] == ["api", "v0", "instances"] and len(parts) == 4 and parts[3].isdigit():
            iid = int(parts[3])
            if method == "GET":
                inst = self.instances.get(iid)
                row = self._row(inst) if inst and not inst.destroyed else None
                return 200, {"instances": row}, {}
            if method == "PUT":
                if "state" in body:
                    return self._set_state(iid, body["state"])
                if "label" in body:
                    return self._set_label(iid, body["label"])
            if method == "DELETE":
                return self._destroy(iid)
        if method == "PUT" and parts[:4] == ["api", "v0", "instances", "request_logs"] and len(parts) == 5:
            iid = int(parts[4])
            if iid not in self.instances or self.instances[iid].destroyed:
                return 404, {"success": False, "error": "no_such_instance"}, {}
            return 200, {"success": True, "result_url": f"{self.url}/logs/{iid}"}, {}
        if method == "POST" and parts[:3] == ["api", "v0", "instances"] and len(parts) == 5 and parts[4] == "ssh":
            return self._attach(int(parts[3]), body)
        if parts == ["api", "v0", "ssh"]:
            if method == "GET":
                return 200, self.account_keys, {}
            if method == "POST":
                key = {"id": len(self.account_keys) + 1, "public_key": body["ssh_key"], "created_at": time.time()}
                self.account_keys.append(key)
                return 200, {"success": True, "key": key}, {}
        return 404, {"success": False, "error": "not_found", "msg": f"{method} /{'/'.join(parts)}"}, {}

    def _search(self, q: dict):
        self.searches.append(json.loads(json.dumps(q)))
        q = dict(q)
        order = q.pop("order", [["score", "desc"]])
        offer_type = q.pop("type", "on-demand")
        limit = q.pop("limit", None)
        storage = float(q.pop("allocated_storage", 5.0))
        q.pop("disable_bundling", None)
        rows = []
        for offer in self.offers.values():
            row = {k: v for k, v in offer.items() if not k.startswith("_")}
            # dph_total includes the allocated disk, as Vast.ai prices it in search results.
            row["storage_total_cost"] = round(row["storage_cost"] * storage / (30 * 24), 6)
            row["dph_total"] = round(row["dph_base"] + row["storage_total_cost"], 6)
            row["dlperf_per_dphtotal"] = row["dlperf"] / row["dph_total"]
            row["is_bid"] = offer_type == "bid"
            ok = True
            for fname, conds in q.items():
                if not isinstance(conds, dict):
                    continue
                for op, want in conds.items():
                    if not _matches(row.get(fname), op, _coerce(want) if op not in ("in", "notin") else want):
                        ok = False
            if ok:
                rows.append(row)
        for fname, direction in reversed(order or []):
            rows.sort(key=lambda r: (r.get(fname) is None, r.get(fname) or 0), reverse=(direction == "desc"))
        if limit:
            rows = rows[: int(limit)]
        return 200, {"offers": rows}, {}

    def _create(self, offer_id: int, body: dict):
        self.create_bodies.append(json.loads(json.dumps(body)))
        offer = self.offers.get(offer_id)
        if offer_id in self.gone_offers or offer is None or offer.get("rented"):
            return self.gone_status, {"success": False, "error": "no_such_ask",
                                      "msg": f"Offer {offer_id} is no longer available"}, {}
        missing = {"client_id", "image", "env", "disk", "label", "onstart", "cancel_unavail"} - set(body)
        if missing or body["client_id"] != "me" or not isinstance(body["env"], dict):
            return 400, {"success": False, "error": "invalid_args", "msg": f"bad create body: {sorted(missing)}"}, {}
        iid = next(self._ids)
        key = self.fixed_instance_key or "inst-" + secrets.token_hex(16)
        inst = FakeInstance(iid, offer, body, key, time.time(),
                            behaviour=offer["_behaviour"], label=body.get("label"))
        self.instances[iid] = inst
        offer["rented"] = True
        return 200, {"success": True, "new_contract": iid, "instance_api_key": inst.api_key}, {}

    def _list(self, query: dict):
        filters = query.get("select_filters") or {}
        limit = min(int(query.get("limit") or self.page_size_cap), self.page_size_cap)
        after = int(query["after_token"]) if query.get("after_token") else 0
        rows = [self._row(i) for i in sorted(self.instances.values(), key=lambda i: i.id) if not i.destroyed]
        rows = [r for r in rows if all(_matches(r.get(f), op, w) for f, c in filters.items() for op, w in c.items())]
        page = rows[after: after + limit]
        nxt = str(after + limit) if after + limit < len(rows) else None
        return 200, {"instances": page, "next_token": nxt, "total_instances": len(rows)}, {}

    def _set_state(self, iid: int, state: str):
        inst = self.instances.get(iid)
        if inst is None or inst.destroyed:
            return 404, {"success": False, "error": "no_such_instance"}, {}
        if state == "stopped":
            inst.stopped_at = inst.stopped_at or time.time()
        elif state == "running":
            if inst.stopped_at is not None or inst.outbid:
                inst.stopped_at, inst.outbid, inst.resumed_at = None, False, time.time()
        else:
            return 400, {"success": False, "error": "invalid_args", "msg": f"state {state!r}"}, {}
        return 200, {"success": True}, {}

    def _set_label(self, iid: int, label: str):
        inst = self.instances.get(iid)
        if inst is None or inst.destroyed:
            return 404, {"success": False, "error": "no_such_instance"}, {}
        inst.label = label
        return 200, {"success": True}, {}

    def _destroy(self, iid: int):
        inst = self.instances.get(iid)
        if inst is None or inst.destroyed:
            return 404, {"success": False, "error": "no_such_instance", "msg": f"Instance {iid} not found"}, {}
        inst.destroyed = True
        inst.offer["rented"] = False
        return 200, {"success": True}, {}

    def _attach(self, iid: int, body: dict):
        inst = self.instances.get(iid)
        if inst is None or inst.destroyed:
            return 404, {"success": False, "error": "no_such_instance"}, {}
        key = body.get("ssh_key", "").strip()
        if not key.startswith(("ssh-", "ecdsa-")):
            return 400, {"success": False, "error": "invalid_args", "msg": "not an ssh public key"}, {}
        inst.attached_keys.append(key)
        if self.authorized_keys_file is not None:
            with open(self.authorized_keys_file, "a") as f:
                f.write(key + "\n")
        return 200, {"success": True, "msg": "ssh key attached"}, {}

    def _logs_text(self, iid: int):
        inst = self.instances.get(iid)
        if inst is None:
            return 404, "no such instance", {}
        actual, _, _, msg = self._status(inst)
        return 200, f"[fake vast] instance {iid} {actual}: {msg}\nboot log line 2\n", {}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeVast = None  # set on a subclass per server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _serve(self, method: str):
        parts = urlsplit(self.path)
        query = {}
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            try:  # the SDK JSON-encodes every non-string query argument
                query[k] = json.loads(v)
            except ValueError:
                query[k] = v
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        if body is None:
            status, payload, headers = 400, {"success": False, "error": "bad_json"}, {}
        else:
            status, payload, headers = self.fake.handle(method, parts.path, query, body,
                                                       self.headers.get("Authorization"))
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")

    def do_DELETE(self):
        self._serve("DELETE")


# -- pytest fixtures (imported by the test_vast_*.py modules) ----------------------------------
import pytest  # noqa: E402  (kept at the bottom: the fake itself does not need pytest)


@pytest.fixture
def fake_vast():
    """A running FakeVast; after the test it must hold no live instance unless `keep_live` was set."""
    fake = FakeVast().start()
    try:
        yield fake
        live = [i.id for i in fake.live_instances()]
        assert fake.keep_live or not live, f"the test left instance(s) {live} rented"
    finally:
        fake.stop()
