// Package vm is the engine: it turns what a user asked for (Spec) into a
// resolved Plan, starts the VM's supervisor, and drives the lifecycle.
package vm

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/hutch-vm/hutch/internal/accel"
	"github.com/hutch-vm/hutch/internal/disk"
	"github.com/hutch-vm/hutch/internal/netstack"
)

// InputError is an error in what the user asked for; the CLI exits 2.
type InputError struct{ msg string }

func (e *InputError) Error() string { return e.msg }

func invalid(format string, a ...any) error { return &InputError{msg: fmt.Sprintf(format, a...)} }

// IsInput reports whether err comes from bad input.
func IsInput(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}

// Options is a run request as the user wrote it.
type Options struct {
	Name    string
	CPUs    int
	Memory  string
	Kernel  string
	Initrd  string
	Append  string
	Image   string
	Disks   []string
	Publish []string
	Network string
	Remove  bool
	// SSH asks for a login: hutch's key in a cloud-init seed and a free
	// host port forwarded to the guest's port 22.
	SSH bool
	// CloudInit is a file of the user's own cloud-config user-data.
	CloudInit string
	// Accel is auto, kvm or tcg; empty takes the configured default.
	Accel string
	// DiskSize grows the root disk (the IMAGE's overlay) to this size.
	DiskSize string
	// Restart is the restart policy: no, on-failure or always.
	Restart string
	// Display is none or vnc.
	Display string
	// Firmware is bios or uefi.
	Firmware string
	// CDROM is an ISO attached as a CD, booted first until the guest
	// first shuts down or reboots.
	CDROM string
	// Volumes are HOSTDIR:GUESTPATH[:ro|:rw] shares.
	Volumes []string
}

// Spec is a validated run request.
type Spec struct {
	Name      string             `json:"name"`
	CPUs      int                `json:"cpus"`
	MemoryMiB int                `json:"memoryMiB"`
	Kernel    string             `json:"kernel,omitempty"`
	Initrd    string             `json:"initrd,omitempty"`
	Append    string             `json:"append,omitempty"`
	Image     string             `json:"image,omitempty"`
	Disks     []Disk             `json:"disks,omitempty"`
	Ports     []netstack.Forward `json:"ports"`
	Network   string             `json:"network"`
	Bridge    string             `json:"bridge,omitempty"`
	Remove    bool               `json:"remove,omitempty"`
	// SSH is the login hutch seeds and forwards; nil without --ssh.
	SSH *SSHAccess `json:"ssh,omitempty"`
	// CloudInit is the absolute path of the user's own user-data.
	CloudInit string `json:"cloudInit,omitempty"`
	// Accel is the accelerator asked for (auto, kvm, tcg); empty until
	// the engine fills in its configured default.
	Accel string `json:"accel,omitempty"`
	// DiskSize is the root disk's size in bytes; 0 keeps the image's.
	DiskSize uint64 `json:"diskSize,omitempty"`
	// Restart is what the supervisor does when QEMU ends by itself.
	Restart string `json:"restart,omitempty"`
	// Display is "vnc" for a graphical console, empty for none.
	Display string `json:"display,omitempty"`
	// Firmware is "uefi" for OVMF, empty for the BIOS.
	Firmware string `json:"firmware,omitempty"`
	// CDROM is the absolute path of the ISO attached as a CD.
	CDROM string `json:"cdrom,omitempty"`
	// Volumes are host directories shared with the guest.
	Volumes []Volume `json:"volumes,omitempty"`
}

// Volume is a host directory the guest mounts at Target.
type Volume struct {
	Source   string `json:"source"` // absolute
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Restart policies, as Podman and Docker name them.
const (
	RestartNo        = "no"
	RestartOnFailure = "on-failure"
	RestartAlways    = "always"
)

// SSHAccess is how hutch reaches a guest it seeded.
type SSHAccess struct {
	User     string `json:"user"`
	HostPort int    `json:"hostPort"`
}

// Disk is an extra disk attached as it is (not through an overlay).
// Format is what the user said (raw when they said nothing): a guest
// writes this file, so its content never decides how it is read.
type Disk struct {
	Path     string `json:"path"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	Format   string `json:"format"`
	// Size, when set, asks for a blank disk of that many bytes that hutch
	// makes in the VM's data dir (--disk size=20G); Path is then its file.
	Size uint64 `json:"size,omitempty"`
}

// parseDisk reads --disk PATH[,format=raw|qcow2][,ro|rw] and --disk
// size=SIZE[,format=qcow2|raw].
func parseDisk(arg string) (Disk, error) {
	parts := strings.Split(arg, ",")
	d := Disk{Path: parts[0]}
	if sz, ok := strings.CutPrefix(parts[0], "size="); ok {
		n, err := ParseSize(sz)
		if err != nil {
			return Disk{}, invalid("invalid --disk %q: %v", arg, err)
		}
		d = Disk{Size: n, Format: disk.QCOW2}
	}
	for _, o := range parts[1:] {
		switch {
		case o == "ro":
			d.ReadOnly = true
		case o == "rw":
			d.ReadOnly = false
		case strings.HasPrefix(o, "format="):
			d.Format = strings.TrimPrefix(o, "format=")
			if d.Format != disk.Raw && d.Format != disk.QCOW2 {
				return Disk{}, invalid("invalid --disk %q: format=%s: use format=raw or format=qcow2", arg, d.Format)
			}
		default:
			return Disk{}, invalid("invalid --disk %q: unknown option %q; give PATH[,format=raw|qcow2][,ro|rw]", arg, o)
		}
	}
	if d.Path == "" && d.Size == 0 {
		return Disk{}, invalid("invalid --disk %q: give PATH[,format=raw|qcow2][,ro|rw]", arg)
	}
	if d.Size > 0 && d.ReadOnly {
		return Disk{}, invalid("invalid --disk %q: a blank disk is for writing; drop ,ro", arg)
	}
	return d, nil
}

// ParseSize reads a disk size: a number with a binary unit (K, M, G, T,
// with or without "iB"/"B"); a bare number is GiB, as virt-install's
// size= is. At least 1 MiB, at most 64 TiB.
func ParseSize(s string) (uint64, error) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("size %q: give a size such as 20G or 512M", s)
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil || n > 1<<40 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	shift := map[string]uint{"K": 10, "M": 20, "G": 30, "T": 40, "": 30}[strings.ToUpper(m[2])]
	if n > (64<<40)>>shift {
		return 0, fmt.Errorf("size %q: at most 64T", s)
	}
	b := n << shift
	if b < 1<<20 {
		return 0, fmt.Errorf("size %q: at least 1M", s)
	}
	return b, nil
}

// Networks hutch knows. An empty Network means the default: slirp, or
// passt for IPv6 forwards (see pickNetwork).
const (
	NetPasst = "passt"
	NetSlirp = "slirp"
	NetNone  = "none"
	// NetBridge is written bridge=BR: a tap on host bridge BR, made by
	// QEMU's setuid bridge helper.
	NetBridge = "bridge"
)

// Defaults for a run that does not say.
const (
	DefaultCPUs      = 1
	DefaultMemoryMiB = 512
	minMemoryMiB     = 16
	maxCPUs          = 255
)

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// ValidName checks a VM name; names become directory names, so nothing
// that could climb out of the state dir gets through.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return invalid("invalid name %q: use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit", name)
	}
	return nil
}

// ParseSpec validates o. It only checks what can be checked without the
// host; files and tools are checked when the plan is made.
func ParseSpec(o Options) (Spec, error) {
	s := Spec{Name: o.Name, CPUs: o.CPUs, Kernel: o.Kernel, Initrd: o.Initrd, Append: o.Append,
		Image: o.Image, Network: o.Network, Remove: o.Remove, Ports: []netstack.Forward{}, CloudInit: o.CloudInit, CDROM: o.CDROM}
	if s.Name != "" {
		if err := ValidName(s.Name); err != nil {
			return Spec{}, err
		}
	}
	if o.DiskSize != "" {
		n, err := ParseSize(o.DiskSize)
		if err != nil {
			return Spec{}, invalid("invalid --disk-size: %v", err)
		}
		if o.Image == "" {
			return Spec{}, invalid("--disk-size sizes the root disk of an IMAGE: give the IMAGE, or add a blank disk with --disk size=%s", o.DiskSize)
		}
		s.DiskSize = n
	}
	switch o.Firmware {
	case "", "bios":
	case "uefi":
		s.Firmware = "uefi"
	default:
		return Spec{}, invalid("unknown --firmware %q: use bios or uefi", o.Firmware)
	}
	switch o.Display {
	case "", "none":
	case "vnc":
		s.Display = "vnc"
	default:
		return Spec{}, invalid("unknown --display %q: use none or vnc", o.Display)
	}
	switch o.Restart {
	case "", RestartNo:
	case RestartOnFailure, RestartAlways:
		if o.Remove {
			return Spec{}, invalid("--restart %s and --rm conflict: a vm removed when it stops cannot be restarted", o.Restart)
		}
		s.Restart = o.Restart
	default:
		return Spec{}, invalid("unknown --restart %q: use no, on-failure or always", o.Restart)
	}
	if o.Accel != "" {
		mode, err := accel.ParseMode(o.Accel)
		if err != nil {
			return Spec{}, invalid("--accel: %v", err)
		}
		s.Accel = mode
	}
	if s.CPUs < 1 || s.CPUs > maxCPUs {
		return Spec{}, invalid("invalid --cpus %d: give a number from 1 to %d", o.CPUs, maxCPUs)
	}
	s.MemoryMiB = DefaultMemoryMiB
	if o.Memory != "" {
		m, err := ParseMemory(o.Memory)
		if err != nil {
			return Spec{}, err
		}
		s.MemoryMiB = m
	}
	// IMAGE with --kernel boots that kernel with the image (through its
	// overlay) as the first disk, /dev/vda.
	if s.Kernel == "" && (s.Initrd != "" || s.Append != "") {
		return Spec{}, invalid("--initrd and --append need --kernel")
	}
	for _, arg := range o.Disks {
		d, err := parseDisk(arg)
		if err != nil {
			return Spec{}, err
		}
		s.Disks = append(s.Disks, d)
	}
	for _, arg := range o.Volumes {
		v, err := parseVolume(arg)
		if err != nil {
			return Spec{}, err
		}
		for _, w := range s.Volumes {
			if w.Target == v.Target {
				return Spec{}, invalid("-v %s: %s is already the guest path of %s; give each share its own guest path", arg, v.Target, w.Source)
			}
		}
		s.Volumes = append(s.Volumes, v)
	}
	if len(s.Volumes) > maxVolumes {
		return Spec{}, invalid("-v: %d shares; a VM takes at most %d", len(s.Volumes), maxVolumes)
	}
	if br, ok := strings.CutPrefix(s.Network, NetBridge+"="); ok {
		if err := netstack.ValidBridge(br); err != nil {
			return Spec{}, invalid("--network %q: %v", s.Network, err)
		}
		s.Network, s.Bridge = NetBridge, br
	}
	switch s.Network {
	case "", NetPasst, NetSlirp, NetNone, NetBridge:
		if s.Network == NetBridge && s.Bridge == "" {
			return Spec{}, invalid("--network bridge needs a bridge: write bridge=NAME, e.g. bridge=virbr0")
		}
	default:
		return Spec{}, invalid("unknown --network %q: use passt, slirp, none or bridge=NAME", s.Network)
	}
	for _, p := range o.Publish {
		fwds, err := netstack.ParsePublish(p)
		if err != nil {
			return Spec{}, invalid("%v", err)
		}
		s.Ports = append(s.Ports, fwds...)
	}
	if len(s.Ports) > netstack.MaxForwards {
		return Spec{}, invalid("-p: %d ports in all; a VM forwards at most %d", len(s.Ports), netstack.MaxForwards)
	}
	if len(s.Ports) > 0 && s.Network == NetNone {
		return Spec{}, invalid("-p needs a network: drop --network none")
	}
	if len(s.Ports) > 0 && s.Network == NetBridge {
		return Spec{}, invalid("-p forwards through passt or slirp; on a bridge, reach the guest at its own address (drop -p)")
	}
	if o.SSH {
		if s.Network == NetNone || s.Network == NetBridge {
			return Spec{}, invalid("--ssh forwards a host port to the guest's port 22: drop --network %s", o.Network)
		}
		s.SSH = &SSHAccess{}
	}
	if (o.SSH || s.CloudInit != "") && s.Image == "" {
		return Spec{}, invalid("--ssh and --cloud-init configure a cloud image: give the IMAGE to boot (see hutch images)")
	}
	return s, nil
}

// sizeRE spells out both cases rather than upper-casing the input:
// strings.ToUpper turns some non-ASCII letters (dotless ı) into ASCII ones.
var sizeRE = regexp.MustCompile(`^([0-9]+)([KMGTkmgt]?)([iI]?[bB])?$`)

// ParseMemory reads a memory size: a number with an optional binary unit
// (K, M, G, T; "MiB", "MB" and "M" all mean 2^20); a bare number is MiB,
// as for QEMU's -m and virt-install.
func ParseMemory(s string) (int, error) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, invalid("invalid --memory %q: give a size such as 256M or 2G", s)
	}
	// More than 2^32 of even the smallest unit is past 4T; bounding the
	// count here also keeps the shifts below from wrapping around.
	n, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil || n > 1<<32 {
		return 0, invalid("invalid --memory %q: too large", s)
	}
	var kib uint64
	switch strings.ToUpper(m[2]) {
	case "K":
		kib = n
	case "", "M":
		kib = n << 10
	case "G":
		kib = n << 20
	case "T":
		kib = n << 30
	}
	if kib > 1<<32 {
		return 0, invalid("invalid --memory %q: at most 4T", s)
	}
	if kib%1024 != 0 {
		return 0, invalid("invalid --memory %q: give a whole number of MiB", s)
	}
	mib := int(kib >> 10)
	if mib < minMemoryMiB {
		return 0, invalid("invalid --memory %q: a VM needs at least %dM", s, minMemoryMiB)
	}
	return mib, nil
}

// maxVolumes bounds the shares of one VM; each is a mount in its server.
const maxVolumes = 64

// parseVolume reads HOSTDIR:GUESTPATH[:ro|:rw]. The guest path travels on
// a kernel command line and in an fstab, so it may hold no space, comma
// or colon.
func parseVolume(arg string) (Volume, error) {
	parts := strings.Split(arg, ":")
	if len(parts) == 3 {
		switch parts[2] {
		case "ro", "rw":
		default:
			return Volume{}, invalid("-v %s: unknown option %q: the form is HOSTDIR:GUESTPATH[:ro]", arg, parts[2])
		}
	}
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return Volume{}, invalid("-v %s: the form is HOSTDIR:GUESTPATH[:ro], e.g. -v ./src:/src", arg)
	}
	target := parts[1]
	switch {
	case !filepath.IsAbs(target):
		return Volume{}, invalid("-v %s: guest path %s is relative: give an absolute one, e.g. /data", arg, target)
	case filepath.Clean(target) == "/":
		return Volume{}, invalid("-v %s: a share cannot cover the guest's /: give a directory, e.g. /data", arg)
	case strings.ContainsAny(target, " \t\n,\\\"'"):
		return Volume{}, invalid("-v %s: guest path %q holds a space, comma, quote or backslash: choose a plainer path", arg, target)
	}
	src, err := filepath.Abs(parts[0])
	if err != nil {
		return Volume{}, invalid("-v %s: %v", arg, err)
	}
	return Volume{Source: src, Target: filepath.Clean(target), ReadOnly: len(parts) == 3 && parts[2] == "ro"}, nil
}
