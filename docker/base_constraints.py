"""Print `name==version` for every distribution the running interpreter has: a pip constraints file.

Installing the trainer's packages on top of an environment that already has TensorFlow
(Vast's /venv/main in the thin image, or any host Python in `remote.python: overlay`)
must never replace what is there: TensorFlow's own numpy, protobuf, h5py... were built
and tested together. `pip install -c <this output> -r requirements` either adds only
what is missing or fails, naming the conflict.

Run by the thin image's Dockerfile (bind-mounted) and, as `python -c <this file>`, by
deploy/host/overlay.py on the host, so both places pin the same way.
"""

import importlib.metadata as md

seen = set()
for dist in md.distributions():
    name = (dist.metadata["Name"] or "").strip()
    if name and name.lower() not in seen:  # the first on sys.path is the one that imports
        seen.add(name.lower())
        print(f"{name}=={dist.version}")
