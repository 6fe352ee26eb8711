"""The host side: reaching a machine over SSH and what deploy/ knows about it.

- remote.py        the SSH connection (fabric/paramiko): pinned host keys, retries, shell quoting
- tunnel.py        a local port forwarded over that connection (`tensorboard`), guarded by tunnel_gate.py
- host_text.py     the one sanitiser for text a host sends back to the user's terminal
- hostcheck.py     what `up` learns about a host: workspace, Python, rsync, GPUs, disk
- layout.py        where things are: the project root here, the workspace there
- overlay.py       remote.python `overlay`: a venv over the image's own TensorFlow
- gpu_stats.py     nvidia-smi's CSV, parsed by column name
- shipped/         the files copied to the host and run THERE (standard library only)
"""
