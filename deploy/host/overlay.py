"""remote.python: overlay — run on a host whose Python already has TensorFlow, adding only the rest.

Vast.ai's TensorFlow image (`vastai/tensorflow`, repository vast-ai/base-image,
derivatives/tensorflow) has TensorFlow with CUDA in /venv/main; hosts cache its layers,
so renting it pulls nothing of ours and nobody builds or pushes an image. A lab box with
a working TensorFlow is the same case. `overlay` makes <workspace>/venv on top of that
interpreter and installs there only what the trainer needs and the base lacks (OpenCV
headless, usually): TensorFlow is never downloaded again.

Why not `python -m venv --system-site-packages`: it inherits the base *installation's*
site-packages, which is right for a conda env (what /venv/main is in Vast's images: a
miniforge env) but wrong for a PEP 405 venv (a lab box's /opt/tf-venv), whose packages
it would not see. So the overlay venv gets a .pth line that runs `site.addsitedir()` on
each of the base's site-packages folders: both kinds work, and the base's own .pth files
(editable installs) are honoured too. Those folders come after the overlay's own on
sys.path, and pip sees their distributions as installed.

Nothing of the base may be replaced: pip runs with a constraints file pinning every
distribution the base has to its installed version, so a requirement the base cannot
satisfy fails with pip's reason instead of quietly installing a second numpy that
TensorFlow was not built against.
"""

from __future__ import annotations

import runpy

from deploy.errors import UsageError
from deploy.host.layout import Layout, project_root
from deploy.host.remote import Remote, q, rpath

# Where Vast.ai's images keep their main environment (base-image README, "Python Package
# Management": "Python packages install to the /venv/main/ virtual environment").
VAST_MAIN_PYTHON = "/venv/main/bin/python"
# What the trainer imports, as pyproject.toml's extras name it (the cpu/gpu extras are TensorFlow
# itself, which the base already has; the on-instance watchdog needs only the standard library).
EXTRAS = ("train",)

# Run by the base interpreter: its TensorFlow version and site-packages folders.
_BASE_FACTS = r"""
import importlib.metadata as md, importlib.util as u, site, sys, sysconfig
if u.find_spec("tensorflow") is None:
    print("no-tensorflow"); sys.exit(0)
dists = md.packages_distributions().get("tensorflow") or ["tensorflow"]
dirs = []
for d in site.getsitepackages() + [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]:
    if d not in dirs:
        dirs.append(d)
print("tensorflow=" + md.version(dists[0]))
print("python=" + sys.executable)
for d in dirs:
    print("site=" + d)
"""


def _docker_script(name: str) -> str:
    return (project_root() / "docker" / name).read_text()


def requirements() -> list[str]:
    """The trainer's requirements, read from pyproject.toml.

    docker/requirements_from_pyproject.py is the one reader of pyproject.toml's extras
    (the Dockerfile runs it standalone in a build), so it is loaded from the checkout
    rather than written twice.
    """
    root = project_root()
    reader = runpy.run_path(str(root / "docker" / "requirements_from_pyproject.py"))
    return reader["requirements"](str(root / "pyproject.toml"), list(EXTRAS))


def pick_base_sh(config: dict) -> str:
    """sh setting $base: remote.base_python, else /venv/main's interpreter where it exists, else python3."""
    chosen = config["remote"].get("base_python")
    if chosen:
        return f"base={q(chosen)}"
    return f"if [ -x {VAST_MAIN_PYTHON} ]; then base={VAST_MAIN_PYTHON}; else base=python3; fi"


def probe_sh(config: dict) -> str:
    """sh for `up`'s host probe: which base would be overlaid, and whether it has TensorFlow."""
    return (f"{pick_base_sh(config)}\necho \"overlay_base=$base\"\n"
            f"\"$base\" -c 'import importlib.util as u, sys; sys.exit(u.find_spec(\"tensorflow\") is None)' "
            f"2>/dev/null && echo overlay_tensorflow=1")


def overlay_script(layout: Layout, config: dict, reqs: list[str]) -> str:
    pip_args = " ".join(q(a) for a in config["remote"].get("pip_args") or [])
    req_lines = "\n".join(reqs)
    return f"""
set -e
venv={rpath(layout.venv)}
{pick_base_sh(config)}
command -v "$base" >/dev/null 2>&1 || {{ echo "overlay: the base interpreter $base does not exist on this host"; exit 3; }}
facts=$("$base" -c {q(_BASE_FACTS)}) || {{ echo "overlay: $base could not report its packages"; exit 3; }}
case "$facts" in no-tensorflow*) echo "overlay: $base has no TensorFlow to build on"; exit 4;; esac
tf=$(printf '%s\\n' "$facts" | sed -n 's/^tensorflow=//p')
stamp=$(printf '%s\\n%s\\n%s\\n' "$base $tf" {q(req_lines)} {q(pip_args)} | sha256sum | cut -c1-64)
if [ "$(cat "$venv/.deploy-stamp" 2>/dev/null)" = "$stamp" ] && [ -x "$venv/bin/python" ]; then
  echo "overlay venv up to date (TensorFlow $tf from $base)"; exit 0
fi
echo "building the overlay venv $venv on $base (TensorFlow $tf, kept as it is)"
# Built in place (console scripts pip writes hold the venv's absolute path, so it cannot be
# built elsewhere and moved); the stamp, written last, is what marks it complete: an
# interrupted build is started again from scratch.
rm -rf "$venv"
"$base" -m venv --without-pip "$venv"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\\n' "$facts" | sed -n 's/^site=//p' | while IFS= read -r d; do
  if [ -d "$d" ]; then
    printf 'import site; site.addsitedir(%s)\\n' "$("$venv/bin/python" -c 'import sys; print(repr(sys.argv[1]))' "$d")"
  fi
done > "$site/_overlay_base.pth"
"$base" -c {q(_docker_script("base_constraints.py"))} > "$venv/base-constraints.txt"
printf '%s\\n' {q(req_lines)} > "$venv/requirements.txt"
"$venv/bin/python" -m pip --version >/dev/null 2>&1 || {{ echo "overlay: $base has no pip to install with"; exit 5; }}
"$venv/bin/python" -m pip install --progress-bar off --disable-pip-version-check {pip_args} \\
  -c "$venv/base-constraints.txt" -r "$venv/requirements.txt" || {{
  echo "overlay: pip could not add the trainer's packages without replacing one of the base's (see above)"; exit 6; }}
"$venv/bin/python" -c 'import cv2, numpy, yaml, tensorflow' || {{ echo "overlay: the overlay venv cannot import the trainer's packages"; exit 7; }}
printf '%s\\n' "$stamp" > "$venv/.deploy-stamp"
echo "overlay venv ready: $(ls -d "$site"/*.dist-info 2>/dev/null | wc -l) distributions added on top of $base"
"""


NO_TENSORFLOW = ("overlay needs a base Python with TensorFlow (Vast's vastai/tensorflow image, a lab box); "
                 "set remote.base_python to one, or use remote.python: auto-venv to install TensorFlow")

_WHY = {
    3: "set remote.base_python to an interpreter that exists on the host",
    4: NO_TENSORFLOW,
    5: "the base Python has no pip: install python3-pip there or use remote.python: auto-venv",
    6: "pin the conflicting package in remote.pip_args, or use remote.python: auto-venv",
    7: "see the import error above",
}


def ensure_overlay(remote: Remote, layout: Layout, config: dict) -> None:
    code = remote.stream(overlay_script(layout, config, requirements()))
    if code is None:
        raise UsageError("lost the connection while building the overlay venv: run `sync` again")
    if code != 0:
        raise UsageError(f"building the overlay venv on the host failed: {_WHY.get(code, 'see the lines above')}")
