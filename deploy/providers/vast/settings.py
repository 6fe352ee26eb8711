"""The `vast:` section of configs/deploy.yaml: every key, its default, its type, its checks."""

from __future__ import annotations

import re
from dataclasses import dataclass

from deploy.errors import UsageError

# Keys under `vast:` in configs/deploy.yaml, with their defaults. Documented in docs/deploy-vast.md.
VAST_DEFAULTS: dict = {
    "server_url": "https://console.vast.ai",
    "image": None,                  # REGISTRY/IMAGE:TAG built from docker/ (required)
    "disk_gb": 100,
    "gpu_name": "RTX 5000Ada",      # Vast.ai's name for the RTX 5000 Ada Generation
    "gpu_fallbacks": [],            # other models to accept, e.g. ["RTX A6000", "L40S"]
    "num_gpus": 2,
    "min_reliability": 0.98,
    "max_price_per_hour": 2.0,      # $/h for the whole machine, disk included
    "min_inet_down_mbps": 200,      # the dataset goes up this pipe
    "min_cuda": 12.2,               # highest CUDA the host driver supports (cuda_max_good)
    "direct_ports": True,           # direct SSH (faster rsync than the proxy)
    "verified": True,               # server-side filter; rows answer it with verification/vericode
    "order_by": "job_cost",         # job_cost (the whole-job estimate, deploy/plan/) | price | dlperf_per_dollar
    "expected_hours": 6.0,          # the cost guards' warning threshold and status's projection
    "uplink_mbps": None,            # your upload speed; default: measured after `up` (.deploy/plan.json), 100 before
    "image_gb": None,               # the image's compressed size; default: its registry manifest, else 6.8
    "max_image_pull_gb": 2.0,       # `check` warns when a host would pull more image than this
    "max_hours": 12.0,              # watchdog: stop the instance after this much rental time
    "budget_usd": 30.0,             # watchdog: ... or once this much is spent
    "idle_grace_minutes": 30,       # watchdog: stop once nothing ran or was fetched for this long
    "bid_price": None,              # $/h per machine: rent interruptible at this bid
    "ready_timeout_minutes": 20,    # create -> running -> SSH answers
    "max_attempts": 3,              # offers tried before giving up
    "label": None,                  # default: derived from the project folder
    "env": {},                      # extra environment for the container (no secrets)
    "ssh_user": "root",
    "poll_seconds": 5.0,
    "api_retries": 6,               # 429 answers waited out before giving up
    "create_interval_seconds": 5.0, # create_instance.yaml x-rate-limit: 4.5 s between creates
    "restart_timeout_minutes": 15,  # a started instance may read exited/stopped this long (waits for GPUs)
    "image_login": None,            # private registry: {username: USER, password_env: ENV_VAR_WITH_THE_TOKEN}
    "watchdog_poll_seconds": 30.0,
}

_TYPES = {
    "server_url": str, "image": (str, type(None)), "disk_gb": (int, float), "gpu_name": str,
    "gpu_fallbacks": list, "num_gpus": int, "min_reliability": (int, float, type(None)),
    "max_price_per_hour": (int, float, type(None)), "min_inet_down_mbps": (int, float, type(None)),
    "min_cuda": (int, float, type(None)), "direct_ports": bool, "verified": bool, "order_by": str,
    "uplink_mbps": (int, float, type(None)), "image_gb": (int, float, type(None)),
    "max_image_pull_gb": (int, float),
    "expected_hours": (int, float), "max_hours": (int, float, type(None)), "budget_usd": (int, float, type(None)),
    "idle_grace_minutes": (int, float), "bid_price": (int, float, type(None)),
    "ready_timeout_minutes": (int, float), "max_attempts": int, "label": (str, type(None)), "env": dict,
    "ssh_user": str, "poll_seconds": (int, float), "api_retries": int, "watchdog_poll_seconds": (int, float),
    "create_interval_seconds": (int, float), "restart_timeout_minutes": (int, float), "image_login": (dict, type(None)),
}



@dataclass
class VastSettings:
    server_url: str
    image: str | None
    disk_gb: float
    gpu_name: str
    gpu_fallbacks: list
    num_gpus: int
    min_reliability: float | None
    max_price_per_hour: float | None
    min_inet_down_mbps: float | None
    min_cuda: float | None
    direct_ports: bool
    verified: bool
    order_by: str
    expected_hours: float
    uplink_mbps: float | None
    image_gb: float | None
    max_image_pull_gb: float
    max_hours: float | None
    budget_usd: float | None
    idle_grace_minutes: float
    bid_price: float | None
    ready_timeout_minutes: float
    max_attempts: int
    label: str | None
    env: dict
    ssh_user: str
    poll_seconds: float
    api_retries: int
    watchdog_poll_seconds: float
    create_interval_seconds: float
    restart_timeout_minutes: float
    image_login: dict | None

    @classmethod
    def from_config(cls, section: dict | None) -> "VastSettings":
        section = section or {}
        for key, value in section.items():
            if key not in VAST_DEFAULTS:
                raise UsageError(f"unknown key 'vast.{key}' in the deploy config (known: {', '.join(VAST_DEFAULTS)})")
            want = _TYPES[key]
            if value is not None and (not isinstance(value, want) or (isinstance(value, bool) and want is not bool)):
                raise UsageError(f"vast.{key} has the wrong type: got {value!r}")
        s = cls(**{**VAST_DEFAULTS, **section})
        if s.order_by not in ("job_cost", "price", "dlperf_per_dollar"):
            raise UsageError(f"vast.order_by must be job_cost, price or dlperf_per_dollar, got {s.order_by!r}")
        for key in ("uplink_mbps", "image_gb"):
            if getattr(s, key) is not None and getattr(s, key) <= 0:
                raise UsageError(f"vast.{key} must be positive (or null to measure it)")
        if s.bid_price is not None and s.max_price_per_hour and s.bid_price > s.max_price_per_hour:
            raise UsageError(f"vast.bid_price {s.bid_price} is above vast.max_price_per_hour {s.max_price_per_hour}")
        for key in ("disk_gb", "num_gpus", "expected_hours", "ready_timeout_minutes", "max_attempts", "poll_seconds"):
            if getattr(s, key) <= 0:
                raise UsageError(f"vast.{key} must be positive")
        for k, v in s.env.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(k)) or not isinstance(v, (str, int, float)):
                raise UsageError(f"vast.env must map NAME: value, got {k!r}: {v!r}")
            if re.search(r"KEY|TOKEN|SECRET|PASSWORD", str(k), re.I):
                raise UsageError(f"vast.env.{k} looks like a secret: secrets never go to the instance")
        if s.image_login is not None:
            if set(s.image_login) != {"username", "password_env"} or not all(
                    isinstance(v, str) and v for v in s.image_login.values()):
                raise UsageError("vast.image_login must be {username: USER, password_env: ENV_VAR}: the token "
                                 "itself stays in the environment, never in the config")
        if s.create_interval_seconds < 0 or s.restart_timeout_minutes <= 0:
            raise UsageError("vast.create_interval_seconds must be >= 0 and vast.restart_timeout_minutes positive")
        return s
