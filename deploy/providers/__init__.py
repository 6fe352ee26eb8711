"""Provider registry: the `provider:` value of configs/deploy.yaml -> its class.

Imported lazily so that `python -m deploy` for an SSH host never imports the vastai SDK.
"""

from __future__ import annotations

import importlib

from deploy.errors import UsageError

PROVIDERS = {
    "ssh": "deploy.providers.ssh:SshProvider",
    "vast": "deploy.providers.vast.provider:VastProvider",
}


def get_provider(config: dict, state):
    name = config["provider"]
    if name not in PROVIDERS:
        raise UsageError(f"unknown provider '{name}' in the deploy config (known: {', '.join(PROVIDERS)})")
    module, cls = PROVIDERS[name].split(":")
    try:
        provider_cls = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise UsageError(f"provider '{name}' cannot be loaded ({exc}): install the deploy extra "
                         f"(pip install -e '.[deploy]')") from None
    return provider_cls(config, state)
