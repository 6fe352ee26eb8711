"""Where the host downloads dataset.url / dataset.kaggle from, with which credentials: decided here.

The laptop half of the host's own download (deploy/host/shipped/download_dataset.py, which
reads `for_host`'s JSON line on stdin). Kaggle's account key never leaves this machine: the
host gets a signed link (deploy/dataset/kaggle.py).
"""

from __future__ import annotations

from deploy.dataset import kaggle as kaggle_api
from deploy.errors import UsageError


def source(url: str | None, kaggle: str | None, token_env: str | None, env) -> tuple[str, dict]:
    """(url, headers) to ask about dataset.url / dataset.kaggle FROM THIS MACHINE (the plan's size
    lookup). What the host gets is `for_host`'s: never the Kaggle key."""
    if kaggle:
        return f"{kaggle_api.api_base(env)}/datasets/download/{kaggle}", kaggle_api.basic_auth(env)
    if token_env:
        if not env.get(token_env):
            raise UsageError(f"dataset.token_env names {token_env}, which is not set in this shell: export it first")
        return url, {"Authorization": f"Bearer {env[token_env]}"}
    return url, {}


def for_host(url: str | None, kaggle: str | None, token_env: str | None, env) -> dict:
    """The JSON line the host's download reads: url, headers, and `id` (what identifies the dataset
    across syncs: a signed link changes every time it is asked for)."""
    if kaggle:
        return {"url": kaggle_api.signed_url(kaggle, env), "headers": {}, "id": f"kaggle:{kaggle}"}
    url, headers = source(url, None, token_env, env)
    return {"url": url, "headers": headers, "id": url}
