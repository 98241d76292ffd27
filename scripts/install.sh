#!/usr/bin/env bash
# Install everything `lab` and its tests need on a fresh Debian 12 machine (run as root):
# the real third-party peers from Debian, ethtool for offloads, Chromium for the report test,
# and the Python package with its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(caddy ngtcp2-client ngtcp2-server nghttp2-client ethtool iproute2 chromium
  golang-go golang-github-lucas-clemente-quic-go-dev golang-golang-x-net-dev golang-golang-x-sys-dev
  # lab vm (docs/vm.md): the UML guest kernel, modprobe for its modules, a C compiler for
  # lab/vm/fpshim.c, and Docker inside the guest for the compose test
  user-mode-linux kmod gcc libc6-dev docker.io docker-compose iptables)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Caddy's Debian package starts a system service on :80; the lab starts its own Caddy.
systemctl disable --now caddy >/dev/null 2>&1 || true

python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
./scripts/build-go.sh # the Go server and agent (server: go), offline from the packages above
