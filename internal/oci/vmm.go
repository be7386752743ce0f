package oci

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/accel"
	"github.com/hutch-vm/hutch/internal/agent"
	"github.com/hutch-vm/hutch/internal/config"
	"github.com/hutch-vm/hutch/internal/identity"
	"github.com/hutch-vm/hutch/internal/launch"
	"github.com/hutch-vm/hutch/internal/qemu"
	"github.com/hutch-vm/hutch/internal/store"
	"github.com/hutch-vm/hutch/internal/virtiofs"
)

// runtimeConfig is hutch-runtime's configuration: the system file when
// real root runs it, the user's own when a rootless engine does (its
// user namespace's root is that user).
func runtimeConfig() (config.Config, string, error) {
	euid := os.Geteuid()
	if euid == 0 && launch.RootIsUser() {
		euid = -1
	}
	path, err := config.PathFor(euid)
	if err != nil {
		return config.Config{}, "", err
	}
	cfg, err := config.Load(path)
	return cfg, path, err
}

// KernelCmdline is the guest kernel's command line. Besides the console
// and a panic that ends the VM at once, it skips what a container's VM
// has no use for and what costs most under TCG: the TSC watchdog and
// timer check, probing a PS/2 controller, and the crypto self-tests.
// Measured here: 1.9 s from exec to init's poweroff, against 2.4 s
// without them (median of 4, q35, TCG).
const KernelCmdline = "console=ttyS0 panic=-1 quiet tsc=reliable no_timer_check i8042.noaux i8042.nokbd i8042.nopnp cryptomgr.notests"

// vmmRlimits: no core dumps of guest memory, a sane descriptor count.
var vmmRlimits = []launch.Rlimit{
	{Resource: unix.RLIMIT_CORE, Cur: 0, Max: 0},
	{Resource: unix.RLIMIT_NOFILE, Cur: 4096, Max: 4096},
}

// vm is a started VMM and the host ends of its channels.
type vm struct {
	cmd *exec.Cmd
	// exited is closed once the VMM is reaped, exitErr then says how: a
	// closed channel can be waited on by the main loop and by kill alike.
	exited  chan struct{}
	exitErr error
	agent   net.Conn
	serial  net.Conn
	qmpPath string
	user    VMMUser
	lease   string
	accel   accel.Decision
}

// bootVM starts the container's VMM: QEMU opens no path, everything it
// uses is a descriptor this process opened (the rootfs image, sealed
// copies of kernel and initrd, sockets), so its identity needs no
// permission on any file.
func (s *shim) bootVM(g Guest) (*vm, error) {
	choice, err := accel.Decide(s.cfg.Accel, accel.Device)
	if err != nil {
		return nil, fmt.Errorf("accel = %q in %s: %w", s.cfg.Accel, s.cfgPath, err)
	}
	var kvmGroups []uint32
	rootIsUser := launch.RootIsUser()
	if os.Geteuid() == 0 && !rootIsUser {
		dev, err := identity.StatDevice(accel.Device)
		if err != nil {
			return nil, err
		}
		if kvmGroups, err = identity.VMMGroups(choice.Accel == accel.KVM, dev); err != nil {
			return nil, err
		}
	}
	v := &vm{user: ChooseVMMUser(os.Geteuid(), rootIsUser, s.bundle.Spec.Process.User, kvmGroups, callerGroups()), accel: choice}
	if v.user.Kind == KindLease {
		l, err := ledger()
		if err != nil {
			return nil, err
		}
		self, err := store.Self()
		if err != nil {
			return nil, err
		}
		v.lease = "oci-" + s.id
		lease, err := l.Acquire(v.lease, self)
		if err != nil {
			return nil, fmt.Errorf("lease an id for the VMM: %w", err)
		}
		v.user.UID, v.user.GID = lease.UID, lease.GID
	}

	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	add := func(f *os.File) int {
		files = append(files, f)
		return 2 + len(files)
	}
	pair := func(name string) (net.Conn, int, error) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, 0, fmt.Errorf("socketpair for %s: %w", name, err)
		}
		mine := os.NewFile(uintptr(fds[0]), name)
		defer mine.Close()
		c, err := net.FileConn(mine)
		if err != nil {
			unix.Close(fds[1])
			return nil, 0, fmt.Errorf("socketpair for %s: %w", name, err)
		}
		return c, add(os.NewFile(uintptr(fds[1]), name)), nil
	}
	cfg := qemu.Config{Machine: qemu.Q35, Accel: choice.Accel, AgentPort: agent.PortName, Append: KernelCmdline}
	cfg.MemoryMiB, cfg.CPUs = machineSize(s.bundle.Spec)
	if v.serial, cfg.SerialFD, err = pair("serial"); err != nil {
		return nil, err
	}
	if v.agent, cfg.AgentFD, err = pair("agent"); err != nil {
		v.serial.Close()
		return nil, err
	}
	fail := func(err error) (*vm, error) {
		v.serial.Close()
		v.agent.Close()
		return nil, err
	}
	v.qmpPath = s.paths.QMP()
	l, err := listenUnix("unix", v.qmpPath)
	if err != nil {
		return fail(fmt.Errorf("listen for QMP: %w", err))
	}
	lf, err := l.File()
	l.Close()
	if err != nil {
		return fail(fmt.Errorf("listen for QMP: %w", err))
	}
	cfg.QMPFD = add(lf)
	for _, b := range []struct {
		path string
		fd   *int
	}{{g.Kernel, &cfg.KernelFD}, {g.Initrd, &cfg.InitrdFD}} {
		f, err := launch.SealedCopy(b.path)
		if err != nil {
			return fail(fmt.Errorf("pass %s to the VMM: %w", b.path, err))
		}
		*b.fd = add(f)
	}
	if s.fsConn != nil {
		cfg.FSFD, cfg.FSTag = add(s.fsConn), virtiofs.Tag
		s.fsConn = nil // the VMM's now
	} else {
		// A writable drive needs a read-only and a read-write descriptor:
		// QEMU probes read-only first.
		set := qemu.FDSet{ID: 1}
		for _, mode := range []int{os.O_RDONLY, os.O_RDWR} {
			f, err := os.OpenFile(s.paths.Rootfs(), mode, 0)
			if err != nil {
				return fail(fmt.Errorf("open the rootfs image: %w", err))
			}
			set.FDs = append(set.FDs, add(f))
		}
		cfg.FDSets = []qemu.FDSet{set}
		cfg.Drives = []qemu.Drive{{Layers: []qemu.Layer{{FDSet: 1, Format: "raw"}}}}
	}
	cfg.Netdev = s.net.Netdev("n0")
	bin, err := exec.LookPath(qemu.Binary)
	if err != nil {
		return fail(fmt.Errorf("%s not found: install qemu-system-x86", qemu.Binary))
	}
	argv := cfg.Argv(bin)
	if v.cmd, err = s.vmmCommand(v.user, argv, len(files)); err != nil {
		return fail(err)
	}
	v.cmd.ExtraFiles = files
	v.cmd.Stdout, v.cmd.Stderr = s.log, s.log
	if err := v.cmd.Start(); err != nil {
		return fail(fmt.Errorf("start %s: %w", qemu.Binary, err))
	}
	v.exited = make(chan struct{})
	go func() { v.exitErr = v.cmd.Wait(); close(v.exited) }()
	return v, nil
}

// vmmCommand prepares argv as the VMM's identity: directly when hutch-runtime
// is unprivileged, through the launch stage (no capabilities,
// no_new_privs, the chosen ids) otherwise.
func (s *shim) vmmCommand(u VMMUser, argv []string, nfiles int) (*exec.Cmd, error) {
	if u.Kind == KindSelf {
		return &exec.Cmd{Path: argv[0], Args: argv, Env: []string{},
			SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}}, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the hutch-runtime executable: %w", err)
	}
	return launch.Command(self, launch.Spec{UID: u.UID, GID: u.GID, Groups: u.Groups, Argv: argv,
		Env: []string{}, Rlimits: vmmRlimits, NumExtraFiles: nfiles})
}

// callerGroups are the groups this process runs with: the engine's user's.
func callerGroups() []uint32 {
	gs, _ := os.Getgroups()
	out := []uint32{uint32(os.Getgid())}
	for _, g := range gs {
		out = append(out, uint32(g))
	}
	return out
}

func (v *vm) kill() {
	if v.cmd != nil && v.cmd.Process != nil {
		v.cmd.Process.Kill()
		<-v.exited
	}
	v.agent.Close()
	v.serial.Close()
	if v.lease != "" {
		if l, err := ledger(); err == nil {
			l.Release(v.lease)
		}
	}
}

// ledger is system mode's lease ledger: OCI containers started by root
// draw from the same range as root's VMs, so no two VMMs share an id.
func ledger() (*identity.Ledger, error) {
	cfg, err := config.Load(config.SystemPath)
	if err != nil {
		return nil, err
	}
	l, err := store.SystemLayout()
	if err != nil {
		return nil, err
	}
	return &identity.Ledger{Path: l.Leases(), First: cfg.Leases.First, Count: cfg.Leases.Count}, nil
}

// startFS starts the container's virtiofsd, before the shim enters the
// container's root: a chrooted process may not make the user namespace
// the daemon runs in.
func (s *shim) startFS() error {
	s.shares.Root = s.paths.FS()
	if err := os.Mkdir(s.shares.Root, 0o700); err != nil && !os.IsExist(err) {
		return fmt.Errorf("create %s: %w", s.shares.Root, err)
	}
	logf, err := os.OpenFile(s.paths.FSLog(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open the virtiofsd log: %w", err)
	}
	defer logf.Close()
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the hutch-runtime executable: %w", err)
	}
	if s.fs, s.fsConn, err = s.shares.Start(self, logf); err != nil {
		return err
	}
	s.fsExited = make(chan struct{})
	go func() { s.fs.Wait(); close(s.fsExited) }()
	return nil
}

// stopFS ends the file server: it leaves by itself once QEMU, its one
// client, is gone, and is made to otherwise.
func (s *shim) stopFS() {
	if s.fsConn != nil {
		s.fsConn.Close()
	}
	if s.fs == nil {
		return
	}
	select {
	case <-s.fsExited:
		return
	case <-time.After(500 * time.Millisecond):
	}
	s.fs.Process.Kill()
	<-s.fsExited
}
