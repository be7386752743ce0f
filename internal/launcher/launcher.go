// Package launcher starts what a vm.Plan describes, for every face of
// hutch alike (a session or system VM's supervisor, a container's shim):
// the VM's file server, then QEMU with each descriptor the plan names,
// opened here on the privileged side, as the plan's identity. Helpers
// (passt, virtiofsd) are watched and stopped the same way.
package launcher

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/launch"
	"github.com/hutch-vm/hutch/internal/virtiofs"
	"github.com/hutch-vm/hutch/internal/vm"
)

// Channels are the VMM's ends of what the caller made for the VM: the
// serial console, the QMP listener, the agent port and the file server's
// socket (nil where the plan has none).
type Channels struct {
	Serial, QMP, Agent, FS *os.File
	// Tap opens the VM's tap when the plan names one.
	Tap func() (*os.File, error)
}

// rlimits bound what one VM's processes can take from the host beyond its
// cgroup: no core dumps of guest memory, a sane descriptor count, and,
// for an identity of the VM's own, a process cap that counts only it.
func rlimits(ownID bool) []launch.Rlimit {
	r := []launch.Rlimit{
		{Resource: unix.RLIMIT_CORE, Cur: 0, Max: 0},
		{Resource: unix.RLIMIT_NOFILE, Cur: 4096, Max: 4096},
	}
	if ownID {
		r = append(r, launch.Rlimit{Resource: unix.RLIMIT_NPROC, Cur: 1024, Max: 1024})
	}
	return r
}

// SessionRlimits are what a session VM's supervisor can apply to itself
// without privilege (it lowers its own and its children inherit them).
func SessionRlimits() []launch.Rlimit { return rlimits(false) }

// Command prepares argv as the plan's identity. A VM whose processes run
// as the caller starts them directly; one with an identity of its own
// goes through hutch's pre-exec stage (no capabilities, no_new_privs, the
// identity's ids, rlimits, joined cgroups). self is the binary with the
// stage verb. Descriptors 3 on are files, in order.
func Command(p *vm.Plan, argv []string, files []*os.File, out *os.File, cgroups []string) (*exec.Cmd, error) {
	var cmd *exec.Cmd
	if p.System {
		id := p.Identity
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
			Argv: argv, Env: []string{}, Rlimits: rlimits(!p.SharedIdentity),
			NumExtraFiles: len(files), CgroupProcs: cgroups,
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

// StartVMM opens the plan's descriptors and starts QEMU, logging to out.
// The caller closes its own channel ends once this returns.
func StartVMM(p *vm.Plan, ch Channels, out *os.File, cgroups []string) (*exec.Cmd, error) {
	files, err := Files(p, ch)
	if err != nil {
		return nil, err
	}
	defer closeAll(files)
	cmd, err := Command(p, p.VMM.Argv(p.QEMU), files, out, cgroups)
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.QEMU, err)
	}
	return cmd, nil
}

// Files makes or opens, in plan order, every descriptor QEMU inherits.
// This is the privileged side: the VMM gets descriptors, never a path it
// would need permission for.
func Files(p *vm.Plan, ch Channels) ([]*os.File, error) {
	var files []*os.File
	for _, fd := range p.FDs {
		f, err := open(fd, ch)
		if err != nil {
			closeAll(files)
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

func open(fd vm.FD, ch Channels) (*os.File, error) {
	channel := func(f *os.File) (*os.File, error) {
		if f == nil {
			return nil, fmt.Errorf("the plan names a %s descriptor but none was made", fd.Kind)
		}
		return dup(f)
	}
	switch fd.Kind {
	case vm.FDSerial:
		return channel(ch.Serial)
	case vm.FDQMP:
		return channel(ch.QMP)
	case vm.FDAgent:
		return channel(ch.Agent)
	case vm.FDShare:
		return channel(ch.FS)
	case vm.FDTap:
		if ch.Tap == nil {
			return nil, errors.New("the plan names a tap but no way to open one was given")
		}
		return ch.Tap()
	case vm.FDFile:
		mode := os.O_RDONLY
		if fd.Write {
			mode = os.O_RDWR
		}
		return os.OpenFile(fd.Path, mode, 0)
	case vm.FDCopy:
		return launch.SealedCopy(fd.Path)
	}
	return nil, fmt.Errorf("unknown descriptor kind %q in plan", fd.Kind)
}

func dup(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// StartFS runs the plan's file server on its empty directory, logging to
// log, and returns it with the VMM's end of its socket. It runs from the
// caller, not the VM's identity: virtiofs.Server drops what it does not
// need by itself. Its pid joins cgroups.
func StartFS(srv *virtiofs.Server, log *os.File, cgroups []string) (*Helper, *os.File, error) {
	if err := os.Mkdir(srv.Root, 0o700); err != nil && !os.IsExist(err) {
		return nil, nil, fmt.Errorf("create %s: %w", srv.Root, err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("find the hutch executable: %w", err)
	}
	cmd, conn, err := srv.Start(self, log)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range cgroups {
		os.WriteFile(p, []byte(strconv.Itoa(cmd.Process.Pid)), 0)
	}
	return Watch(cmd), conn, nil
}

// Helper is a started process beside a VMM.
type Helper struct {
	Cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Watch reaps a started command.
func Watch(cmd *exec.Cmd) *Helper {
	h := &Helper{Cmd: cmd, done: make(chan struct{})}
	go func() { h.err = cmd.Wait(); close(h.done) }()
	return h
}

// Done is closed once the helper is reaped (nil for no helper, which
// blocks forever in a select); Err then says how it ended.
func (h *Helper) Done() <-chan struct{} {
	if h == nil {
		return nil
	}
	return h.done
}

func (h *Helper) Err() error { return h.err }

// Stop ends a helper that QEMU's exit did not end (passt and virtiofsd
// quit on their own when their one client goes away): a moment to go,
// then SIGTERM, then SIGKILL.
func (h *Helper) Stop() {
	if h == nil {
		return
	}
	select {
	case <-h.done:
		return
	case <-time.After(500 * time.Millisecond):
	}
	h.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(2 * time.Second):
		h.Cmd.Process.Kill()
		<-h.done
	}
}
