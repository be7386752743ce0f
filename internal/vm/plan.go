package vm

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hutch-vm/hutch/internal/accel"
	"github.com/hutch-vm/hutch/internal/disk"
	"github.com/hutch-vm/hutch/internal/guest"
	"github.com/hutch-vm/hutch/internal/identity"
	"github.com/hutch-vm/hutch/internal/netstack"
	"github.com/hutch-vm/hutch/internal/qemu"
	"github.com/hutch-vm/hutch/internal/virtiofs"
)

// Kinds of descriptor the supervisor hands QEMU.
const (
	FDSerial = "serial" // a connected socket, the other end the console mux
	FDQMP    = "qmp"    // a listening socket at the runtime dir's qmp.sock
	FDTap    = "tap"    // the VM's tap on its bridge
	FDFile   = "file"   // Path, opened read-only or (Write) read-write
	FDCopy   = "copy"   // a sealed memfd copy of Path, for files the VMM may not reopen
	FDShare  = "share"  // a connected socket to the VM's virtiofsd
	FDAgent  = "agent"  // a connected socket, the other end a guest agent's channel
)

// FD is one descriptor QEMU inherits. The supervisor makes or opens them in
// order: the i-th is QEMU's fd 3+i.
type FD struct {
	Kind  string `json:"kind"`
	Path  string `json:"path,omitempty"`
	Write bool   `json:"write,omitempty"`
}

// FDTable assigns descriptor numbers as a plan is built.
type FDTable struct {
	FDs  []FD
	sets int
}

// Add appends fd and returns the number QEMU will know it by.
func (t *FDTable) Add(fd FD) int {
	t.FDs = append(t.FDs, fd)
	return 2 + len(t.FDs)
}

// drive passes every layer of a chain as an fdset: read-only, plus
// read-write for the top of a writable drive.
// Drive adds a disk of chain, top first, to cfg.
func (t *FDTable) Drive(cfg *qemu.Config, chain []disk.Layer, readOnly, boot bool) {
	d := qemu.Drive{ReadOnly: readOnly, Boot: boot}
	for i, l := range chain {
		d.Layers = append(d.Layers, qemu.Layer{FDSet: t.FileSet(cfg, l.Path, i == 0 && !readOnly), Format: l.Format})
	}
	cfg.Drives = append(cfg.Drives, d)
}

// FileSet passes path as an fdset, opened read-only and, when write, also
// read-write (QEMU probes read-only first), and returns its id.
func (t *FDTable) FileSet(cfg *qemu.Config, path string, write bool) int {
	t.sets++
	set := qemu.FDSet{ID: t.sets, FDs: []int{t.Add(FD{Kind: FDFile, Path: path})}}
	if write {
		set.FDs = append(set.FDs, t.Add(FD{Kind: FDFile, Path: path, Write: true}))
	}
	cfg.FDSets = append(cfg.FDSets, set)
	return set.ID
}

// ovmfPairs are the OVMF builds Debian's ovmf package ships, preferred
// first: firmware code and the variable store template that goes with it.
var ovmfPairs = [][2]string{
	{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
	{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
}

// findOVMF returns the first OVMF build installed.
func findOVMF() (code, vars string, err error) {
	for _, p := range ovmfPairs {
		if _, err1 := os.Stat(p[0]); err1 == nil {
			if _, err2 := os.Stat(p[1]); err2 == nil {
				return p[0], p[1], nil
			}
		}
	}
	return "", "", invalid("--firmware uefi needs OVMF, which is not installed: apt-get install ovmf")
}

// plan resolves s against the host. It reads but changes nothing; the
// overlay it names is made later, inside the VM's new data dir.
func (e *Engine) plan(s *Spec) (Plan, error) {
	bin, err := exec.LookPath(qemu.Binary)
	if err != nil {
		return Plan{}, fmt.Errorf("%s not found on PATH: install it (Debian: apt-get install qemu-system-x86)", qemu.Binary)
	}
	id, err := identity.Caller()
	if err != nil {
		return Plan{}, err
	}
	if s.Kernel == "" && s.Image == "" {
		// Nothing to boot was named: the micro VM, from the host's kernel.
		m, err := guest.BuildMicro(e.Layout.GuestCache(), "/boot", "/lib/modules", e.Self)
		if err != nil {
			return Plan{}, err
		}
		s.Kernel, s.Initrd, s.Append = m.Kernel, m.Initrd, "console=ttyS0"
		if len(s.Volumes) > 0 && !microHasVirtiofs(m.Release) {
			return Plan{}, invalid("-v: the host kernel %s has no virtiofs module for the micro VM to mount a share with: install a kernel that has one (Debian: linux-image-cloud-amd64)", m.Release)
		}
	}
	if s.Image != "" {
		s.Image = e.resolveImage(s.Image)
	}
	var fds FDTable
	cfg := qemu.Config{Name: s.Name, CPUs: s.CPUs, MemoryMiB: s.MemoryMiB, Machine: qemu.Q35,
		SerialFD: fds.Add(FD{Kind: FDSerial}), QMPFD: fds.Add(FD{Kind: FDQMP})}
	for _, f := range []struct {
		flag string
		path *string
	}{{"--kernel", &s.Kernel}, {"--initrd", &s.Initrd}, {"IMAGE", &s.Image}} {
		if *f.path == "" {
			continue
		}
		if *f.path, err = readable(f.flag, *f.path, os.O_RDONLY); err != nil {
			return Plan{}, err
		}
	}
	cfg.MAC = newMAC()
	choice, err := e.chooseAccel(s)
	if err != nil {
		return Plan{}, err
	}
	cfg.Accel = choice.Accel
	if s.Kernel != "" {
		cfg.KernelFD = fds.Add(FD{Kind: e.fileKind(), Path: s.Kernel})
		if s.Initrd != "" {
			cfg.InitrdFD = fds.Add(FD{Kind: e.fileKind(), Path: s.Initrd})
		}
		cfg.Append = s.Append
		// microvm skips firmware and PCI, but its only clocks are the TSC
		// and the PIT: under TCG on a busy host the guest kernel can fail
		// to calibrate the TSC against the PIT and then hangs. With KVM the
		// guest has kvmclock and microvm is safe.
		if choice.Accel == accel.KVM {
			cfg.Machine = qemu.MicroVM
		}
	}
	var overlays []Overlay
	rules := disk.Rules{SameOwner: e.System}
	var disks []PlannedDisk
	if s.Image != "" {
		// The base is never written, so its format may be read from it;
		// its chain is read by hutch's own parser and pinned in the argv.
		chain, size, err := disk.Resolve(s.Image, "", rules)
		if err != nil {
			return Plan{}, invalid("IMAGE %v", err)
		}
		// A file a guest once wrote as a raw disk can carry any header: a
		// backing file named in it would hand the caller's own files (an
		// ssh key, /etc/shadow for root) to the next guest. An IMAGE is
		// therefore standalone; import flattens a chain the user vouches for.
		if len(chain) > 1 {
			return Plan{}, invalid("IMAGE %s has a backing file (%s): hutch boots standalone images; flatten it with hutch image import %s, or attach the chain with --disk %s,format=qcow2", s.Image, chain[1].Path, s.Image, s.Image)
		}
		if s.DiskSize != 0 && s.DiskSize < size {
			return Plan{}, invalid("--disk-size %d is smaller than the image (%d bytes): a disk only grows; give at least the image's size", s.DiskSize, size)
		}
		ov := Overlay{Path: e.Layout.VM(s.Name).Overlay(0), Base: s.Image, BaseFormat: chain[0].Format, BaseSize: size, Size: max(size, s.DiskSize)}
		overlays = append(overlays, ov)
		chain = append([]disk.Layer{{Path: ov.Path, Format: disk.QCOW2}}, chain...)
		disks = append(disks, PlannedDisk{Source: "IMAGE", Chain: chain})
		// With --kernel, QEMU's kernel loader holds boot index 0.
		fds.Drive(&cfg, chain, false, s.Kernel == "")
	}
	shares, mounts, err := e.planShares(s, e.Layout.VM(s.Name))
	if err != nil {
		return Plan{}, err
	}
	cloud, err := e.planCloud(s, mounts)
	if err != nil {
		return Plan{}, err
	}
	var blanks []Blank
	for i, d := range s.Disks {
		if d.Size > 0 {
			// A blank disk of hutch's own, in the VM's data dir: made at
			// create, removed with the VM.
			b := Blank{Path: e.Layout.VM(s.Name).Overlay(1 + len(blanks)), Format: d.Format, Size: d.Size}
			blanks = append(blanks, b)
			s.Disks[i].Path = b.Path
			chain := []disk.Layer{{Path: b.Path, Format: b.Format}}
			disks = append(disks, PlannedDisk{Source: "--disk size", Chain: chain})
			fds.Drive(&cfg, chain, false, false)
			continue
		}
		mode := os.O_RDWR
		if d.ReadOnly {
			mode = os.O_RDONLY
		}
		if s.Disks[i].Path, err = readable("--disk", d.Path, mode); err != nil {
			return Plan{}, err
		}
		path := s.Disks[i].Path
		if d.Format == "" {
			// A guest writes this file: its content never picks the format.
			if disk.LooksQCOW2(path) {
				return Plan{}, invalid("--disk %s starts with a qcow2 header but names no format: add ,format=qcow2 if you made it as qcow2, or ,format=raw if a guest wrote it (raw is the default, never probed)", d.Path)
			}
			s.Disks[i].Format = disk.Raw
		}
		chain, _, err := disk.Resolve(path, s.Disks[i].Format, rules)
		if err != nil {
			return Plan{}, invalid("--disk %v", err)
		}
		disks = append(disks, PlannedDisk{Source: "--disk", Chain: chain, ReadOnly: d.ReadOnly})
		fds.Drive(&cfg, chain, d.ReadOnly, false)
	}
	install := false
	if s.CDROM != "" {
		if s.CDROM, err = readable("--cdrom", s.CDROM, os.O_RDONLY); err != nil {
			return Plan{}, err
		}
		chain, _, err := disk.Resolve(s.CDROM, disk.Raw, rules)
		if err != nil {
			return Plan{}, invalid("--cdrom %v", err)
		}
		disks = append(disks, PlannedDisk{Source: "--cdrom", Chain: chain, ReadOnly: true})
		fds.Drive(&cfg, chain, true, false)
		cfg.Drives[len(cfg.Drives)-1].CDROM = true
		// The install phase: the CD boots first, and a guest reboot ends
		// QEMU so the next boot is from the disk (see EndInstall).
		install = true
		cfg.NoReboot = true
		for i := range cfg.Drives {
			switch {
			case cfg.Drives[i].CDROM:
				cfg.Drives[i].BootOrder = 1
			case cfg.Drives[i].Boot:
				cfg.Drives[i].Boot, cfg.Drives[i].BootOrder = false, 2
			}
		}
	}
	var uefi *UEFI
	if s.Firmware == "uefi" {
		code, tmpl, err := findOVMF()
		if err != nil {
			return Plan{}, err
		}
		uefi = &UEFI{Code: code, Template: tmpl, Vars: e.Layout.VM(s.Name).UEFIVars()}
		cfg.Machine = qemu.Q35
		cfg.Pflash = []int{fds.FileSet(&cfg, code, false), fds.FileSet(&cfg, uefi.Vars, true)}
	} else if s.Kernel == "" && s.Display != "vnc" {
		// With no screen, the BIOS's screen goes to the serial log.
		cfg.SerialFirmware = true
	}
	if cloud != nil {
		// After the data disks, so adding a seed never renames them.
		fds.Drive(&cfg, []disk.Layer{{Path: e.Layout.VM(s.Name).Seed(), Format: disk.Raw}}, true, false)
	}
	paths := e.Layout.VM(s.Name)
	if s.Display == "vnc" {
		cfg.VNC = paths.VNC()
	}
	if shares != nil {
		cfg.FSFD, cfg.FSTag = fds.Add(FD{Kind: FDShare}), virtiofs.Tag
		if s.Image == "" {
			// hutch's own inits mount what this names; another init can.
			// A disk image's cloud-init mounts them (planCloud).
			cfg.Append = strings.TrimSpace(cfg.Append + " " + virtiofs.CmdlineParam(mounts))
		}
	}
	for _, sock := range []string{paths.QMP(), paths.Console(), paths.Passt(), paths.VNC()} {
		if len(sock) > maxSocketPath {
			return Plan{}, invalid("socket %s is %d bytes, past the %d a unix socket path may have: set XDG_RUNTIME_DIR to a shorter dir, or give a shorter --name", sock, len(sock), maxSocketPath)
		}
	}
	var passt *Helper
	switch err := e.pickNetwork(s); {
	case err != nil:
		return Plan{}, err
	case s.Network == NetPasst:
		bin, _ := exec.LookPath(netstack.PasstBinary)
		passt = &Helper{Binary: bin, Args: netstack.PasstArgs(paths.Passt(), s.Ports), Socket: paths.Passt()}
		cfg.Netdev = netstack.StreamNetdev("n0", paths.Passt())
	case s.Network == NetSlirp:
		cfg.Netdev = netstack.SlirpNetdev("n0", s.Ports)
	case s.Network == NetBridge:
		if !e.System {
			if err := netstack.CheckBridgeHelper(netstack.BridgeHelper); err != nil {
				return Plan{}, err
			}
		}
		cfg.Netdev = netstack.TapNetdev("n0", fds.Add(FD{Kind: FDTap}))
	}
	plan := Plan{QEMU: bin, VMM: cfg, FDs: fds.FDs, Identity: id, Overlays: overlays, Blanks: blanks, Disks: disks, UEFI: uefi, Install: install, Passt: passt, RunDir: paths.Run, Accel: choice, cloud: cloud, Shares: shares}
	if cloud != nil {
		plan.Seed = paths.Seed()
	}
	if s.Network == NetBridge && !e.System {
		plan.BridgeHelper = &Helper{Binary: netstack.BridgeHelper, Args: []string{s.Bridge}}
	}
	return plan, nil
}

// chooseAccel settles the accelerator before anything starts: a kvm that
// KVM cannot honour is bad input, named where it was asked for.
func (e *Engine) chooseAccel(s *Spec) (accel.Decision, error) {
	where := "--accel " + s.Accel
	if s.Accel == "" {
		s.Accel, where = e.Accel, fmt.Sprintf("accel = %q in %s", e.Accel, e.ConfigPath)
	}
	d, err := accel.Decide(s.Accel, e.KVMDevice)
	if err != nil {
		return d, invalid("%s: %v", where, err)
	}
	return d, nil
}

// maxSocketPath is sun_path's 108 bytes less the terminating NUL.
const maxSocketPath = 107

// fileKind is how the kernel and initrd reach QEMU: the file itself when
// the VMM runs as the caller, a sealed copy when it runs as an identity
// that could not reopen the caller's file through /proc/self/fd.
func (e *Engine) fileKind() string {
	if e.System {
		return FDCopy
	}
	return FDFile
}

// pickNetwork settles the default network and checks the backend can do
// what the forwards ask. The default is slirp: Debian 12's passt truncates
// a stream the guest sends when the guest closes it (docs/benchmarks.md),
// at no gain in throughput under TCG. passt is the default only for what
// slirp cannot do, an IPv6 host address.
func (e *Engine) pickNetwork(s *Spec) error {
	_, lookErr := exec.LookPath(netstack.PasstBinary)
	f, v6 := netstack.HasIPv6(s.Ports)
	switch {
	case s.Network == "" && v6 && lookErr == nil:
		s.Network = NetPasst
	case s.Network == "":
		s.Network = NetSlirp
	case s.Network == NetPasst && lookErr != nil:
		return invalid("--network passt: passt is not installed; install it (Debian: apt-get install passt) or use --network slirp")
	}
	if v6 && s.Network == NetSlirp {
		return invalid("-p %s: QEMU's slirp cannot forward IPv6 host addresses; install passt (apt-get install passt) and use --network passt", f)
	}
	return nil
}

// readable makes path absolute and checks this user can open it as the
// VMM will, so a bad path fails here and not inside QEMU.
func readable(flag, path string, mode int) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", invalid("%s %s: %v", flag, path, err)
	}
	// Non-blocking: a FIFO must be refused, not wait for a writer.
	f, err := os.OpenFile(abs, mode|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", invalid("%s %s does not exist: check the path", flag, path)
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EROFS):
		what := "read"
		if mode == os.O_RDWR {
			what = "write"
		}
		return "", invalid("%s %s: this user cannot %s it; fix its permissions or pass a copy you own", flag, path, what)
	case err != nil:
		return "", invalid("%s %s: %v", flag, path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	switch {
	case err != nil:
		return "", invalid("%s %s: %v", flag, path, err)
	case fi.IsDir():
		return "", invalid("%s %s is a directory: give a file", flag, path)
	case fi.Mode().IsRegular(), flag == "--disk" && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		return abs, nil
	}
	return "", invalid("%s %s is not a regular file (%s): give a file", flag, path, fi.Mode().Type())
}

// readLimited reads at most limit bytes of a file readable has checked.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// newMAC is a random address in QEMU's locally administered 52:54:00
// prefix, as libvirt assigns them.
func newMAC() string {
	b := make([]byte, 3)
	rand.Read(b)
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
}
