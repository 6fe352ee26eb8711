"""Money arithmetic for rented instances: what a run will cost, what it has cost, when to stop.

Pure functions, no SDK: the offers table, `status` and the dry-run plan all use them (the
whole-job estimate itself is deploy/plan/job_model.py), so
the figures a user sees before renting and while renting are computed the same way.
Vast.ai bills the GPU while an instance runs and the disk for as long as it exists; a
stopped instance costs only its disk. `dph_total` (the search result and instance field)
already includes the disk at the allocated size.
"""

from __future__ import annotations

HOURS_PER_MONTH = 30 * 24  # Vast.ai's storage_cost is $/GB/month


def disk_cost_per_hour(storage_cost_per_gb_month: float | None, disk_gb: float) -> float:
    return (storage_cost_per_gb_month or 0.0) * disk_gb / HOURS_PER_MONTH


def hours_allowed(price_per_hour: float, max_hours: float | None, budget_usd: float | None) -> float | None:
    """The rental time the guards allow: the shorter of max_hours and what budget_usd buys."""
    caps = []
    if max_hours:
        caps.append(float(max_hours))
    if budget_usd and price_per_hour > 0:
        caps.append(float(budget_usd) / price_per_hour)
    return min(caps) if caps else None


def fmt_usd(x: float | None) -> str:
    return "-" if x is None else f"${x:,.2f}"


def billed(gpu_per_hour: float, disk_per_hour: float, running_hours: float, exists_hours: float,
           max_hours: float | None, budget_usd: float | None, expected_hours: float | None) -> dict:
    """Spent so far the way Vast.ai bills it, and the projected total.

    Vast.ai (vastai SDK SKILL.md, vast-ai/docs guides/reference/billing.mdx): "storage charges
    begin at creation, GPU charges begin when status reaches running"; a stopped instance
    pays its disk only. So: the GPU part for the hours it ran, the disk part for the hours
    it has existed. The projection runs it on to the expected length or the first guard.
    """
    running_hours = max(0.0, min(running_hours, exists_hours or running_hours))
    gpu = gpu_per_hour * running_hours
    disk = disk_per_hour * exists_hours
    price = gpu_per_hour + disk_per_hour
    allowed = hours_allowed(price, max_hours, budget_usd)
    horizon = expected_hours or running_hours
    if allowed is not None:
        horizon = min(horizon, allowed)
    horizon = max(horizon, running_hours)  # never project less than is already spent
    return {
        "running_hours": round(running_hours, 3),
        "gpu_usd": round(gpu, 2),
        "disk_usd": round(disk, 2),
        "spent_usd": round(gpu + disk, 2),
        "projected_usd": round(max(gpu + disk, price * horizon + disk_per_hour * max(0.0, exists_hours - running_hours)), 2),
        "hours_allowed": None if allowed is None else round(allowed, 2),
    }
