"""What a Vast.ai instance row means: is it coming up, dead, stopped, outbid; where SSH is; what it costs.

Pure functions over the row `GET /api/v0/instances/{id}/` returns (show_instance.yaml in
the vendor spec `vast-ai/docs`), so the rules are in one place and testable without a
service. Every field read here is listed in INSTANCE_FIELDS, and
tests/deploy/test_vast_spec_fields.py checks each one against the spec's own example rows:
a field the real API does not return cannot pass the tests again.
"""

from __future__ import annotations

# Fields the provider reads, per response (kept honest by test_vast_spec_fields.py, which
# also scans the provider's sources for row/offer reads that are not listed here).
OFFER_FIELDS = {
    "id", "num_gpus", "gpu_name", "dph_total", "storage_total_cost", "storage_cost", "reliability",
    "reliability2", "min_bid", "disk_space", "inet_down", "inet_down_cost", "inet_up_cost", "cuda_max_good",
    "direct_port_count", "verification", "vericode", "dlperf_per_dphtotal", "geolocation",
    # the whole-job estimate (deploy/plan/job_model.py): speeds, cores and FLOPS of the offer
    "cpu_cores", "cpu_cores_effective", "total_flops", "disk_bw",
}
INSTANCE_FIELDS = {
    "id", "label", "actual_status", "intended_status", "cur_state", "next_state", "status_msg", "is_bid",
    "dph_total", "dph_base", "storage_total_cost", "start_date", "num_gpus", "gpu_name", "public_ipaddr",
    "ports", "ssh_host", "ssh_port",
}
CREATE_FIELDS = {"success", "new_contract", "error", "msg"}
USER_FIELDS = {"credit", "balance", "email", "id"}
SSH_KEY_FIELDS = {"key"}

# SKILL.md (vastai SDK): "If actual_status becomes exited, unknown, or offline it will never
# reach running" - for a fresh instance. A started one reads exited/stopped for a while first.
DEAD_STATUSES = {"exited", "offline", "unknown"}
STOPPED_STATUSES = {"exited", "stopped"}
# status_msg texts after which an instance never comes up (dstack's update_provisioning_data
# treats `created` + "OCI runtime create failed" as fatal; the others are Docker's own words
# for an image that cannot be pulled or started).
FATAL_MESSAGES = ("OCI runtime create failed", "pull access denied", "manifest unknown", "unauthorized:",
                  "no such image", "repository does not exist", "exec format error")


def fatal_message(row: dict) -> str | None:
    """The status_msg of an instance that will never run (whatever its actual_status says)."""
    msg = (row.get("status_msg") or "").strip()
    if row.get("actual_status") in ("created", "loading", "exited", None) and any(
            m.lower() in msg.lower() for m in FATAL_MESSAGES):
        return msg
    return None


def is_running(row: dict) -> bool:
    return row.get("actual_status") == "running" and row.get("intended_status") != "stopped"


def is_stopped(row: dict) -> bool:
    """Stopped by a request (the watchdog, you) or by the market; its disk is kept."""
    return row.get("intended_status") == "stopped" or row.get("actual_status") in STOPPED_STATUSES


def outbid(row: dict) -> bool:
    """An interruptible instance whose contract is stopped: dstack reads it as
    `cur_state == intended_status == next_state == "stopped"` (the market stopped it; it runs
    again when the bid wins). After a start request intended_status turns running while the
    contract itself (cur_state, next_state) stays stopped until the bid is high enough."""
    if not row.get("is_bid"):
        return False
    return row.get("cur_state") == "stopped" and row.get("next_state") == "stopped"


def addresses(row: dict) -> list[tuple[str, int]]:
    """SSH addresses: the direct one (public IP + mapped 22/tcp, present only while running) first,
    then the proxy (ssh_host:ssh_port), as SkyPilot's get_cluster_info reads them."""
    out = []
    ports = row.get("ports") or {}
    mapped = ports.get("22/tcp") if isinstance(ports, dict) else None
    if row.get("public_ipaddr") and mapped:
        out.append((str(row["public_ipaddr"]).strip(), int(mapped[0]["HostPort"])))
    if row.get("ssh_host") and row.get("ssh_port"):
        out.append((str(row["ssh_host"]).strip(), int(row["ssh_port"])))
    return out


def hourly_parts(row: dict, fallback_total: float = 0.0) -> tuple[float, float]:
    """($/h for the GPUs while running, $/h for the disk as this row prices it now).

    show_instance.yaml: dph_base "Base dollars per hour", storage_total_cost "Total storage cost"
    (per hour), dph_total = dph_base + storage_total_cost (its example: 1.0 + 0.00207 = 1.00207).
    The disk is what the row says at the time it is read, stopped or not (a stopped instance bills
    only that: guides/reference/billing.mdx:81); the GPU part is dph_base, never dph_total minus a
    disk price, so a stopped row whose total no longer includes the GPU cannot price the GPU at 0.
    """
    disk = _num(row.get("storage_total_cost"))
    base = _num(row.get("dph_base"))
    if base is None:
        total = _num(row.get("dph_total")) or fallback_total or 0.0
        base = total - (disk or 0.0)
    return max(0.0, base), max(0.0, disk or 0.0)


def _num(v) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None
