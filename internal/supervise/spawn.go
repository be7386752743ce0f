package supervise

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/launch"
)

// spawn prepares argv as the VM's identity. A session VM's processes run
// as the caller already, so they are started directly; a system VM's go
// through hutch's pre-exec stage, which drops to the leased identity with
// no capabilities and no_new_privs.
func (s *supervisor) spawn(argv []string, files []*os.File, out *os.File) (*exec.Cmd, error) {
	var cmd *exec.Cmd
	if s.rec.Plan.System {
		id := s.rec.Plan.Identity
		groups := make([]uint32, 0, len(id.Groups))
		for _, g := range id.Groups {
			groups = append(groups, uint32(g))
		}
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the hutch executable: %w", err)
		}
		spec := launch.Spec{
			UID: uint32(id.UID), GID: uint32(id.GID), Groups: groups,
			Argv: argv, Env: []string{}, Rlimits: rlimits,
			NumExtraFiles: len(files),
		}
		if s.cgroup != nil {
			spec.CgroupProcs = s.cgroup.Procs()
		}
		if cmd, err = launch.Command(self, spec); err != nil {
			return nil, err
		}
	} else {
		cmd = &exec.Cmd{Path: argv[0], Args: argv, Env: []string{},
			SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}}
	}
	cmd.Stdout, cmd.Stderr, cmd.ExtraFiles = out, out, files
	return cmd, nil
}

// rlimits bound what one VM's processes can take from the host beyond the
// cgroup: no core dumps of guest memory, a sane descriptor count, and a
// process cap that, with a uid of its own, counts only this VM.
var rlimits = []launch.Rlimit{
	{Resource: unix.RLIMIT_CORE, Cur: 0, Max: 0},
	{Resource: unix.RLIMIT_NOFILE, Cur: 4096, Max: 4096},
	{Resource: unix.RLIMIT_NPROC, Cur: 1024, Max: 1024},
}

// limitSelf applies, without privilege, what a session VM can have of the
// system VM's limits: the supervisor lowers its own and its children
// inherit them. RLIMIT_NPROC is left alone: for a session it would count
// every process of the user, not this VM's.
func limitSelf() error {
	for _, l := range rlimits {
		if l.Resource == unix.RLIMIT_NPROC {
			continue
		}
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
