#!/usr/bin/env bash
# Network throughput benchmark: TCP through a forwarded port, host to guest
# and guest to host, for passt and slirp, against a direct loopback
# transfer on the host. Run as root (`sudo make bench`); the VMs run as an
# unprivileged user. Prints a markdown table (docs/benchmarks.md holds the
# last one, with the machine and method).
#
#   bench/net.sh [-runs N] [-size MiB]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
GO=${GO:-go}
user=${BENCH_USER:-hutchbench}
cache=${CACHE:-/var/tmp/hutch-test-cache}
if [[ $(id -u) -ne 0 ]]; then
	echo "bench/net.sh: run as root (sudo make bench): the VMs are started as $user" >&2
	exit 2
fi
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
[[ -x bin/hutch ]] || "$GO" build -o bin/hutch ./cmd/hutch
"$GO" run ./bench/net -guest "$("$GO" run ./test/buildguest "$cache")" -hutch bin/hutch -user "$user" "$@"
