#!/usr/bin/env bash
# Builds a Debian + Python 3 base image without Docker Hub: debootstrap a minbase rootfs
# from a Debian mirror, then `docker import` it. For machines whose Docker engine cannot
# pull `python:*-slim` (air-gapped CI, registries behind a proxy) but can reach a Debian
# mirror. The result plays the part of python:3.11-slim-bookworm: python3 (+ `python`),
# pip, ca-certificates, LANG=C.UTF-8.
#
# Usage: docker/build_base.sh            (prints the image tag on stdout, logs on stderr)
# Env:   SUITE (bookworm), MIRROR (the one this machine's apt uses, else deb.debian.org),
#        SECURITY_MIRROR, BASE_CACHE_DIR (~/.cache/violence-trainer), REBUILD=1 to ignore caches.
#
# Cached twice, so a second run on the same machine costs seconds: the image itself
# (tagged by a hash of everything that shapes it), and the rootfs tarball, which
# survives `docker system prune -a` and a fresh engine data root.
set -euo pipefail

SUITE=${SUITE:-bookworm}
PACKAGES=python3,python3-pip,python-is-python3,ca-certificates

log() { printf 'build_base: %s\n' "$*" >&2; }
die() { printf 'build_base: error: %s\n' "$*" >&2; exit 2; }

# The mirror apt on this machine already uses is the one known to be reachable.
detect_mirror() {
  local uri
  uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
          /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -oE '(https?|file)://[^ ]*/debian/?( |$)' | head -n1 | tr -d ' ') || true
  echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR=${MIRROR:-$(detect_mirror)}
MIRROR=${MIRROR%/}
SECURITY_MIRROR=${SECURITY_MIRROR:-${MIRROR}-security}

command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running, may you use it?)"

# Everything that shapes the rootfs goes into the tag, so a change here rebuilds.
key=$( { cat "$0"; echo "$SUITE $MIRROR $SECURITY_MIRROR $PACKAGES"; } | sha256sum | cut -c1-12)
TAG="violence-trainer-base:${SUITE}-${key}"
CACHE_DIR=${BASE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/violence-trainer}
TARBALL="$CACHE_DIR/base-${SUITE}-${key}.tar.gz"

if [[ "${REBUILD:-0}" != 1 ]]; then
  if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "cached image $TAG"
    echo "$TAG"; exit 0
  fi
  if [[ -s "$TARBALL" ]]; then
    log "importing cached rootfs $TARBALL"
    docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$TARBALL" "$TAG" >/dev/null
    echo "$TAG"; exit 0
  fi
fi

[[ $(id -u) == 0 ]] || die "debootstrap needs root (run with sudo), or set BASE_IMAGE to an image you can pull"
command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"

work=$(mktemp -d "${TMPDIR:-/tmp}/build_base.XXXXXX")
# Unmount anything debootstrap left mounted inside the rootfs before deleting it.
cleanup() {
  for m in proc sys dev/pts dev; do umount -l "$work/rootfs/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
rootfs="$work/rootfs"

log "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >&2

# The same apt sources as the official Debian images: release, updates and security.
rm -f "$rootfs/etc/apt/sources.list"
cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# Security fixes released since the point release; then drop what an image never needs.
log "applying $SUITE-updates and $SUITE-security"
chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c 'apt-get update -qq && apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade >/dev/null && apt-get clean' >&2
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/* \
       "$rootfs"/tmp/* "$rootfs"/root/.cache
# Same hostname/resolver handling as any image: the engine provides these at run time.
: > "$rootfs/etc/hostname"
: > "$rootfs/etc/resolv.conf"

mkdir -p "$CACHE_DIR"
log "packing rootfs to $TARBALL"
tar --numeric-owner --xattrs -C "$rootfs" -c . | gzip -1 > "$TARBALL.tmp"
mv "$TARBALL.tmp" "$TARBALL"

docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$TARBALL" "$TAG" >/dev/null
log "built $TAG ($(du -h "$TARBALL" | cut -f1) compressed)"
echo "$TAG"
