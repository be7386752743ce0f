package supervise

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/launcher"
)

// cgroupProcs are the cgroup.procs files a system VM's processes join.
func (s *supervisor) cgroupProcs() []string {
	if s.cgroup == nil {
		return nil
	}
	return s.cgroup.Procs()
}

// limitSelf applies, without privilege, what a session VM can have of the
// system VM's limits: the supervisor lowers its own and its children
// inherit them. RLIMIT_NPROC is left out: for a session it would count
// every process of the user, not this VM's.
func limitSelf() error {
	for _, l := range launcher.SessionRlimits() {
		var cur unix.Rlimit
		if err := unix.Getrlimit(l.Resource, &cur); err != nil {
			return fmt.Errorf("read rlimit %d: %w", l.Resource, err)
		}
		// Only ever lower: an unprivileged process cannot raise a hard limit.
		want := unix.Rlimit{Cur: min(l.Cur, cur.Max), Max: min(l.Max, cur.Max)}
		if err := unix.Setrlimit(l.Resource, &want); err != nil {
			return fmt.Errorf("set rlimit %d: %w", l.Resource, err)
		}
	}
	return nil
}
