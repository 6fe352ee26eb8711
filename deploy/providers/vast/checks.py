"""What `python -m deploy check` asks Vast.ai and checks locally before renting; it costs nothing.

The service is asked only what reading costs nothing: the account (the API key works, its
credit), its SSH keys, one offer search and one broader search when nothing matches. Locally:
the SSH key loads, the image reference parses and its registry has the tag (and how much a
host would pull). Each finding is one line on deploy/preflight.py's Findings; deploy/check.py
runs this after the checks both providers share. The API key is never printed.
"""

from __future__ import annotations

import os
from pathlib import Path

from deploy.config import OVERLAY
from deploy.errors import UsageError
from deploy.preflight import Findings
from deploy.providers.vast import billing, image, offers, registry


def run(provider, f: Findings) -> None:
    """Every Vast.ai finding, in the order a user fixes them (the key first: without it nothing else is asked)."""
    user = _check_api_key(provider, f)
    if user is not None:
        _check_credit(provider, user, f)
    public = _check_ssh_key(provider, f)
    if user is not None and public:
        _check_key_registered(provider, public, f)
    _check_image(provider, f)
    _check_image_pull(provider, f)
    if user is not None:
        _check_offers(provider, f)


def _check_api_key(provider, f: Findings) -> dict | None:
    try:
        user = provider.api.user()
    except UsageError as exc:
        f.add("FIX", "API key", str(exc))
        return None
    who = user.get("email") or user.get("id") or "this account"
    f.add("ok", "API key", f"works (account {who}); it is read from VAST_API_KEY or ~/.config/vastai/vast_api_key")
    return user


def _check_credit(provider, user: dict, f: Findings) -> None:
    """The account's money is `credit` (vast-ai/docs api-reference/authentication.mdx: the
    users/current answer shows "credit": 25.00; the vastai SDK's `show user` table prints both
    Credit and Balance, cli/display.py user_fields); `balance` is shown beside it, never judged."""
    s = provider.s
    credit = _number(user.get("credit"))
    balance = _number(user.get("balance"))
    beside = "" if balance is None else f" (balance {billing.fmt_usd(balance)})"
    if credit is None:
        f.add("warn", "credit", f"the account answer has no credit{beside}: check https://cloud.vast.ai/billing/")
        return
    need = (s.max_price_per_hour or 0.0) * min(s.expected_hours, s.max_hours or s.expected_hours)
    if s.budget_usd:
        need = min(need, s.budget_usd) if need else s.budget_usd
    if credit <= 0:
        f.add("FIX", "credit", f"credit {billing.fmt_usd(credit)}{beside}: add credit at https://cloud.vast.ai/billing/ "
                               f"(instances stop when it reaches $0)")
    elif need and credit < need:
        f.add("warn", "credit", f"credit {billing.fmt_usd(credit)}{beside} is less than a run may cost "
                                f"({billing.fmt_usd(need)}: max_price_per_hour x expected_hours, capped by budget_usd)")
    else:
        f.add("ok", "credit", f"credit {billing.fmt_usd(credit)}{beside}")


def _number(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if x == x and x not in (float("inf"), float("-inf")) else None


def _check_ssh_key(provider, f: Findings) -> str | None:
    """The private key loads (directly, or from the SSH agent when it has a passphrase); -> the public key."""
    import paramiko

    priv = provider._identity_file()
    pub = Path(str(priv) + ".pub")
    if not priv.is_file():
        f.add("FIX", "SSH key", f"no private key at {priv}: `ssh-keygen -t ed25519` or set ssh.identity_file")
        return None
    if not pub.is_file():
        f.add("FIX", "SSH key", f"no public key at {pub}: `ssh-keygen -y -f {priv} > {pub}`")
        return None
    public = pub.read_text().strip()
    blob = public.split()[1] if len(public.split()) > 1 else ""
    try:
        try:
            key = paramiko.PKey.from_path(str(priv))
        except TypeError as exc:  # paramiko 5 / cryptography: "Key is password-protected, but ..."
            if "password" not in str(exc).lower():
                raise ValueError(str(exc)) from None
            raise paramiko.PasswordRequiredException(str(exc)) from None
    except paramiko.PasswordRequiredException:
        agent_keys = []
        if os.environ.get("SSH_AUTH_SOCK"):
            try:
                agent_keys = [k.get_base64() for k in paramiko.Agent().get_keys()]
            except paramiko.SSHException:
                agent_keys = []
        if blob in agent_keys:
            f.add("ok", "SSH key", f"{priv} has a passphrase and is loaded in the SSH agent")
            return public
        f.add("FIX", "SSH key", f"{priv} has a passphrase and the SSH agent does not hold it: run `ssh-add {priv}` "
                                f"(deploy/ never asks for passphrases)")
        return None
    except (paramiko.SSHException, OSError, ValueError) as exc:
        f.add("FIX", "SSH key", f"{priv} does not load as an SSH private key ({exc})")
        return None
    if key.get_base64() != blob:
        f.add("FIX", "SSH key", f"{pub} is not the public half of {priv}: `ssh-keygen -y -f {priv} > {pub}`")
        return None
    f.add("ok", "SSH key", f"{priv} loads ({key.get_name()})")
    return public


def _check_key_registered(provider, public: str, f: Findings) -> None:
    try:
        keys = provider.api.ssh_keys()
    except Exception as exc:  # informational: `up` attaches the key to the instance either way
        f.add("warn", "SSH key", f"could not list the account's SSH keys ({type(exc).__name__})")
        return
    blob = public.split()[1] if len(public.split()) > 1 else public
    if any(blob in str(k.get("key") or "") for k in keys if isinstance(k, dict)):
        f.add("ok", "SSH key", "registered on the Vast.ai account; `up` also attaches it to the instance")
    else:
        f.add("ok", "SSH key", "not on the Vast.ai account: `up` attaches it to the instance through the API "
                               "(POST /instances/{id}/ssh/)")


def _check_image(provider, f: Findings) -> None:
    s = provider.s
    try:
        registry_host, path, tag = image.parse(s.image)
    except UsageError as exc:
        f.add("FIX", "image", str(exc))
        return
    if tag is None:
        f.add("warn", "image", f"{s.image} has no tag, so :latest is pulled: pin one so every instance runs the "
                               f"image you tested")
    if s.image_login:
        if not os.environ.get(s.image_login["password_env"]):
            f.add("FIX", "image", f"vast.image_login reads the {registry_host} token from "
                                  f"${s.image_login['password_env']}, which is not set: export it")
        else:
            f.add("ok", "image", f"{s.image}: {registry_host} login as {s.image_login['username']} "
                                 f"(token from ${s.image_login['password_env']})")
        return
    if registry_host in image.LOGIN_USUALLY_NEEDED:
        f.add("FIX", "image", f"{s.image} is on {registry_host}, where new packages are private by default: "
                              f"make the package public, or set vast.image_login: "
                              f"{{username: USER, password_env: VAR}} with a read-only token in $VAR")
    else:
        f.add("ok", "image", f"{s.image} (registry {registry_host}, no login: it must be public)")


def _check_offers(provider, f: Findings) -> None:
    s = provider.s
    try:
        matching = offers.search(provider._call, provider.sdk, s)
    except UsageError as exc:
        f.add("FIX", "offers", str(exc))
        return
    filters = offers.offer_filters(s)
    if matching:
        rows = matching
    else:
        try:
            f.add("FIX", "offers", offers.explain_empty(provider._call, provider.sdk, s))
        except UsageError as exc:
            f.add("FIX", "offers", str(exc))
            return
        rows = provider._call(provider.sdk.search_offers, query=offers.build_query(filters[:1]),
                              type="bid" if s.bid_price is not None else "on-demand", limit=5,
                              storage=float(s.disk_gb), no_default=True)
    # Every re-check reads a field the rows really carry (an absent field drops every offer).
    if rows:
        missing = sorted({flt.checked_field for flt in filters if not any(flt.checked_field in o for o in rows)})
        for name in missing:
            keys = [flt.key for flt in filters if flt.checked_field == name]
            f.add("FIX", "offers", f"vast.{keys[0]} is checked on offer field {name!r}, which Vast.ai's rows do not "
                                   f"carry: every offer would be dropped (report this as a bug)")
    if matching:
        best = matching[0]
        f.add("ok", "offers", f"{len(matching)} match; the best is {best.get('num_gpus')}x {best.get('gpu_name')} at "
                              f"{billing.fmt_usd(offers.price_per_hour(best, s))}/h (`python -m deploy offers`)")


def _check_image_pull(provider, f: Findings) -> None:
    """Ask the image's registry: does the tag exist (else the closest that do), how much a host pulls."""
    s, python = provider.s, provider.config["remote"]["python"]
    if not s.image or image.PLACEHOLDER in s.image:
        return  # _check_image has said what to set
    if image.is_vendor_image(s.image) and "tensorflow" in s.image and python != OVERLAY \
            and not python.startswith("/venv/main/"):
        f.add("FIX", "image", f"{s.image} keeps TensorFlow in /venv/main, which remote.python {python!r} does "
                              f"not use: set remote.python: overlay (adds only what the trainer lacks)")
    facts = registry.lookup(s.image, s.image_login)
    if facts.exists is False:
        f.add("FIX", "image", registry.missing_line(facts) + " (a host would fail to pull it)")
        return
    if facts.exists is None:
        f.add("warn", "image", f"could not ask the registry about {s.image} ({facts.problem}): a tag that does not "
                               f"exist fails on the host, after renting")
        size, how = (s.image_gb * 1e9 if s.image_gb else None), "vast.image_gb"
    else:
        pull = registry.pull_estimate(s.image, s.image_login, facts=facts)
        size, how = (s.image_gb * 1e9, "vast.image_gb") if s.image_gb else (pull.bytes, pull.how)
        f.add("ok", "image", f"{s.image} exists on {facts.registry}: {(facts.compressed_bytes or 0) / 1e9:.2f} GB "
                             f"compressed (linux/amd64)")
    if size is None:
        if facts.exists is None:
            f.add("warn", "image", "a host pulls all of it before anything runs (billed): set vast.image_gb "
                                   "to state its size")
        return
    tf_image = image.VENDOR_TF_IMAGE
    if size > s.max_image_pull_gb * 1e9 and image.is_vendor_image(s.image):
        f.add("ok", "image", f"a host pulls {size / 1e9:.1f} GB of {s.image} before anything runs ({how}): "
                             f"the vendor's own layers above its cached base; nothing of ours to build or push")
    elif size > s.max_image_pull_gb * 1e9:
        f.add("warn", "image", f"a host pulls {size / 1e9:.1f} GB of {s.image} before anything runs (billed; {how}): "
                               f"use vast.image: {tf_image} with remote.python: overlay (nothing to build or push), "
                               f"or `make image-thin` (our layers only, ~0.2 GB)")
    else:
        f.add("ok", "image", f"a host pulls {size / 1e9:.1f} GB of {s.image} ({how}; at most "
                             f"vast.max_image_pull_gb {s.max_image_pull_gb:g})")
