"""Every field the provider reads from a Vast.ai answer exists in the vendor's own example answers.

The examples are copies from the OpenAPI spec (`vast-ai/docs`, see tests/deploy/vast_spec/
SOURCES.md). Our old fake had an offer field `verified` that real rows do not carry, and
every real offer was dropped while the tests stayed green; this is the guard against that.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.providers.vast import offers, rows
from deploy.providers.vast.settings import VastSettings
from tests.deploy.fake_vast import spec_example

REPO = Path(__file__).resolve().parents[2]
OFFER = set(spec_example("search_offers.offer.json"))
INSTANCE = set(spec_example("show_instance.instance.json")) | set(spec_example("show_instances.instance.json"))
CREATE = {k for body in spec_example("create_instance.responses.json").values() for k in body}
# dstack's api_client reads `new_contract` from a failed create's body (SOURCES.md); the
# spec's 200 example has it, its error examples do not list it.
CREATE_ERROR_EXTRA = {"new_contract"}
USER = set(spec_example("show_user.json")) | set(spec_example("users_current.authentication.json"))
SSH_KEY = set(spec_example("show_ssh_keys.key.json"))


@pytest.mark.parametrize("read, example, name", [
    (rows.OFFER_FIELDS, OFFER, "search_offers.yaml offer row"),
    (rows.INSTANCE_FIELDS, INSTANCE, "show_instance(s).yaml instance row"),
    (rows.CREATE_FIELDS, CREATE | CREATE_ERROR_EXTRA, "create_instance.yaml responses"),
    (rows.USER_FIELDS, USER, "show_user.yaml / authentication.mdx"),
    (rows.SSH_KEY_FIELDS, SSH_KEY, "show_ssh_keys.yaml"),
])
def test_every_field_the_provider_reads_is_in_the_spec_example(read, example, name):
    missing = sorted(set(read) - example)
    assert not missing, f"the provider reads {missing}, which the {name} example does not have"


def test_every_offer_filter_is_rechecked_on_a_field_the_rows_really_carry():
    for kwargs in ({}, {"bid_price": 0.5}):
        for f in offers.offer_filters(VastSettings.from_config(kwargs)):
            assert f.checked_field in OFFER, f"filter {f.key} re-checks offer field {f.checked_field!r}: not in rows"
    # `verified` is a request-only field: rows answer it with verification / vericode
    assert "verified" not in OFFER and {"verification", "vericode"} <= OFFER


# Which variables hold which answer, per source file (the names the code uses for them).
RENTAL = {"row": "instance", "existing": "instance", "r": "instance", "offer": "offer", "best": "offer"}
SOURCES = {
    **{f"deploy/providers/vast/{stage}.py": RENTAL for stage in ("provider", "up", "create", "wait", "running", "down")},
    "deploy/providers/vast/rows.py": {"row": "instance"},
    "deploy/providers/vast/api.py": {"r": "create", "body": "create"},
    "deploy/providers/vast/offers.py": {"o": "offer", "offer": "offer"},
    "deploy/providers/vast/checks.py": {"row": "instance", "offer": "offer", "o": "offer", "best": "offer", "user": "user",
                                        "k": "ssh_key"},
    "deploy/plan/job_model.py": {"offer": "offer"},
}
# Modules of the provider that read no answer of the service's fields by name.
NO_ANSWERS = {"__init__", "settings", "image", "billing", "registry", "watchdog_setup"}
DECLARED = {"instance": rows.INSTANCE_FIELDS | {"label"}, "offer": rows.OFFER_FIELDS,
            "create": rows.CREATE_FIELDS | {"label", "message", "detail"},  # response_message's fall-backs
            "user": rows.USER_FIELDS, "ssh_key": rows.SSH_KEY_FIELDS}


def test_the_sources_read_only_declared_fields():
    """A `row.get("x")` in the provider that is not declared above (and so not checked against the spec) fails."""
    for rel, names in SOURCES.items():
        path = REPO / rel
        assert path.is_file(), f"{rel} is gone: point SOURCES at the module that now reads these answers"
        text = path.read_text()
        for var, kind in names.items():
            # row.get("x"), row["x"], and job_model.py's _f(offer, "x", ...) number reader
            for key in re.findall(rf"(?:\b{var}(?:\.get\(|\[)|_f\({var}, )[\"']([a-z_0-9]+)[\"']", text):
                assert key in DECLARED[kind], f"{rel} reads {var}[{key!r}] ({kind}), not declared in rows.py"


def test_every_module_of_the_provider_is_scanned_or_reads_no_answer():
    """A module split off the provider (or added to it) is scanned too: nothing falls out of the check above."""
    for path in sorted((REPO / "deploy" / "providers" / "vast").glob("*.py")):
        rel = str(path.relative_to(REPO))
        assert rel in SOURCES or path.stem in NO_ANSWERS, f"{rel}: add it to SOURCES (or NO_ANSWERS)"
