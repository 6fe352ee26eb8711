"""Re-make the JSON files in this folder from the vendor's OpenAPI spec (run by hand, not by the tests).

    git clone https://github.com/vast-ai/docs && python tests/deploy/vast_spec/extract.py docs

Each file is the spec's own example for one response, with where it came from in SOURCES.md.
Where the spec gives per-property `example:` values instead of one example object, the
object is assembled from them; where it gives none (show_user), the property names are kept
with null values.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def props_example(schema: dict) -> dict:
    return {k: v.get("example") for k, v in (schema.get("properties") or {}).items()}


def main(docs: str) -> None:
    y = Path(docs) / "api-reference" / "openapi" / "yaml"
    load = lambda name: yaml.safe_load((y / name).read_text())  # noqa: E731
    out = {}
    so = load("search_offers.yaml")["paths"]["/api/v0/bundles/"]["post"]
    out["search_offers.offer.json"] = so["responses"]["200"]["content"]["application/json"]["example"]["offers"]
    si = load("show_instance.yaml")
    out["show_instance.instance.json"] = props_example(si["components"]["schemas"]["Instance"])
    sis = load("show_instances.yaml")["paths"]["/api/v1/instances/"]["get"]["responses"]["200"]
    item = sis["content"]["application/json"]["schema"]["properties"]["instances"]["items"]
    out["show_instances.instance.json"] = props_example(item)
    ci = load("create_instance.yaml")["paths"]["/api/v0/asks/{id}/"]["put"]["responses"]
    out["create_instance.responses.json"] = {
        code: props_example(r["content"]["application/json"]["schema"])
        for code, r in ci.items() if "properties" in r["content"]["application/json"]["schema"]}
    su = load("show_user.yaml")["paths"]["/api/v0/users/current/"]["get"]["responses"]["200"]
    out["show_user.json"] = props_example(su["content"]["application/json"]["schema"])
    keys = load("show_ssh_keys.yaml")
    path = next(iter(keys["paths"].values()))["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    out["show_ssh_keys.key.json"] = props_example(path["items"])
    # api-reference/authentication.mdx, "Verify Your Key": the users/current answer as the docs show it
    # (it has `credit`, the account's money; the OpenAPI file lists `balance`).
    auth = (Path(docs) / "api-reference" / "authentication.mdx").read_text()
    block = auth.split("A successful response includes", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    out["users_current.authentication.json"] = json.loads(block)
    for name, data in out.items():
        (HERE / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        print(f"wrote {name}: {len(data)} fields")


if __name__ == "__main__":
    main(sys.argv[1])
