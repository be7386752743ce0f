// Package qemu turns a resolved VM into a QEMU command line, probes the
// accelerator, and speaks QMP.
package qemu

import (
	"fmt"
	"strconv"
)

// Binary is the VMM hutch runs.
const Binary = "qemu-system-x86_64"

// Machine types. microvm has no PCI bus and no firmware to run, so a
// direct kernel boot reaches userspace soonest; booting a disk image needs
// firmware, so it uses q35.
const (
	MicroVM = "microvm"
	Q35     = "q35"
)

// Sandbox is QEMU's seccomp sandbox with every optional denial on.
const Sandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// Config is everything the command line is built from. QEMU opens no path
// of its own: every file, socket and tap comes as an inherited descriptor,
// so the VMM needs no permission on anything (see FDSets and the *FD
// fields).
type Config struct {
	// Name is the guest's name in QEMU (its -name, seen in ps and in
	// QEMU's own messages); "hutch" when empty.
	Name      string `json:"name,omitempty"`
	Machine   string `json:"machine"`
	Accel     string `json:"accel"` // kvm or tcg
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memoryMiB"`
	// KernelFD and InitrdFD hold the kernel and initrd, named to QEMU as
	// /proc/self/fd/N (-kernel does not understand /dev/fdset); 0 for none.
	KernelFD int    `json:"kernelFD,omitempty"`
	InitrdFD int    `json:"initrdFD,omitempty"`
	Append   string `json:"append,omitempty"`
	// FDSets are -add-fd groups; drives name them as /dev/fdset/N.
	FDSets []FDSet `json:"fdsets,omitempty"`
	Drives []Drive `json:"drives,omitempty"`
	// Netdev is the -netdev value of the VM's one NIC (id n0); empty for none.
	Netdev string `json:"netdev,omitempty"`
	// MAC is the NIC's address. QEMU gives every VM the same one by
	// default, which breaks two VMs on one bridge.
	MAC string `json:"mac,omitempty"`
	// SerialFD and QMPFD are a connected socket for the serial console and
	// a listening one for QMP.
	SerialFD int `json:"serialFD"`
	QMPFD    int `json:"qmpFD"`
	// AgentFD, when set, is a connected socket that becomes the
	// virtio-serial port AgentPort: a channel to a guest agent that needs
	// no device node on the host.
	AgentFD   int    `json:"agentFD,omitempty"`
	AgentPort string `json:"agentPort,omitempty"`
	// Pflash, when set, is UEFI: the fdsets of the firmware's code
	// (read-only) and of the VM's own copy of its variable store.
	Pflash []int `json:"pflash,omitempty"`
	// SerialFirmware sends the BIOS's screen to the serial console, so a
	// disk that does not boot says so in the VM's log.
	SerialFirmware bool `json:"serialFirmware,omitempty"`
	// NoReboot makes a guest reboot end QEMU (an installer's reboot, so
	// the boot order can change before the next boot).
	NoReboot bool `json:"noReboot,omitempty"`
	// VNC, when set, is the unix socket QEMU serves a VNC display on,
	// with a VGA card to show; none by default.
	VNC string `json:"vnc,omitempty"`
	// FSFD, when set, is a connected socket to the VM's virtiofsd: a
	// vhost-user-fs device with tag FSTag. vhost-user needs the guest's
	// memory shared with the daemon, so it then comes from a memfd.
	FSFD  int    `json:"fsFD,omitempty"`
	FSTag string `json:"fsTag,omitempty"`

	// TBSizeMiB bounds TCG's translated-code buffer (QEMU's default is a
	// quarter of guest RAM up to 1 GiB, most of it touched by a busy
	// guest); 0 keeps the default. Nothing under KVM.
	TBSizeMiB int `json:"tbSizeMiB,omitempty"`
	// FreePageReporting adds a balloon that only reports the guest's free
	// memory, which QEMU then gives back to the host: a guest's boot
	// touches far more than it keeps.
	FreePageReporting bool `json:"freePageReporting,omitempty"`
}

// FDSet is one -add-fd set: the same file opened once read-only and, for
// a writable layer, once read-write. QEMU picks the fd whose access mode
// matches each open it makes, and it probes read-only first.
type FDSet struct {
	ID  int   `json:"id"`
	FDs []int `json:"fds"`
}

// Drive is one disk: a chain of layers, the top first, each an fdset.
// Naming the backing layers explicitly stops QEMU from opening the paths
// written in a qcow2 header, which the VMM may not be allowed to read.
type Drive struct {
	Layers   []Layer `json:"layers"`
	ReadOnly bool    `json:"readOnly,omitempty"`
	Boot     bool    `json:"boot,omitempty"`
	// CDROM makes the drive a CD on the machine's AHCI controller.
	CDROM bool `json:"cdrom,omitempty"`
	// BootOrder, when not 0, is the drive's place in the boot order
	// (1 first); Boot is BootOrder 1.
	BootOrder int `json:"bootOrder,omitempty"`
}

// Layer is one image file of a drive's chain.
type Layer struct {
	FDSet  int    `json:"fdset"`
	Format string `json:"format"`
}

// Argv is the full QEMU command line, binary first.
func (c Config) Argv(binary string) []string {
	a := []string{binary,
		"-nodefaults", "-no-user-config",
		"-name", c.name(),
		"-machine", c.machine(),
		"-accel", c.accel(),
		"-smp", strconv.Itoa(c.CPUs),
		"-m", strconv.Itoa(c.MemoryMiB) + "M",
		"-display", "none",
		"-sandbox", Sandbox,
		"-chardev", fmt.Sprintf("socket,id=ser0,fd=%d", c.SerialFD),
		"-serial", "chardev:ser0",
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d,server=on,wait=off", c.QMPFD),
		"-mon", "chardev=qmp,mode=control",
	}
	if c.Accel == "kvm" {
		a = append(a, "-cpu", "host")
	}
	if c.Machine == MicroVM {
		// QEMU's virtio-mmio devices are legacy (virtio 0.9) by default,
		// which vhost-user daemons such as virtiofsd refuse.
		a = append(a, "-global", "virtio-mmio.force-legacy=false")
	}
	if c.KernelFD != 0 {
		a = append(a, "-kernel", fdPath(c.KernelFD))
		if c.InitrdFD != 0 {
			a = append(a, "-initrd", fdPath(c.InitrdFD))
		}
		if c.Append != "" {
			a = append(a, "-append", c.Append)
		}
	}
	for _, s := range c.FDSets {
		for _, fd := range s.FDs {
			a = append(a, "-add-fd", fmt.Sprintf("fd=%d,set=%d", fd, s.ID))
		}
	}
	for i, set := range c.Pflash {
		ro := ""
		if i == 0 {
			ro = ",read-only=on"
		}
		a = append(a, "-blockdev", fmt.Sprintf("driver=file,node-name=fw%d-file,filename=/dev/fdset/%d%s", i, set, ro),
			"-blockdev", fmt.Sprintf("driver=raw,node-name=fw%d,file=fw%d-file%s", i, i, ro))
	}
	for i, d := range c.Drives {
		a = append(a, c.drive(i, d)...)
	}
	if c.Netdev != "" {
		dev := c.virtio("net") + ",netdev=n0"
		if c.MAC != "" {
			dev += ",mac=" + c.MAC
		}
		a = append(a, "-netdev", c.Netdev, "-device", dev)
	}
	if c.NoReboot {
		a = append(a, "-no-reboot")
	}
	if c.VNC != "" {
		// A unix socket in the VM's private runtime dir: only its owner
		// can connect, and no TCP port is ever opened by QEMU.
		a = append(a, "-device", "VGA", "-vnc", "unix:"+c.VNC)
	}
	if c.FSFD != 0 {
		a = append(a, "-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", c.MemoryMiB),
			"-chardev", fmt.Sprintf("socket,id=fs,fd=%d", c.FSFD),
			"-device", c.vhostUser("fs")+",chardev=fs,tag="+c.FSTag)
	}
	if c.FreePageReporting {
		a = append(a, "-device", c.virtio("balloon")+",free-page-reporting=on")
	}
	if c.AgentFD != 0 {
		a = append(a, "-device", c.virtio("serial"),
			"-chardev", fmt.Sprintf("socket,id=agent,fd=%d", c.AgentFD),
			"-device", "virtserialport,chardev=agent,name="+c.AgentPort)
	}
	return a
}

func (c Config) accel() string {
	if c.Accel == "tcg" && c.TBSizeMiB > 0 {
		return "tcg,tb-size=" + strconv.Itoa(c.TBSizeMiB)
	}
	return c.Accel
}

func (c Config) name() string {
	if c.Name == "" {
		return "hutch"
	}
	return "guest=" + c.Name
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

func (c Config) machine() string {
	m := c.Machine
	switch {
	case c.Machine == MicroVM:
		// The guest finds the virtio-mmio devices through ACPI; distribution
		// kernels rarely accept them on the command line.
		m += ",acpi=on"
	case len(c.Pflash) == 2:
		m += ",pflash0=fw0,pflash1=fw1"
	case c.SerialFirmware:
		// SeaBIOS then writes its screen to the serial console.
		m += ",graphics=off"
	}
	if c.FSFD != 0 {
		m += ",memory-backend=mem"
	}
	return m
}

// drive builds the -blockdev graph of drive i, bottom layer first, and the
// device on top of it.
func (c Config) drive(i int, d Drive) []string {
	var a []string
	backing := ""
	for j := len(d.Layers) - 1; j >= 0; j-- {
		l := d.Layers[j]
		node := fmt.Sprintf("d%d", i)
		if j > 0 {
			node = fmt.Sprintf("d%d-%d", i, j)
		}
		ro := ""
		if j > 0 || d.ReadOnly {
			ro = ",read-only=on"
		}
		a = append(a, "-blockdev", fmt.Sprintf("driver=file,node-name=%s-file,filename=/dev/fdset/%d%s", node, l.FDSet, ro))
		fmtOpts := fmt.Sprintf("driver=%s,node-name=%s,file=%s-file%s", l.Format, node, node, ro)
		if backing != "" {
			fmtOpts += ",backing=" + backing
		} else if l.Format == "qcow2" {
			// The bottom layer has no backing: say so, or QEMU would follow
			// a path its header might still name.
			fmtOpts += ",backing="
		}
		a = append(a, "-blockdev", fmtOpts)
		backing = node
	}
	dev := c.virtio("blk") + ",drive=" + backing
	if d.CDROM {
		dev = "ide-cd,drive=" + backing + ",bus=ide.0" // a VM has one CD
	}
	switch {
	case d.BootOrder > 0:
		dev += fmt.Sprintf(",bootindex=%d", d.BootOrder-1)
	case d.Boot:
		dev += ",bootindex=0"
	}
	return append(a, "-device", dev)
}

// vhostUser names a vhost-user device model for the machine's transport.
func (c Config) vhostUser(kind string) string {
	if c.Machine == MicroVM {
		return "vhost-user-" + kind + "-device"
	}
	return "vhost-user-" + kind + "-pci"
}

// virtio names the virtio device model for the machine's transport.
func (c Config) virtio(kind string) string {
	if c.Machine == MicroVM {
		return "virtio-" + kind + "-device"
	}
	return "virtio-" + kind + "-pci"
}
