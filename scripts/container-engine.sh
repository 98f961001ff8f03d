#!/usr/bin/env bash
# Make `docker-compose` work on a Debian machine that has no Docker engine and no image
# registry: install podman (with the runc runtime) and podman-compose under the name
# docker-compose, and build the python:3.11-slim base image locally from Debian
# packages so that `FROM python:3.11-slim` needs no pull. Idempotent; needs root.
set -euo pipefail
say() { echo "[container-engine] $*"; }

if [ "$(id -u)" != 0 ]; then
  echo "container-engine.sh must run as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

missing=()
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq podman runc debootstrap >/dev/null
fi

# Sandboxed machines cannot raise rlimits past their hard limit, and crun rejects their
# cgroup layout; runc copes with both.
mkdir -p /etc/containers
# Containers get exactly the limits this machine allows instead of podman's defaults.
nofile=$(ulimit -Hn)
# The process limit cannot be set to the hard limit here either, only below it.
nproc=32768
hard_nproc=$(ulimit -Hu)
[ "$hard_nproc" != unlimited ] && [ "$hard_nproc" -lt "$nproc" ] && nproc=$hard_nproc
printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n[engine]\nruntime = "runc"\n' \
  "$nofile" "$nofile" "$nproc" "$nproc" > /etc/containers/containers.conf

if [ ! -x /opt/podman-compose/bin/podman-compose ]; then
  say "installing podman-compose"
  python3 -m venv /opt/podman-compose
  /opt/podman-compose/bin/pip install -q podman-compose
fi
ln -sf /opt/podman-compose/bin/podman-compose /usr/local/bin/docker-compose

image=docker.io/library/python:3.11-slim
if ! podman image exists "$image"; then
  say "building $image from Debian packages"
  root=$(mktemp -d)
  debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$root" >/dev/null
  # Builds inside the image must trust the same authorities as this machine.
  if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
  fi
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
  ln -sf python3 "$root/usr/bin/python"
  tar -C "$root" -c . | podman import \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' - "$image" >/dev/null
  rm -rf "$root"
fi
say "ready: $(docker-compose --version 2>/dev/null | head -n 1)"
