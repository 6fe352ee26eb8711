"""The Vast.ai API as deploy/ uses it: the `vastai` SDK, with rate limits waited out and errors made one line.

Facts this layer follows (vendor docs `vast-ai/docs`, `api-reference/rate-limits-and-errors.mdx`
and each spec file's `x-rate-limit`):

- Limits are a minimum interval per endpoint and identity; a 429 carries no `Retry-After`
  and often a plain-text body ("API requests too frequent endpoint threshold=4.5"). The
  SDK retries a 429 a few times within a second; past that we back off ourselves,
  doubling from 2 s, so a create's 12 s penalty is outwaited.
- Creates are spaced `vast.create_interval_seconds` (5 s) apart: the create endpoint's
  threshold is 4.5 s, and trying the next offer right after a taken one would hit it.
- The daily search quota (`search_quota_exceeded`, vastai SDK `api/client.py`) resets
  only at UTC midnight: retrying burns requests, so it is one clear line and exit 2.
- A failed create may still have made an instance: dstack's client reads `new_contract`
  from the error body (an interruptible create with too low a bid is created stopped) and
  destroys it. `create()` hands that id back so nothing is left billing disk.
- A refused create is about the offer unless it is about the account: dstack raises
  NoCapacityError for any failed create (its api_client.create_instance), which moves it to
  the next offer; SkyPilot's failover does the same. Only a refusal no other offer can fix
  stops at once: the key (401, or a 403 auth_error), the account's billing (`missing_billing`,
  the error enum of manage_instance.yaml / stop_instance.yaml; a 402 or a message about credit,
  balance or billing), a quota, and `no_ssh_key_for_vm` (create_instance.yaml's 400 enum: the
  account has no SSH key).
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass

from deploy.errors import UsageError


@dataclass
class CreateResult:
    """What a create request did. `leftover`: an instance a failed create made anyway (destroy it)."""

    instance_id: int | None = None
    outcome: str = "ok"            # ok | taken | invalid_price | refused (this offer) | account (every offer)
    message: str = ""
    leftover: int | None = None


def response_message(resp) -> str:
    """The human part of an error answer: JSON `msg`/`error`/`detail`, or the plain-text body."""
    if resp is None:
        return "no answer"
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or "").strip()[:300] or f"HTTP {resp.status_code}"
    if isinstance(body, dict):
        return str(body.get("msg") or body.get("message") or body.get("detail") or body.get("error") or body)
    return str(body)


ACCOUNT_ERRORS = {"missing_billing", "no_ssh_key_for_vm", "auth_error", "search_quota_exceeded"}
_ACCOUNT_WORDS = re.compile(r"credit|balance|billing|payment|quota|insufficient funds|api key", re.I)


def account_level(code: int | None, error: str | None, message: str) -> bool:
    """A create refusal that no other offer would escape (see the module's notes)."""
    return code in (401, 402) or (error or "") in ACCOUNT_ERRORS or bool(_ACCOUNT_WORDS.search(message or ""))


def _json(resp) -> dict:
    try:
        body = resp.json()
    except (ValueError, AttributeError):
        return {}
    return body if isinstance(body, dict) else {}


class VastApi:
    """One SDK client for one provider; every call goes through `call`."""

    def __init__(self, settings):
        self.s = settings
        self._sdk = None
        self._last_create: float | None = None

    @property
    def sdk(self):
        if self._sdk is None:
            try:
                from vastai import VastAI
            except ImportError:
                raise UsageError("the vastai SDK is not installed: pip install -e '.[deploy]'") from None
            from deploy.http_guard import refuse_plain_http

            refuse_plain_http(self.s.server_url, "the Vast.ai API key", "vast.server_url")
            try:
                # raw/quiet: data back, nothing printed by the SDK (it would never print the key anyway).
                self._sdk = VastAI(server_url=self.s.server_url.rstrip("/"), retry=3, raw=True, quiet=True)
            except RuntimeError:
                raise UsageError("no Vast.ai API key: save it with `vastai set api-key \"$(read -rs k; echo \"$k\")\"` "
                                 "(~/.config/vastai/vast_api_key), or `read -rs VAST_API_KEY && export VAST_API_KEY`"
                                 ) from None
        return self._sdk

    def call(self, fn, *args, **kwargs):
        """One SDK call, with 429 answers backed off and HTTP failures turned into one-line errors."""
        import requests
        from vastai.api.client import is_search_quota_exceeded

        delay = 2.0
        for attempt in range(self.s.api_retries + 1):
            try:
                return fn(*args, **kwargs)
            except requests.HTTPError as exc:
                resp = exc.response
                code = resp.status_code if resp is not None else None
                if code == 429 and is_search_quota_exceeded(resp):
                    reset = resp.headers.get("X-RateLimit-Reset")
                    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(int(reset))) if (
                        reset and reset.isdigit()) else "UTC midnight"
                    raise UsageError(f"Vast.ai's daily offer-search quota for this account is used up; it resets "
                                     f"at {when} (retrying earlier only burns requests)") from None
                if code == 429 and attempt < self.s.api_retries:
                    # No Retry-After on Vast.ai (rate-limits-and-errors.mdx): our own back-off.
                    print(f"Vast.ai is rate-limiting requests (429: {response_message(resp)}); "
                          f"retrying in {delay:.0f}s", file=sys.stderr)
                    time.sleep(delay)
                    delay = min(delay * 2, 60)
                    continue
                # 401 auth_error (show_instance.yaml); a 403 without an error code is the key too, while
                # create's 403 invalid_args ("offer is not your own") is the create's own failure.
                if code == 401 or (code == 403 and _json(resp).get("error") in (None, "auth_error")):
                    raise UsageError(f"Vast.ai rejected the API key (HTTP {code}): check VAST_API_KEY or "
                                     f"~/.config/vastai/vast_api_key") from None
                if code == 429:
                    raise UsageError(f"Vast.ai kept rate-limiting requests after {self.s.api_retries} back-offs "
                                     f"({response_message(resp)}); try again in a minute") from None
                raise
            except requests.ConnectionError:
                raise UsageError(f"cannot reach the Vast.ai API at {self.s.server_url}: check your network "
                                 f"or vast.server_url") from None
        raise AssertionError("unreachable")

    # -- instances ---------------------------------------------------------------------
    def show(self, iid: int) -> dict | None:
        import requests

        try:
            row = self.call(self.sdk.show_instance, iid)
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return None
            raise
        return row or None

    def labelled(self, label: str) -> list[dict]:
        rows = self.call(self.sdk.show_instances)  # the SDK follows next_token over every page
        return [r for r in rows if r.get("label") == label]

    def destroy(self, iid: int, timeout: float = 60) -> bool:
        """Destroy and confirm it is gone; False when it did not exist any more."""
        import requests

        try:
            self.call(self.sdk.destroy_instance, iid)
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return False
            raise
        deadline = time.monotonic() + timeout
        while self.show(iid) is not None:
            if time.monotonic() > deadline:
                raise UsageError(f"asked Vast.ai to destroy instance {iid} but it still exists after {timeout:.0f}s: "
                                 f"check https://cloud.vast.ai/instances/ and destroy it there")
            time.sleep(min(self.s.poll_seconds, 2))
        return True

    def create(self, offer_id: int, kwargs: dict) -> CreateResult:
        """Rent an offer. Creates are spaced create_interval_seconds apart (the endpoint's minimum interval)."""
        import requests

        if self._last_create is not None:
            wait = self.s.create_interval_seconds - (time.monotonic() - self._last_create)
            if wait > 0:
                time.sleep(wait)
        try:
            r = self.call(self.sdk.create_instance, offer_id, **kwargs)
        except requests.HTTPError as exc:
            resp = exc.response
            code = resp.status_code if resp is not None else None
            body = _json(resp)
            leftover = body.get("new_contract")
            msg = response_message(resp)
            if code in (404, 410) or "no_such_ask" in msg:
                return CreateResult(None, "taken", msg, leftover)
            if body.get("error") == "invalid_price":
                return CreateResult(None, "invalid_price", msg, leftover)
            outcome = "account" if account_level(code, body.get("error"), msg) else "refused"
            return CreateResult(None, outcome, f"HTTP {code}: {msg}", leftover)
        finally:
            self._last_create = time.monotonic()
        if not r.get("success", True) or not r.get("new_contract"):
            msg = str(r.get("msg") or r.get("error"))
            outcome = "taken" if r.get("error") in ("no_such_ask", "ask_unavailable") else (
                "invalid_price" if r.get("error") == "invalid_price" else
                "account" if account_level(None, r.get("error"), msg) else "refused")
            # a success=false answer may still name the contract it made (dstack)
            return CreateResult(None, outcome, msg, r.get("new_contract"))
        return CreateResult(int(r["new_contract"]))

    def logs(self, iid: int) -> str:
        text = self.call(self.sdk.logs, iid, tail="1000")
        return text if isinstance(text, str) else str(text)

    def attach_key(self, iid: int, public_key: str) -> None:
        self.call(self.sdk.attach_ssh, iid, public_key)

    def start(self, iid: int) -> None:
        self.call(self.sdk.start_instance, iid)

    def change_bid(self, iid: int, price: float) -> None:
        self.call(self.sdk.change_bid, iid, price=price)  # PUT /instances/bid_price/{id}/ (change_bid.yaml)

    # -- the account -------------------------------------------------------------------
    def user(self) -> dict:
        return self.call(self.sdk.show_user)  # GET /users/current/ (show_user.yaml)

    def ssh_keys(self) -> list[dict]:
        keys = self.call(self.sdk.show_ssh_keys)  # GET /ssh/ (show_ssh_keys.yaml)
        return keys if isinstance(keys, list) else (keys or {}).get("keys", [])
