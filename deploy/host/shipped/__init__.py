"""Files copied to the rented host and run there, by whatever Python >= 3.8 it has.

Standard library only, and nothing from deploy/ but each other: deploy/ is not synced to
the host (only trainer/ is), so each file travels on its own (tests/test_layout.py checks
the rule for every module in this folder).

- watchdog.py          the cost watchdog (Vast.ai): stops the instance at max_hours, budget_usd
                       or when idle; copied with runstate.py by providers/vast/watchdog_setup.py
- runstate.py          the one "is this run alive?" rule (a POSIX sh function), shared with
                       logs/start/stop/status here
- download_dataset.py  downloads and unpacks dataset.url / dataset.kaggle on the host, sent
                       with safe_tree.py by sync.host_program
- safe_tree.py         writing and reading under one folder without following a hostile name
                       or symlink out of it (also used here by `fetch`)
"""
