#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a bounded time each, so CI
# explores beyond the corpus in testdata/fuzz/ (which plain `go test`
# replays) without running unbounded. FUZZTIME is the time per target in
# -fuzztime syntax (10s by default; 1000x means that many inputs). Stops at
# the first target that fails: go test then leaves the failing input under
# that package's testdata/fuzz/<target>/, to keep as a regression case.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
fuzztime=${FUZZTIME:-10s}

# Targets are found in the sources, so a new FuzzXxx runs without editing
# this script. go test -fuzz takes one target per run, hence one per line.
mapfile -t targets < <(
	find . \( -name vendor -o -name testdata -o -name '.*' ! -name . \) -prune -o -name '*_test.go' -print |
		sort | xargs -r grep -H -o -E '^func Fuzz[A-Za-z0-9_]*\(' |
		sed -E 's|^(.*)/[^/]*:func (Fuzz[A-Za-z0-9_]*)\($|\1 \2|' | sort -u
)
if [ "${#targets[@]}" -eq 0 ]; then
	echo "fuzz.sh: no fuzz targets found" >&2
	exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "--- $name in $pkg for $fuzztime"
	for attempt in 1 2 3; do
		status=0
		"$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$log" || status=$?
		[ "$status" -eq 0 ] && break
		# go test -fuzz fails with "context deadline exceeded" when the time
		# runs out while a worker is still busy (a host stalled on I/O), with
		# no failing input. That says nothing of the target: run it again,
		# up to twice. A real failure writes its input under testdata/fuzz.
		if [ "$attempt" -lt 3 ] && grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
			echo "fuzz.sh: $name stopped on the deadline with no failing input; running it again"
			continue
		fi
		exit "$status"
	done
done
echo "fuzz.sh: ${#targets[@]} targets passed"
