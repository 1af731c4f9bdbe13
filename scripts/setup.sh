#!/usr/bin/env bash
# Self-installing setup: everything `make provision` and `make test` need on a fresh Debian 12 machine.
# Idempotent: each step checks first and a second run takes seconds.
#   - system packages (docker.io, debootstrap, redis-server, postgresql) with apt, where missing
#   - a running Docker engine (starts dockerd in the background when nothing runs it)
#   - .venv with the pinned Python packages (pyproject.toml + constraints.txt) and this repo installed editable
#   - the Ansible collections of requirements.yml (bundled with the ansible package: no network)
#   - the systemd node image (scripts/build-node-image.sh)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
STAMP_DIR="$VENV/.agency-os"
APT_PACKAGES=(docker.io debootstrap redis-server postgresql rsync cloud-init)

say() { printf '==> %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

step_start=$(date +%s)

# 1. System packages -------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing system packages: ${missing[*]}; this machine has no apt-get: install them with your package manager, then run 'make setup' again"
  [ "$(id -u)" = 0 ] || die "missing system packages: ${missing[*]}; run 'sudo apt-get install -y ${missing[*]}' (or 'sudo make setup'), then 'make setup' again"
  say "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d: without an init system, the packages' postinst must not try to start services.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

# 2. Docker engine ---------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "the Docker engine is not running and only root can start it here: run 'sudo dockerd &' (or 'sudo systemctl start docker'), then 'make setup' again"
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    say "starting docker.service"
    systemctl start docker
  else
    say "starting dockerd in the background (log: /var/log/agency-os-dockerd.log)"
    nohup dockerd >/var/log/agency-os-dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || die "dockerd did not come up in 30 s: see /var/log/agency-os-dockerd.log"
fi

# 3. Python virtualenv -------------------------------------------------------------------------
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python >= 3.11 is required ($PYTHON is $("$PYTHON" -V 2>&1))"
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
mkdir -p "$STAMP_DIR"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$STAMP_DIR/pip" 2>/dev/null)" != "$want" ]; then
  say "installing pinned Python packages into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip==25.3
  "$VENV/bin/pip" install -q -c constraints.txt -e ".[dev]"
  echo "$want" > "$STAMP_DIR/pip"
fi

# 4. Ansible collections (bundled with ansible 12.3.0; Galaxy is not reachable) ---------------------
"$VENV/bin/ansible-galaxy" collection install -r requirements.yml >/dev/null \
  || die "ansible-galaxy could not satisfy requirements.yml from the bundled collections; see the pins in requirements.yml"

# 5. systemd node image ---------------------------------------------------------------------------
scripts/build-node-image.sh

# 6. Wheelhouse for nodes (offline installs in containers): pinned dependencies once, this repo's
#    wheel every time (cheap, reproducible with SOURCE_DATE_EPOCH so its checksum only changes
#    with its content). Debian 12's python3 is 3.11.2: redis needs async-timeout below 3.11.3.
WHEELHOUSE="$ROOT/build/wheelhouse"
NODE_EXTRA_WHEELS=(uv==0.9.17 async-timeout==5.0.1)
mkdir -p "$WHEELHOUSE"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-${NODE_EXTRA_WHEELS[*]}
if [ "$(cat "$WHEELHOUSE/.deps" 2>/dev/null)" != "$want" ]; then
  say "building the node wheelhouse in $WHEELHOUSE"
  "$VENV/bin/pip" wheel -q --wheel-dir "$WHEELHOUSE" -c constraints.txt . "${NODE_EXTRA_WHEELS[@]}"
  echo "$want" > "$WHEELHOUSE/.deps"
fi
rm -f "$WHEELHOUSE"/agency_os_spot-*.whl
rm -rf build/lib build/bdist.* ./*.egg-info/SOURCES.txt  # setuptools reuses build/lib: no stale modules in the wheel
SOURCE_DATE_EPOCH=315532800 "$VENV/bin/pip" wheel -q --no-deps --wheel-dir "$WHEELHOUSE" .

say "setup complete in $(( $(date +%s) - step_start )) s"
