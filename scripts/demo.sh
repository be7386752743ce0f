#!/usr/bin/env bash
# Boots the test guest as an ordinary user with port 8080 forwarded to the
# guest's web server, shows it answering, then stops and removes it.
set -euo pipefail
user=$1 cache=$2
cd "$(dirname "$0")/.."
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
install -m 0755 bin/hutch /usr/local/bin/hutch
go run ./test/buildguest "$cache" >/dev/null
as_user() { runuser -u "$user" -- env -i HOME="$(getent passwd "$user" | cut -d: -f6)" PATH=/usr/local/bin:/usr/bin:/bin "$@"; }
as_user hutch rm -f demo >/dev/null 2>&1 || true
set -x
as_user hutch run -d --name demo --memory 256M --kernel "$cache/vmlinuz" --initrd "$cache/initrd.gz" \
	--append console=ttyS0 -p 127.0.0.1:8080:80
for _ in $(seq 120); do curl -fsS http://127.0.0.1:8080/ && break; sleep 1; done
as_user hutch ps
as_user hutch logs demo | tail -n 3
as_user hutch stop -t 2 demo
as_user hutch rm demo
