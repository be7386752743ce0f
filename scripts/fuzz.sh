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

for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "--- $name in $pkg for $fuzztime"
	"$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"
done
echo "fuzz.sh: ${#targets[@]} targets passed"
