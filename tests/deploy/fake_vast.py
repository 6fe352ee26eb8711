"""A fake of the Vast.ai HTTP API on 127.0.0.1, for driving the real `vastai` SDK in tests.

Every shape here comes from the vendor's OpenAPI spec (`vast-ai/docs`,
`api-reference/openapi/yaml/`, copies of the examples in tests/deploy/vast_spec/, see
SOURCES.md there) or from SkyPilot / dstack code that runs against the real service; each
block says which. Never from what deploy/ expects.

- `POST /api/v0/bundles/`            offer search (search_offers.yaml): `{field: {op: value}}`
                                      filters (eq, neq, gt, gte, lt, lte, in, notin), `order`,
                                      `type`, `limit`, `allocated_storage` -> `{"offers": [...]}`.
                                      Rows are the spec example row with our values on top: they
                                      carry `verification`/`vericode`, never `verified` (a
                                      request-only filter). A field that is neither a row field nor
                                      a known request field is a 400.
- `PUT  /api/v0/asks/<offer>/`        create (create_instance.yaml): `{"success", "new_contract"}`;
                                      404/410 `no_such_ask` when the offer is gone; 400
                                      `invalid_price` / `invalid_args`; a failure that still made an
                                      instance carries its id in `new_contract` (dstack).
- `GET  /api/v1/instances/`          paginated list (show_instances.yaml): `select_filters`,
                                      `limit` (max 25), `after_token` -> `{"instances",
                                      "next_token", "total_instances"}`
- `GET  /api/v0/instances/<id>/`      `{"instances": row}` (show_instance.yaml; null once destroyed)
- `PUT  /api/v0/instances/<id>/`      `{"state": "running"|"stopped"}` or `{"label": ...}`
- `DELETE /api/v0/instances/<id>/`    destroy (destroy_instance.yaml)
- `PUT  /api/v0/instances/bid_price/<id>/`  change bid (change_bid.yaml): `{"client_id", "price"}`
- `PUT  /api/v0/instances/request_logs/<id>/` -> `{"result_url"}`, fetched without auth
- `POST /api/v0/instances/<id>/ssh/`  attach a public key (attach_ssh.yaml): appended to the test
                                      sshd's authorized_keys, so SSH only works once it is attached
- `GET|POST /api/v0/ssh/`             account keys (show_ssh_keys.yaml: `id, user_id, key, ...`)
- `GET  /api/v0/users/current/`       the account (show_user.yaml: `id, email, balance, ...`, and
                                      `credit` as api-reference/authentication.mdx:61-69 shows the answer)

Errors and limits (rate-limits-and-errors.mdx): 429 bodies are plain text, with no
`Retry-After`; each endpoint has a minimum interval per identity (the spec files'
`x-rate-limit`), enforced here for the kinds in `enforce_intervals`, scaled by
`interval_scale` so tests stay fast. The daily search quota is a 429 whose JSON `error` is
`search_quota_exceeded` (vastai SDK, api/client.py) with `X-RateLimit-Reset`.

Every request needs `Authorization: Bearer <key>`. The user's key may do everything; an
instance's own key (`CONTAINER_API_KEY`) may only read and stop/start that one instance,
as on Vast.ai. Each request is logged with the key kind that made it (`requests`).

Instances go null -> loading -> running on a clock (`loading_after`, `running_after`
seconds after create). Statuses are SKILL.md's list. An offer's `behaviour` can make its
instance exit while loading, never leave loading, or stay `created` with dstack's "OCI
runtime create failed" status_msg. A started instance keeps reading `exited` for
`restart_lag` seconds (it waits for its GPUs; SkyPilot resumes EXITED/STOPPED ones). An
outbid instance reads `cur_state == intended_status == next_state == "stopped"` (dstack) and
runs again once its bid reaches `competing_bid` (change bid, or `rebid_wins`).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from tests.deploy.background_http import serve, shutdown

SPEC = Path(__file__).resolve().parent / "vast_spec"


def spec_example(name: str) -> dict:
    """One of the spec's example objects (tests/deploy/vast_spec/, see SOURCES.md)."""
    return json.loads((SPEC / name).read_text())


# The spec's example offer row (search_offers.yaml), with plausible values for a
# 2 x RTX 5000 Ada box on top. No field is added that the example does not have.
OFFER_DEFAULTS = {
    **spec_example("search_offers.offer.json"),
    "gpu_name": "RTX 5000Ada",
    "num_gpus": 2,
    "gpu_ram": 32760,
    "gpu_total_ram": 65520,
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
    "vericode": 1,
    "rentable": True,
    "rented": False,
    # null in the spec example; the SDK's default query filters `external eq false`, so
    # the offers people rent read false.
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
    "is_bid": False,
}
for _computed in ("dph_total", "storage_total_cost", "dlperf_per_dphtotal", "flops_per_dphtotal", "search",
                  "instance", "id", "ask_contract_id", "bundle_id", "machine_id", "host_id"):
    OFFER_DEFAULTS.pop(_computed, None)  # set per offer / per search below

# Request-only search fields: filters the service understands that are not row columns
# (search_offers.yaml request schema). `verified` is the SDK's default filter; the rows
# answer it through `verification`.
QUERY_ONLY = {"verified": lambda row: row.get("verification") == "verified"}
SEARCH_CONTROL = {"order", "type", "limit", "allocated_storage", "disable_bundling"}

# x-rate-limit of each spec file: minimum seconds between requests of one identity, and the
# penalty for hitting it (create_instance.yaml: threshold 4.5, penalty 12).
INTERVALS = {"create": (4.5, 12.0), "show_instance": (2.0, 0.0), "show_instances": (1.0, 0.0),
             "manage": (1.0, 0.0), "destroy": (3.0, 0.0), "change_bid": (5.5, 0.0)}
OCI_FAILURE = ("Error response from daemon: failed to create task for container: failed to create shim task: "
               "OCI runtime create failed: runc create failed: unable to start container process: error during "
               "container init: error running hook #0: nvidia-container-cli: initialization error")


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
    behaviour: str = "ok"          # ok | exit_while_loading | stuck_loading | created_oci
    destroyed: bool = False
    stopped_at: float | None = None
    resumed_at: float | None = None
    outbid: bool = False
    start_requested_while_outbid: bool = False
    attached_keys: list = field(default_factory=list)
    label: str | None = None
    foreign: bool = False          # pre-seeded by a test (the user's other instances)
    dph_base: float | None = None  # the price the host charges this contract (may differ from the search)
    bid: float | None = None       # interruptible: our bid, $/h per machine


class FakeVast:
    """The fake service. `start()` it, point the SDK's `server_url` at `.url`, `stop()` it."""

    def __init__(self, api_key: str | None = None, *, loading_after: float = 0.3,
                 running_after: float = 0.8, page_size_cap: int = 25):
        self.api_key = api_key or "user-" + secrets.token_hex(16)
        self.loading_after = loading_after
        self.running_after = running_after
        self.restart_lag = 0.0                   # seconds a started instance still reads `exited`
        self.page_size_cap = page_size_cap       # show_instances.yaml: max 25 per page
        self.offers: dict[int, dict] = {}
        self.instances: dict[int, FakeInstance] = {}
        self.account_keys: list[dict] = []
        self.credit = 25.0                       # the account's money: authentication.mdx's users/current `credit`
        self.balance = None                      # show_user.yaml lists `balance` (no example value)
        self.requests: list[dict] = []   # {"method", "path", "body", "auth": user|instance|none|bad, "at"}
        self.create_bodies: list[dict] = []
        self.create_times: list[float] = []
        self.searches: list[dict] = []
        self.gone_offers: set[int] = set()       # 404 at create (rented by someone else)
        self.gone_status = 404
        self.rate_limit_remaining = 0            # answer this many next requests with 429
        self.rate_limit_paths: tuple[str, ...] = ()  # only these path prefixes (empty: any)
        self.enforce_intervals: set[str] = {"create"}  # endpoint kinds whose minimum interval is enforced
        self.interval_scale = 1.0                # 1.0: the spec's seconds; tests shrink it
        self.rate_limited: list[str] = []        # kinds answered 429 because of their interval
        self.search_quota_exceeded = False
        self.competing_bid = 0.0                 # an outbid instance runs again once its bid reaches this
        self.ssh_direct: tuple[str, int] | None = None
        self.ssh_proxy: tuple[str, int] | None = None
        self.authorized_keys_file = None         # where an attached key must land for SSH to work
        self.fixed_instance_key = None           # CONTAINER_API_KEY for every instance (a test's sshd SetEnv's it)
        self.refuse_instance_key = 0             # answer this many next instance-key requests 401 (a key not yet valid)
        self.keep_live = False                   # a test that means to leave an instance rented sets this
        self._ids = itertools.count(4_000_001)
        self._offer_ids = itertools.count(9_000_001)
        self._last: dict[tuple[str, str], float] = {}
        self._blocked: dict[tuple[str, str], float] = {}
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None

    # -- test set-up ------------------------------------------------------------------
    def add_offer(self, behaviour: str = "ok", **fields) -> dict:
        """An offer; `behaviour` is its instance's (ok | exit_while_loading | stuck_loading | created_oci).

        Keys starting with `_` are the fake's own and never appear in a row:
        `_dph_base_at_create` (the host's price changed between search and create),
        `_min_bid_at_create` (the market moved: a lower bid is created stopped, dstack),
        `_create_error` (status, error, leaves_instance): the create fails that way.
        """
        offer = dict(OFFER_DEFAULTS)
        offer.update(fields)
        offer.setdefault("id", next(self._offer_ids))
        offer.setdefault("ask_contract_id", offer["id"])
        offer.setdefault("bundle_id", offer["id"] + 500_000_000)
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

    def outbid(self, iid: int, competing_bid: float | None = None) -> None:
        """Someone bids more for this machine: the interruptible instance is stopped by the market."""
        with self._lock:
            inst = self.instances[iid]
            inst.outbid, inst.stopped_at, inst.start_requested_while_outbid = True, time.time(), False
            self.competing_bid = competing_bid if competing_bid is not None else (inst.bid or 0.0) + 0.1

    def rebid_wins(self, iid: int) -> None:
        with self._lock:
            self._resume(self.instances[iid])

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
        self._server = serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        return self

    def stop(self) -> None:
        shutdown(self._server)
        self._server = None

    # -- the instance row, as GET /api/v0/instances/<id>/ returns it ------------------------
    def _resume(self, inst: FakeInstance) -> None:
        inst.outbid, inst.stopped_at, inst.resumed_at = False, None, time.time()
        inst.start_requested_while_outbid = False

    def _status(self, inst: FakeInstance) -> tuple[str | None, str, str, str]:
        """(actual_status, intended_status, cur_state, status_msg) at this moment (SKILL.md's statuses)."""
        if inst.outbid:
            # dstack's update_provisioning_data: cur_state == intended_status == next_state == "stopped".
            # Asking to start it records the wish; the contract stays stopped until the bid wins.
            intended = "running" if inst.start_requested_while_outbid else "stopped"
            return "stopped", intended, "stopped", ""
        if inst.stopped_at is not None:
            return "exited", "stopped", "stopped", "Exited (0)"
        if inst.resumed_at is not None and time.time() - inst.resumed_at < self.restart_lag:
            # Started again: the contract runs, the container still reads exited while it waits
            # for its GPUs (SkyPilot treats EXITED/STOPPED as a resumable stopped state).
            return "exited", "running", "running", "Exited (0)"
        age = time.time() - (inst.resumed_at + self.restart_lag if inst.resumed_at else inst.created)
        if inst.behaviour == "created_oci" and age >= self.loading_after:
            return "created", "running", "running", OCI_FAILURE  # dstack: fatal
        if age < self.loading_after:
            return None, "running", "running", ""
        if inst.behaviour == "exit_while_loading" and age >= self.running_after:
            return "exited", "running", "stopped", OCI_FAILURE
        if inst.behaviour == "stuck_loading" or age < self.running_after:
            return "loading", "running", "running", "Pulling image: 3 of 11 layers done"
        return "running", "running", "running", "success, running " + str(inst.body.get("image")) + "/ssh"

    def _row(self, inst: FakeInstance) -> dict:
        """show_instance.yaml's Instance example, with this instance's values on top."""
        actual, intended, cur, msg = self._status(inst)
        o = inst.offer
        disk = float(inst.body.get("disk") or 0)
        storage_total = round(o["storage_cost"] * disk / (30 * 24), 6)
        base = inst.bid if inst.bid is not None else (inst.dph_base if inst.dph_base is not None else o["dph_base"])
        running = actual == "running"
        direct, proxy = self.ssh_direct, self.ssh_proxy
        env = dict(inst.body.get("env") or {})
        env.update({"CONTAINER_ID": str(inst.id), "CONTAINER_API_KEY": inst.api_key})
        row = spec_example("show_instance.instance.json")
        row.update({
            "id": inst.id,
            "machine_id": o["machine_id"],
            "host_id": o["host_id"],
            "bundle_id": o["bundle_id"],
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
            "driver_version": o.get("driver_version"),
            "cpu_cores_effective": o.get("cpu_cores_effective"),
            "cpu_ram": o.get("cpu_ram"),
            "disk_space": inst.body.get("disk"),
            "reliability2": o.get("reliability2"),
            "verification": o.get("verification"),
            # dph_total = dph_base + storage_total_cost (show_instance.yaml's example: 1.0 + 0.00207)
            "dph_base": base,
            "dph_total": round(base + storage_total, 6),
            "storage_cost": o.get("storage_cost"),
            "storage_total_cost": storage_total,
            "is_bid": inst.bid is not None,
            "min_bid": o.get("min_bid"),
            "ssh_host": proxy[0] if (proxy and running) else None,
            "ssh_port": proxy[1] if (proxy and running) else None,
            "ssh_idx": "1",
            "public_ipaddr": direct[0] if (direct and running) else None,
            # show_instances.yaml: "Port mappings. Only present on running instances."
            "ports": ({"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(direct[1])}]}
                      if (direct and running) else {}),
            "direct_port_start": 40000,
            "direct_port_end": 40019,
            "local_ipaddrs": "10.0.0.2 172.17.0.1 \n",
            "extra_env": [[k, v] for k, v in env.items()],
            "onstart": inst.body.get("onstart"),
            "uptime_mins": None,
            "start_date": inst.created,
            "end_date": inst.created + o.get("duration", 86400),
            "duration": o.get("duration", 86400),
            "template_id": None,
            "template_hash_id": None,
            "template_name": None,
            "credit_balance": None,
        })
        return row

    # -- request handling -------------------------------------------------------------------
    def _auth(self, header: str | None) -> tuple[str, int | None, str | None]:
        if not header:
            return "none", None, None
        if not header.startswith("Bearer "):
            return "bad", None, None
        token = header[len("Bearer "):]
        if token == self.api_key:
            return "user", None, token
        for inst in self.instances.values():
            if token == inst.api_key and not inst.destroyed:
                if self.refuse_instance_key > 0:
                    self.refuse_instance_key -= 1
                    return "bad", None, token
                return "instance", inst.id, token
        return "bad", None, token

    @staticmethod
    def _kind(method: str, parts: list) -> str | None:
        """Which spec endpoint a request is, for its x-rate-limit."""
        if method == "PUT" and parts[:3] == ["api", "v0", "asks"]:
            return "create"
        if method == "PUT" and parts[:4] == ["api", "v0", "instances", "bid_price"]:
            return "change_bid"
        if parts == ["api", "v1", "instances"]:
            return "show_instances"
        if parts[:3] == ["api", "v0", "instances"] and len(parts) == 4:
            return {"GET": "show_instance", "PUT": "manage", "DELETE": "destroy"}.get(method)
        return None

    def _too_frequent(self, kind: str | None, token: str) -> bool:
        """rate-limits-and-errors.mdx: a minimum interval per endpoint and identity."""
        if kind not in self.enforce_intervals or not self.interval_scale:
            return False
        threshold, penalty = INTERVALS[kind]
        now, key = time.monotonic(), (kind, token)
        last, blocked = self._last.get(key), self._blocked.get(key, 0.0)
        if now < blocked or (last is not None and now - last < threshold * self.interval_scale):
            self._blocked[key] = max(blocked, now + penalty * self.interval_scale)
            self.rate_limited.append(kind)
            return True
        self._last[key] = now
        return False

    def handle(self, method: str, path: str, query: dict, body, auth_header: str | None):
        """-> (status, json body or text, extra headers)."""
        with self._lock:
            if path.startswith("/logs/"):  # the result_url of request_logs: unauthenticated, like S3
                return self._logs_text(int(path.strip("/").split("/")[1]))
            auth, own_instance, token = self._auth(auth_header)
            self.requests.append({"method": method, "path": path, "query": query, "body": body, "auth": auth,
                                  "at": time.time()})
            if auth in ("none", "bad"):
                # show_instance.yaml's 401 example
                return 401, {"success": False, "error": "auth_error", "msg": "Invalid user key"}, {}
            parts = [p for p in path.split("/") if p]
            # 429: plain text, no Retry-After (rate-limits-and-errors.mdx)
            if self.rate_limit_remaining > 0 and (
                    not self.rate_limit_paths or path.startswith(self.rate_limit_paths)):
                self.rate_limit_remaining -= 1
                return 429, "API requests too frequent", {}
            kind = self._kind(method, parts)
            if self._too_frequent(kind, token):
                threshold = INTERVALS[kind][0]
                return 429, f"API requests too frequent endpoint threshold={threshold}", {}
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
        if method == "GET" and parts == ["api", "v0", "users", "current"]:
            user = spec_example("show_user.json")
            user.update(spec_example("users_current.authentication.json"))
            user.update(id=1234, key_id=5678, email="user@example.com", balance=self.balance, credit=self.credit,
                        ssh_key=None, sid=None)
            return 200, user, {}
        if method == "PUT" and parts[:4] == ["api", "v0", "instances", "bid_price"] and len(parts) == 5:
            return self._change_bid(int(parts[4]), body)
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
                key = {"id": len(self.account_keys) + 1, "user_id": 1234, "key": body["ssh_key"],
                       "created_at": time.time(), "deleted_at": None}
                self.account_keys.append(key)
                return 200, {"success": True, "key": key}, {}
        return 404, {"success": False, "error": "not_found", "msg": f"{route[0]} /{'/'.join(parts)}"}, {}

    def _search(self, q: dict):
        self.searches.append(json.loads(json.dumps(q)))
        if self.search_quota_exceeded:
            # vastai SDK api/client.py: the daily quota is a JSON 429, reset at UTC midnight.
            midnight = (_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(days=1)).replace(
                hour=0, minute=0, second=0, microsecond=0)
            return 429, {"success": False, "error": "search_quota_exceeded",
                         "msg": "Daily search quota exceeded"}, {"X-RateLimit-Reset": str(int(midnight.timestamp()))}
        q = dict(q)
        order = q.pop("order", [["score", "desc"]])
        offer_type = q.pop("type", "on-demand")
        limit = q.pop("limit", None)
        storage = float(q.pop("allocated_storage", 8.0))  # search_offers.yaml: default 8 GB
        q.pop("disable_bundling", None)
        unknown = [f for f in q if f not in OFFER_DEFAULTS and f not in QUERY_ONLY and f not in
                   ("id", "dph_total", "storage_total_cost", "dlperf_per_dphtotal", "flops_per_dphtotal",
                    "machine_id", "host_id", "bundle_id", "ask_contract_id")]
        if unknown:
            # show_instances.yaml's 400 example wording ("... is not a valid search key")
            return 400, {"success": False, "error": "invalid_request",
                         "msg": f"Error in query parameters: {unknown[0]} is not a valid search key"}, {}
        rows = []
        for offer in self.offers.values():
            row = {k: v for k, v in offer.items() if not k.startswith("_")}
            # dph_total includes the allocated disk: storage_total_cost = storage_cost * GB / 720
            row["storage_total_cost"] = round(row["storage_cost"] * storage / (30 * 24), 6)
            row["dph_total"] = round(row["dph_base"] + row["storage_total_cost"], 6)
            row["dlperf_per_dphtotal"] = row["dlperf"] / row["dph_total"]
            row["flops_per_dphtotal"] = row["total_flops"] / row["dph_total"]
            row["is_bid"] = offer_type == "bid"
            ok = True
            for fname, conds in q.items():
                if not isinstance(conds, dict):
                    continue
                for op, want in conds.items():
                    value = QUERY_ONLY[fname](row) if fname in QUERY_ONLY else row.get(fname)
                    if not _matches(value, op, _coerce(want) if op not in ("in", "notin") else want):
                        ok = False
            if ok:
                rows.append(row)
        for fname, direction in reversed(order or []):
            rows.sort(key=lambda r: (r.get(fname) is None, r.get(fname) or 0), reverse=(direction == "desc"))
        if limit:
            rows = rows[: int(limit)]
        return 200, {"offers": rows}, {}

    def _new_instance(self, offer: dict, body: dict, stopped: bool = False) -> FakeInstance:
        iid = next(self._ids)
        key = self.fixed_instance_key or "inst-" + secrets.token_hex(16)
        inst = FakeInstance(iid, offer, body, key, time.time(), behaviour=offer["_behaviour"],
                            label=body.get("label"), dph_base=offer.get("_dph_base_at_create"),
                            bid=float(body["price"]) if body.get("price") is not None else None)
        if stopped:
            inst.stopped_at = time.time()
        self.instances[iid] = inst
        offer["rented"] = True
        return inst

    def _create(self, offer_id: int, body: dict):
        self.create_bodies.append(json.loads(json.dumps(body)))
        self.create_times.append(time.monotonic())
        offer = self.offers.get(offer_id)
        if offer_id in self.gone_offers or offer is None or offer.get("rented"):
            # create_instance.yaml's 404 / 410 examples
            if self.gone_status == 410:
                return 410, {"success": False, "error": "no_such_ask", "ask_id": offer_id,
                             "msg": f"error 410/3907: no_such_ask Instance type {offer_id} is no longer available."}, {}
            return 404, {"success": False, "error": "invalid_args", "ask_id": offer_id,
                         "msg": f"error 404/3603: no_such_ask Instance type by id {offer_id} is not available."}, {}
        missing = {"client_id", "image", "env", "disk", "label", "onstart", "cancel_unavail"} - set(body)
        if missing or body["client_id"] != "me" or not isinstance(body["env"], dict):
            return 400, {"success": False, "error": "invalid_args", "ask_id": offer_id,
                         "msg": f"error 400/3467: Invalid args: {sorted(missing)}"}, {}
        if "_create_error" in offer:
            status, error, leaves = offer["_create_error"]
            answer = {"success": False, "error": error, "ask_id": offer_id, "msg": f"error {status}: {error}"}
            if leaves:  # dstack: the failure's body still names the contract it made
                answer["new_contract"] = self._new_instance(offer, body, stopped=True).id
            return status, answer, {}
        price = body.get("price")
        if price is not None:
            if not 0.001 <= float(price) <= 128.0:  # create_instance.yaml x-input-validation
                return 400, {"success": False, "error": "invalid_price", "ask_id": offer_id,
                             "msg": "error 400: bid price must be between 0.001 and 128"}, {}
            floor = offer.get("_min_bid_at_create", offer.get("min_bid") or 0.0)
            if float(price) < floor:
                # dstack's api_client: "Vast.ai creates spot instances in the stopped state and returns
                # an error if the bid is insufficient" - the error carries new_contract.
                inst = self._new_instance(offer, body, stopped=True)
                return 400, {"success": False, "error": "invalid_price", "ask_id": offer_id,
                             "new_contract": inst.id,
                             "msg": f"error 400: bid {price} is below the current minimum {floor}"}, {}
        inst = self._new_instance(offer, body)
        return 200, {"success": True, "new_contract": inst.id, "instance_api_key": inst.api_key}, {}

    def _list(self, query: dict):
        filters = query.get("select_filters") or {}
        limit = min(int(query.get("limit") or self.page_size_cap), self.page_size_cap)
        after = int(query["after_token"]) if query.get("after_token") else 0
        rows = [self._row(i) for i in sorted(self.instances.values(), key=lambda i: i.id) if not i.destroyed]
        rows = [r for r in rows if all(_matches(r.get(f), op, w) for f, c in filters.items() for op, w in c.items())]
        page = rows[after: after + limit]
        nxt = str(after + limit) if after + limit < len(rows) else None
        return 200, {"success": True, "instances": page, "instances_found": len(page), "next_token": nxt,
                     "total_instances": len(rows)}, {}

    def _set_state(self, iid: int, state: str):
        inst = self.instances.get(iid)
        if inst is None or inst.destroyed:
            return 404, {"success": False, "error": "no_such_instance", "msg": "Instance not found"}, {}
        if state == "stopped":
            inst.stopped_at = inst.stopped_at or time.time()
            inst.start_requested_while_outbid = False
        elif state == "running":
            if inst.outbid and (inst.bid or 0.0) < self.competing_bid:
                inst.start_requested_while_outbid = True  # recorded; the market decides
            elif inst.stopped_at is not None or inst.outbid:
                self._resume(inst)
        else:
            return 400, {"success": False, "error": "invalid_args", "msg": f"state {state!r}"}, {}
        return 200, {"success": True}, {}

    def _change_bid(self, iid: int, body: dict):
        inst = self.instances.get(iid)
        if inst is None or inst.destroyed:
            return 404, {"success": False, "error": "no_such_instance", "msg": "Instance with that ID does not exist."}, {}
        price = body.get("price")
        if body.get("client_id") != "me" or price is None or not 0.001 <= float(price) <= 32.0 * inst.offer["num_gpus"]:
            return 400, {"success": False, "error": "invalid_args", "msg": "Please set a bid price >= 0.001."}, {}
        inst.bid = float(price)
        if inst.outbid and inst.bid >= self.competing_bid:
            self._resume(inst)
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
            return 404, {"success": False, "error": "not_found", "msg": "Instance not found"}, {}
        inst.destroyed = True
        inst.offer["rented"] = False
        return 200, {"success": True, "msg": "Instance destroyed successfully"}, {}

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
        return 200, {"success": True, "msg": "SSH key attached successfully"}, {}

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
        # every instance not destroyed, including those a failed create left behind (new_contract)
        live = [i.id for i in fake.live_instances()]
        assert fake.keep_live or not live, f"the test left instance(s) {live} rented"
    finally:
        fake.stop()
