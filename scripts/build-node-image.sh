#!/usr/bin/env bash
# Build the systemd "node" image that stands in for a bare Debian 12 cloud instance:
# molecule scenarios and the embedded local spot nodes run it with systemd as PID 1.
# Docker Hub is unreachable here, so the root filesystem comes from debootstrap.
# A second run is a no-op while an image built from this same recipe exists.
set -euo pipefail

IMAGE="${NODE_IMAGE:-agency-os/node:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
# What a Debian 12 cloud image brings that the roles rely on (python3-apt for ansible.builtin.apt,
# procps for the drain program, ca-certificates for HTTPS to the Prefect API).
PACKAGES="systemd,systemd-sysv,dbus,python3,python3-venv,python3-apt,sudo,procps,ca-certificates,iproute2"

recipe_id=$(printf '%s\n' "$SUITE" "$PACKAGES" "$(sed -n '/^# recipe-begin/,/^# recipe-end/p' "$0")" | sha256sum | cut -c1-16)

if [ "$(docker image inspect -f '{{ index .Config.Labels "agency-os.recipe" }}' "$IMAGE" 2>/dev/null || true)" = "$recipe_id" ]; then
  echo "node image $IMAGE is current (recipe $recipe_id)"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: run 'make setup' (or apt-get install debootstrap)" >&2; exit 1; }

rootfs=$(mktemp -d /var/tmp/agency-os-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "building $IMAGE from debootstrap ($SUITE, $MIRROR) in $rootfs"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >/dev/null

# recipe-begin
# Boot to multi-user without the units that make no sense in a container.
chroot "$rootfs" systemctl set-default multi-user.target >/dev/null 2>&1
for unit in systemd-resolved.service systemd-timesyncd.service getty@tty1.service \
            systemd-networkd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer; do
  chroot "$rootfs" systemctl mask "$unit" >/dev/null 2>&1 || true
done
# The host's network namespace is shared (network_mode: host): keep the host's resolver.
rm -f "$rootfs/etc/resolv.conf"
: > "$rootfs/etc/machine-id"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
# No package lists, like a fresh cloud image: mark them stale so `apt update_cache` refreshes them.
touch -d 2000-01-01 "$rootfs/var/lib/apt/lists"
# recipe-end

tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change 'ENV container=docker' \
  --change "LABEL agency-os.recipe=$recipe_id" \
  - "$IMAGE" >/dev/null
echo "built $IMAGE (recipe $recipe_id)"
