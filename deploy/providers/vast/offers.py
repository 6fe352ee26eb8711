"""Finding a Vast.ai machine: the offer query from configs/deploy.yaml, the table, and why nothing matched.

The query is a `{field: {op: value}}` dict, the form the `vastai` SDK sends to
`POST /api/v0/bundles/` (what its `parse_query` turns `"num_gpus=2 reliability>=0.98"`
into); we build it directly so numbers stay numbers and the GPU name keeps its space
(Vast.ai calls the card `RTX 5000Ada`). Every filter is also re-checked here on the
results, so a guard such as `max_price_per_hour` holds even if the service ignored a field.

A filter's query field and the field the rows answer it with are not always the same:
`verified` is a request-only field (the SDK's default query sends `verified: {eq: true}`),
while the rows carry `verification: "verified"` and `vericode: 1` (search_offers.yaml's
response example in the vendor spec `vast-ai/docs`). `row_field` says which row field the
client-side re-check reads.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from deploy.plan import inputs, job_model
from deploy.providers.vast.billing import fmt_usd
from deploy.providers.vast.settings import VastSettings

# Offers the service must consider at all; not something a user relaxes.
ALWAYS = {"rentable": {"eq": True}, "rented": {"eq": False}, "external": {"eq": False}}


@dataclass(frozen=True)
class OfferFilter:
    key: str        # the configs/deploy.yaml key under `vast:` that sets it (what the user changes)
    field: str      # the offer field the API filters on
    op: str         # eq, gte, lte, in
    value: object
    row_field: str | None = None   # the row field that answers it, when not `field`
    row_value: object = None       # ... and the value it must have

    @property
    def checked_field(self) -> str:
        return self.row_field or self.field

    def passes(self, offer: dict) -> bool:
        if self.row_field:
            return offer.get(self.row_field) == self.row_value
        v = offer.get(self.field)
        if self.field == "reliability":  # newer rows carry reliability2; older ones reliability
            v = offer.get("reliability2", v)
        if self.op == "eq":
            return v == self.value
        if self.op == "in":
            return v in self.value
        if v is None:
            return False
        return float(v) >= float(self.value) if self.op == "gte" else float(v) <= float(self.value)

    def describe(self) -> str:
        sym = {"eq": "=", "gte": ">=", "lte": "<=", "in": "in"}[self.op]
        value = "[" + ", ".join(map(str, self.value)) + "]" if self.op == "in" else self.value
        return f"{self.key} ({self.field} {sym} {value})"


def offer_filters(s: VastSettings) -> list[OfferFilter]:
    """The user's filters, in the order they are explained when nothing matches."""
    f = [
        OfferFilter("gpu_name", "gpu_name", "in", [s.gpu_name, *s.gpu_fallbacks]),
        OfferFilter("num_gpus", "num_gpus", "eq", s.num_gpus),
    ]
    if s.min_reliability:
        f.append(OfferFilter("min_reliability", "reliability", "gte", s.min_reliability))
    if s.bid_price is not None:
        # Interruptible: we pay our bid, so the host's minimum bid must be below it.
        f.append(OfferFilter("bid_price", "min_bid", "lte", s.bid_price))
    elif s.max_price_per_hour:
        f.append(OfferFilter("max_price_per_hour", "dph_total", "lte", s.max_price_per_hour))
    f.append(OfferFilter("disk_gb", "disk_space", "gte", s.disk_gb))
    if s.min_inet_down_mbps:
        f.append(OfferFilter("min_inet_down_mbps", "inet_down", "gte", s.min_inet_down_mbps))
    if s.min_cuda:
        f.append(OfferFilter("min_cuda", "cuda_max_good", "gte", s.min_cuda))
    if s.direct_ports:
        f.append(OfferFilter("direct_ports", "direct_port_count", "gte", 1))
    if s.verified:
        f.append(OfferFilter("verified", "verified", "eq", True, row_field="verification", row_value="verified"))
    return f


def build_query(filters: list[OfferFilter]) -> dict:
    q = {k: dict(v) for k, v in ALWAYS.items()}
    for f in filters:
        q.setdefault(f.field, {})[f.op] = f.value
    return q


def order_for(s: VastSettings) -> list:
    # job_cost: the service cannot rank by it; fetch the cheapest hours, then deploy/plan/job_model.py re-ranks
    if s.order_by == "dlperf_per_dollar":
        return [["dlperf_per_dphtotal", "desc"], ["dph_total", "asc"]]
    return [["dph_total", "asc"], ["reliability", "desc"]]


def price_per_hour(offer: dict, s: VastSettings) -> float:
    """$/h including the disk: the search's dph_total (priced at our disk size), or our bid plus the disk."""
    if s.bid_price is not None:
        return s.bid_price + (offer.get("storage_total_cost") or
                              (offer.get("storage_cost") or 0.0) * s.disk_gb / (30 * 24))
    return float(offer["dph_total"])


def ranked(offers: list[dict], s: VastSettings, job: job_model.Job) -> list[tuple[dict, dict]]:
    """(offer, whole-job estimate) pairs in vast.order_by order (job_cost | price | dlperf_per_dollar)."""
    return job_model.rank(offers, job, s.order_by, price_of=lambda o: price_per_hour(o, s))


def as_json(pairs: list[tuple[dict, dict]]) -> list[dict]:
    """What `offers --json` prints: one element per offer, best first."""
    return [{**est, "reliability": o.get("reliability2", o.get("reliability")), "geolocation": o.get("geolocation"),
             "bound": job_model.bound(est)} for o, est in pairs]


def search(call, sdk, s: VastSettings, limit: int = 64) -> list[dict]:
    """Offers that pass every filter, best first. `call` is the provider's retrying SDK caller."""
    filters = offer_filters(s)
    offers = call(sdk.search_offers, query=build_query(filters), type="bid" if s.bid_price is not None else "on-demand",
                  order=order_for(s), limit=limit, storage=float(s.disk_gb), no_default=True)
    return [o for o in offers if all(f.passes(o) for f in filters)]


def explain_empty(call, sdk, s: VastSettings) -> str:
    """Why nothing matched: which single filter, relaxed, would bring offers back.

    One broad search (the GPU models, any count, any price), then every filter applied
    client-side with each one left out in turn: one extra request, not one per filter.
    """
    filters = offer_filters(s)
    broad = call(sdk.search_offers, query=build_query(filters[:1]), type="bid" if s.bid_price is not None else "on-demand",
                 order=[["dph_total", "asc"]], limit=1000, storage=float(s.disk_gb), no_default=True)
    wanted = filters[0].describe()
    if not broad:
        return (f"no rentable Vast.ai offer has {wanted} at all right now; "
                f"add other models to vast.gpu_fallbacks or try again later")
    lines = []
    for left_out in filters:
        others = [f for f in filters if f is not left_out]
        rescued = [o for o in broad if all(f.passes(o) for f in others)]
        if rescued:
            cheapest = min(price_per_hour(o, s) for o in rescued)
            lines.append(f"{left_out.describe()} removes {len(rescued)} offer(s) that pass every other filter "
                         f"(cheapest {fmt_usd(cheapest)}/h)")
    if lines:
        return "no offer matches the vast: filters. " + "; ".join(lines) + ". Relax that key in configs/deploy.yaml."
    failing = [f.describe() for f in filters[1:] if not any(f.passes(o) for o in broad)]
    detail = (" No offer passes " + ", ".join(failing) + ".") if failing else ""
    return (f"no offer matches the vast: filters: {len(broad)} offer(s) have {wanted} but each fails two or more "
            f"filters at once.{detail} Relax several keys under vast: in configs/deploy.yaml.")


def print_table(pairs: list[tuple[dict, dict]], s: VastSettings, job: job_model.Job, limit: int = 15,
                file=None, detail: int = 3) -> None:
    """The offers, best first, as a rich table, then the phases of the top `detail` (what `offers` shows)."""
    from rich.console import Console
    from rich.table import Table

    out = file or sys.stdout
    console = Console(file=out, width=None if out.isatty() else 160)
    order = {"dlperf_per_dollar": "DLPerf per $", "price": "price per hour"}.get(s.order_by, "whole-job cost")
    t = Table(title=f"Vast.ai offers for {s.num_gpus}x {' / '.join([s.gpu_name, *s.gpu_fallbacks])}, "
                    f"{s.disk_gb:g} GB disk, best first by {order}")
    for name, justify in [("offer id", "right"), ("GPUs", "left"), ("$/h incl. disk", "right"),
                          ("reliability", "right"), ("down Mb/s", "right"), ("CPU cores", "right"),
                          ("TFLOPS", "right"), ("DLPerf/$", "right"), ("est. job", "right"), ("job time", "right"),
                          ("bound by", "left"), ("where", "left")]:
        t.add_column(name, justify=justify)
    for o, est in pairs[:limit]:
        rel = o.get("reliability2", o.get("reliability")) or 0.0
        t.add_row(str(o["id"]), f"{o.get('num_gpus')}x {o.get('gpu_name')}", fmt_usd(est["price_per_hour"]),
                  f"{rel * 100:.1f}%", f"{o.get('inet_down', 0):.0f}", f"{o.get('cpu_cores_effective') or '?'}",
                  f"{o.get('total_flops') or 0:.0f}", f"{o.get('dlperf_per_dphtotal', 0):.1f}",
                  fmt_usd(est["job_cost_usd"]), job_model.fmt_minutes(est["job_hours"]), est["dominant"],
                  str(o.get("geolocation") or "?"))
    console.print(t)
    if len(pairs) > limit:
        console.print(f"... and {len(pairs) - limit} more")
    for i, (o, est) in enumerate(pairs[:detail], 1):
        console.print(f"{i}. offer {o['id']}: {job_model.breakdown(est)} = {job_model.fmt_minutes(est['job_hours'])}, "
                      f"{fmt_usd(est['job_cost_usd'])} (disk {fmt_usd(est['disk_usd'])} of it) - {job_model.bound(est)}",
                      highlight=False, markup=False)
    console.print(f"job model inputs: {inputs.describe_inputs(job)}", highlight=False, markup=False, soft_wrap=True)
