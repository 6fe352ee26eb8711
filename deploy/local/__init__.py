"""What deploy/ keeps and runs on this machine (the user's), never on the host.

- state.py        .deploy/state.json: which host or instance, which run, what was fetched
- lock.py         one command at a time changes .deploy/ or rents (a second terminal waits or stops)
- jsonfile.py     JSON files written whole or not at all (temp file + fsync + rename), read under a lock
- trainer_cli.py  `python -m trainer ...` run here as a subprocess (scan, the trainer's own argument
                  parser): deploy/ never imports the trainer or TensorFlow
"""
