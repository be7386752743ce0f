package oci

import (
	"fmt"
	"net"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/accel"
	"github.com/hutch-vm/hutch/internal/agent"
	"github.com/hutch-vm/hutch/internal/config"
	"github.com/hutch-vm/hutch/internal/disk"
	"github.com/hutch-vm/hutch/internal/identity"
	"github.com/hutch-vm/hutch/internal/launch"
	"github.com/hutch-vm/hutch/internal/launcher"
	"github.com/hutch-vm/hutch/internal/qemu"
	"github.com/hutch-vm/hutch/internal/store"
	"github.com/hutch-vm/hutch/internal/virtiofs"
	vmplan "github.com/hutch-vm/hutch/internal/vm"
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
//
// It also skips the tracing control files (/sys/kernel/tracing): their
// setup pins an inode and a dentry for each file of every trace event,
// about 10,000 of them and 9 MiB of the idle guest's memory, for a
// filesystem a container does not mount. Trace events themselves stay,
// for perf and BPF. A kernel that names the initcall otherwise ignores
// the parameter and only the saving is lost.
const KernelCmdline = "console=ttyS0 panic=-1 quiet tsc=reliable no_timer_check i8042.noaux i8042.nokbd i8042.nopnp cryptomgr.notests initcall_blacklist=tracer_init_tracefs"

// guestCmdline is KernelCmdline with what the configuration adds, last so
// that a parameter given again there wins where the kernel takes the last.
func guestCmdline(c config.Container) string {
	if c.KernelParams == "" {
		return KernelCmdline
	}
	return KernelCmdline + " " + c.KernelParams
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

// bootVM starts the container's VMM through the launcher every VM uses:
// QEMU opens no path, everything it uses is a descriptor this process
// opened (the file server's socket or the rootfs image, sealed copies of
// kernel and initrd, sockets), so its identity needs no permission on any
// file.
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

	pair := func(name string) (net.Conn, *os.File, error) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("socketpair for %s: %w", name, err)
		}
		mine := os.NewFile(uintptr(fds[0]), name)
		defer mine.Close()
		theirs := os.NewFile(uintptr(fds[1]), name)
		c, err := net.FileConn(mine)
		if err != nil {
			theirs.Close()
			return nil, nil, fmt.Errorf("socketpair for %s: %w", name, err)
		}
		return c, theirs, nil
	}
	plan, err := s.plan(g, v, choice)
	if err != nil {
		return nil, err
	}
	ch := launcher.Channels{FS: s.fsConn}
	if v.serial, ch.Serial, err = pair("serial"); err != nil {
		return nil, err
	}
	defer ch.Serial.Close()
	if v.agent, ch.Agent, err = pair("agent"); err != nil {
		v.serial.Close()
		return nil, err
	}
	defer ch.Agent.Close()
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
	ch.QMP, err = l.File()
	l.Close()
	if err != nil {
		return fail(fmt.Errorf("listen for QMP: %w", err))
	}
	defer ch.QMP.Close()
	if v.cmd, err = launcher.StartVMM(plan, ch, s.log, nil); err != nil {
		return fail(err)
	}
	if s.fsConn != nil {
		s.fsConn.Close() // the VMM has its own
		s.fsConn = nil
	}
	v.exited = make(chan struct{})
	go func() { v.exitErr = v.cmd.Wait(); close(v.exited) }()
	return v, nil
}

// plan is the container's VM as the one plan type every VM has: its
// machine, accelerator and size, the kernel and initramfs (sealed copies:
// the VMM's identity may not reopen them), the channels, the shared files
// or the fallback's rootfs image, the network, and who the VMM runs as.
func (s *shim) plan(g Guest, v *vm, choice accel.Decision) (*vmplan.Plan, error) {
	bin, err := exec.LookPath(qemu.Binary)
	if err != nil {
		return nil, fmt.Errorf("%s not found: install qemu-system-x86", qemu.Binary)
	}
	var fds vmplan.FDTable
	cfg := qemu.Config{Machine: qemu.Q35, Accel: choice.Accel, AgentPort: agent.PortName, Append: guestCmdline(s.cfg.Container),
		SerialFD: fds.Add(vmplan.FD{Kind: vmplan.FDSerial}), QMPFD: fds.Add(vmplan.FD{Kind: vmplan.FDQMP}),
		KernelFD: fds.Add(vmplan.FD{Kind: vmplan.FDCopy, Path: g.Kernel}), InitrdFD: fds.Add(vmplan.FD{Kind: vmplan.FDCopy, Path: g.Initrd})}
	cfg.MemoryMiB, cfg.CPUs = machineSize(s.bundle.Spec)
	// The code buffer trades memory for speed: all of it is resident once
	// the guest has booted (docs/benchmarks.md has what each size costs).
	cfg.TBSizeMiB, cfg.FreePageReporting = s.cfg.Container.TBSizeMiB, true
	if s.fsConn != nil {
		cfg.FSFD, cfg.FSTag = fds.Add(vmplan.FD{Kind: vmplan.FDShare}), virtiofs.Tag
	} else {
		fds.Drive(&cfg, []disk.Layer{{Path: s.paths.Rootfs(), Format: disk.Raw}}, false, false)
	}
	if !s.noNIC {
		cfg.Netdev = s.net.Netdev("n0")
	}
	cfg.AgentFD = fds.Add(vmplan.FD{Kind: vmplan.FDAgent})
	p := &vmplan.Plan{QEMU: bin, VMM: cfg, FDs: fds.FDs, Accel: choice, Shares: s.shares,
		System: v.user.Kind != KindSelf, SharedIdentity: v.user.Kind != KindLease,
		Identity: identity.Identity{UID: int(v.user.UID), GID: int(v.user.GID), Groups: []int{}}}
	for _, g := range v.user.Groups {
		p.Identity.Groups = append(p.Identity.Groups, int(g))
	}
	return p, nil
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
	logf, err := os.OpenFile(s.paths.FSLog(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open the virtiofsd log: %w", err)
	}
	defer logf.Close()
	s.fs, s.fsConn, err = launcher.StartFS(s.shares, logf, nil)
	return err
}

// stopFS ends the file server once the VMM, its one client, is gone.
func (s *shim) stopFS() {
	if s.fsConn != nil {
		s.fsConn.Close()
		s.fsConn = nil
	}
	s.fs.Stop()
}
