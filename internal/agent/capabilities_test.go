//go:build linux

package agent

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestCapabilityMask(t *testing.T) {
	for _, c := range []struct {
		names []string
		want  uint64
	}{
		{nil, 0},
		{[]string{"CAP_CHOWN"}, 1 << unix.CAP_CHOWN},
		{[]string{"CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"},
			1<<unix.CAP_KILL | 1<<unix.CAP_NET_BIND_SERVICE | 1<<unix.CAP_AUDIT_WRITE},
		{[]string{"CAP_CHECKPOINT_RESTORE", "CAP_BPF"}, 1<<unix.CAP_CHECKPOINT_RESTORE | 1<<unix.CAP_BPF},
		// Unknown names are ignored, as runc ignores them.
		{[]string{"CAP_NOT_A_CAPABILITY", "chown", "CAP_SYS_ADMIN"}, 1 << unix.CAP_SYS_ADMIN},
	} {
		if got := capabilityMask(c.names); got != c.want {
			t.Errorf("capabilityMask(%q) = %#x, want %#x", c.names, got, c.want)
		}
	}
	// The names are in the kernel's numbering.
	for n, want := range map[int]string{unix.CAP_SETPCAP: "CAP_SETPCAP", unix.CAP_MKNOD: "CAP_MKNOD",
		unix.CAP_SETFCAP: "CAP_SETFCAP", unix.CAP_SYSLOG: "CAP_SYSLOG", unix.CAP_AUDIT_READ: "CAP_AUDIT_READ",
		unix.CAP_CHECKPOINT_RESTORE: "CAP_CHECKPOINT_RESTORE"} {
		if capabilityNames[n] != want {
			t.Errorf("capability %d is %s, want %s", n, capabilityNames[n], want)
		}
	}
	if len(capabilityNames) != unix.CAP_LAST_CAP+1 {
		t.Errorf("%d capability names, the kernel headers know %d", len(capabilityNames), unix.CAP_LAST_CAP+1)
	}
}
