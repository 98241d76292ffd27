#!/usr/bin/env bash
# Build the lab's Go programs offline: go/src/labgo/{server,agent} → build/go/lab-go-server and
# build/go/lab-go-agent, in GOPATH mode against Debian's packaged libraries in /usr/share/gocode
# (golang-go, golang-github-lucas-clemente-quic-go-dev, golang-golang-x-net-dev,
# golang-golang-x-sys-dev; no module proxy). The build is skipped when the sources, the Go
# toolchain and those packages are unchanged since the last one (build/go/.stamp).
#
#   scripts/build-go.sh           build if needed
#   scripts/build-go.sh --check   exit 0 when the binaries are up to date, 1 (and why) if not
set -euo pipefail
cd "$(dirname "$0")/.."

out=build/go
libs=(golang-github-lucas-clemente-quic-go-dev golang-golang-x-net-dev golang-golang-x-sys-dev)
check=false
[ "${1:-}" = "--check" ] && check=true

if ! command -v go >/dev/null; then
  echo "build-go: go not installed (scripts/install.sh installs golang-go)" >&2
  exit 1
fi
declare -A version
for lib in "${libs[@]}"; do
  version[$lib]=$(dpkg-query -W -f='${Version}' "$lib" 2>/dev/null || true)
  if [ -z "${version[$lib]}" ]; then
    echo "build-go: $lib not installed (scripts/install.sh installs it)" >&2
    exit 1
  fi
done

stamp=$({
  go version
  for lib in "${libs[@]}"; do echo "$lib ${version[$lib]}"; done
  find go/src -type f -name '*.go' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
} | sha256sum | cut -d' ' -f1)
up_to_date() {
  [ -x "$out/lab-go-server" ] && [ -x "$out/lab-go-agent" ] &&
    [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]
}
if $check; then
  up_to_date && exit 0
  echo "build-go: not built, or the sources changed since the build: run scripts/build-go.sh" >&2
  exit 1
fi

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9 # one build at a time (tests and installs may run side by side)
if up_to_date; then
  echo "build-go: up to date ($out)"
  exit 0
fi
export GO111MODULE=off GOPATH="$PWD/go:/usr/share/gocode" GOCACHE="$PWD/$out/.cache"
ldflags="-X labgo/version.QuicGo=${version[golang-github-lucas-clemente-quic-go-dev]}"
ldflags+=" -X labgo/version.XNet=${version[golang-golang-x-net-dev]}"
ldflags+=" -X labgo/version.XSys=${version[golang-golang-x-sys-dev]}"
start=$(date +%s.%N)
tmp="$out/.tmp"
rm -rf "$tmp"
go build -ldflags "$ldflags" -o "$tmp/" labgo/server labgo/agent
for prog in server agent; do mv "$tmp/$prog" "$out/lab-go-$prog"; done
rmdir "$tmp"
echo "$stamp" >"$out/.stamp"
seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "build-go: built $out/lab-go-server and lab-go-agent in $seconds s ($(go version | cut -d' ' -f3))"
