"""Provider `vast`: renting a GPU instance on Vast.ai through the official `vastai` SDK.

The rental life cycle, one module per stage (each a mixin of VastProvider):

- provider.py        VastProvider put together: settings, API, this project's instance and its label
- up.py              `offers` and `up`: reuse this project's instance, or rent the best offer that comes up
- create.py          one create request: onstart script, request fields, refusals, the billed price
- wait.py            until it runs and answers SSH (fresh or restarted); the running-time ledger
- watchdog_setup.py  copying the cost watchdog (deploy/host/shipped/) to the instance and starting it
- running.py         an instance that exists: start it again, change its bid, describe it for `status`
- down.py            destroy it (refused while results are unfetched), forget its host keys

What those stages use:

- settings.py        the `vast:` keys of configs/deploy.yaml, validated
- api.py             the SDK: rate limits waited out, one-line errors, what a create really did
- rows.py            what an instance or offer row means, and every field read from one (checked
                     against the vendor's spec by tests/deploy/test_vast_spec_fields.py)
- offers.py          the offer query from the config, the re-check, the table, why nothing matched
- billing.py         money: what a run costs and has cost, when the guards stop it
- image.py           the image reference and the private-registry login
- registry.py        asking the image's registry whether the tag exists and how big the pull is
- checks.py          what `check` asks Vast.ai (free reads only) before anything is rented
"""
