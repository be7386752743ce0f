#!/usr/bin/env bash
# Boot-time benchmark: hutch run -d against the same guest started by a raw
# qemu-system-x86_64 command line and by libvirt's session mode (warm and
# cold), interleaved; then 20 VMs started at once (density) and torn down.
# Run as root (`sudo make bench`); the VMs run as an unprivileged user.
# Results go to the marked section of docs/benchmarks.md.
#
#   bench/run.sh [driver flags]     e.g. bench/run.sh -runs 11
#   bench/run.sh -libvirt=false -density 0     hutch and raw QEMU only
#
# Environment: BENCH_USER (default hutchbench, a user the tests never use), CACHE (guest build cache,
# default /var/tmp/hutch-test-cache), GO (default go).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
GO=${GO:-go}
user=${BENCH_USER:-hutchbench}
cache=${CACHE:-/var/tmp/hutch-test-cache}

if [[ $(id -u) -ne 0 ]]; then
	echo "bench/run.sh: run as root (sudo make bench): the VMs are started as $user" >&2
	exit 2
fi
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
[[ -x bin/hutch ]] || "$GO" build -o bin/hutch ./cmd/hutch

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$GO" run ./test/buildguest "$cache" >"$tmp/guest.json"
"$GO" build -o "$tmp/boot" ./bench/boot
"$tmp/boot" -guest "$tmp/guest.json" -hutch bin/hutch -user "$user" -out docs/benchmarks.md "$@"

# Kept VMs: start of a stopped VM against run of a new one, and create +
# start of a UEFI VM against a BIOS one. LIFECYCLE_ARGS, e.g. "-runs 7",
# tunes it; LIFECYCLE_ARGS=skip leaves it out.
if [[ ${LIFECYCLE_ARGS:-} != skip ]]; then
	"$GO" run ./bench/lifecycle -guest "$(cat "$tmp/guest.json")" -hutch bin/hutch -user "$user" -out docs/benchmarks.md ${LIFECYCLE_ARGS:-}
fi

# The network benchmark prints its table; docs/benchmarks.md holds the last
# one with its method. NET_ARGS, e.g. "-runs 3 -size 128", tunes it;
# NET_ARGS=skip leaves it out.
if [[ ${NET_ARGS:-} != skip ]]; then
	"$GO" run ./bench/net -guest "$(cat "$tmp/guest.json")" -hutch bin/hutch -user "$user" ${NET_ARGS:--runs 3 -size 128}
fi

# The container benchmark: `podman run --rm IMAGE true` with hutch-runtime
# against runc and a raw boot of the same kernel, as its own user; it
# rewrites its marked section of docs/benchmarks.md. OCI_ARGS, e.g.
# "-runs 11", tunes it; OCI_ARGS=skip leaves it out.
# hutch-runtime and hutch-agent beside it, built as make build builds them.
build_runtime() {
	[[ -x "$tmp/hutch-runtime" ]] && return
	CGO_ENABLED=0 "$GO" build -o "$tmp/hutch-runtime" ./cmd/hutch-runtime
	CGO_ENABLED=0 "$GO" build -ldflags "-s -w" -o "$tmp/hutch-agent" ./cmd/hutch-agent
}
if [[ ${OCI_ARGS:-} != skip ]]; then
	chmod 755 "$tmp"
	build_runtime
	"$GO" run ./bench/oci -runtime "$tmp/hutch-runtime" -out docs/benchmarks.md ${OCI_ARGS:-}
fi

# The pod benchmark: memory of an idle one-container pod and of each
# further container, and a two-container pod's start, against runc,
# through each runtime's command line; it rewrites its marked section of
# docs/benchmarks.md. POD_ARGS, e.g. "-runs 7", tunes it; POD_ARGS=skip
# leaves it out.
if [[ ${POD_ARGS:-} != skip ]]; then
	build_runtime
	"$GO" run ./bench/pod -runtime "$tmp/hutch-runtime" -out docs/benchmarks.md ${POD_ARGS:-}
fi
