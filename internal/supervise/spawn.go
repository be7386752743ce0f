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
