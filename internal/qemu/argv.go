// Package qemu turns a resolved VM into a QEMU command line, probes the
// accelerator, and speaks QMP.
package qemu

import (
	"fmt"
	"strconv"
	"strings"
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

// Config is everything the command line is built from.
type Config struct {
	Machine   string  `json:"machine"`
	Accel     string  `json:"accel"` // kvm or tcg
	CPUs      int     `json:"cpus"`
	MemoryMiB int     `json:"memoryMiB"`
	Kernel    string  `json:"kernel,omitempty"`
	Initrd    string  `json:"initrd,omitempty"`
	Append    string  `json:"append,omitempty"`
	Drives    []Drive `json:"drives,omitempty"`
	// Netdev is the -netdev value of the VM's one NIC (id n0); empty for none.
	Netdev string `json:"netdev,omitempty"`
	// SerialFD and QMPFD are the descriptor numbers QEMU inherits: a
	// connected socket for the serial console and a listening one for QMP.
	SerialFD int `json:"serialFD"`
	QMPFD    int `json:"qmpFD"`
}

// Drive is one disk.
type Drive struct {
	Path     string `json:"path"`
	Format   string `json:"format"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Argv is the full QEMU command line, binary first.
func (c Config) Argv(binary string) []string {
	a := []string{binary,
		"-nodefaults", "-no-user-config",
		"-name", "hutch",
		"-machine", c.machine(),
		"-accel", c.Accel,
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
	if c.Kernel != "" {
		a = append(a, "-kernel", c.Kernel)
		if c.Initrd != "" {
			a = append(a, "-initrd", c.Initrd)
		}
		if c.Append != "" {
			a = append(a, "-append", c.Append)
		}
	}
	for i, d := range c.Drives {
		a = append(a, c.drive(i, d)...)
	}
	if c.Netdev != "" {
		a = append(a, "-netdev", c.Netdev, "-device", c.virtio("net")+",netdev=n0")
	}
	return a
}

func (c Config) machine() string {
	if c.Machine == MicroVM {
		// The guest finds the virtio-mmio devices through ACPI; distribution
		// kernels rarely accept them on the command line.
		return "microvm,acpi=on"
	}
	return c.Machine
}

func (c Config) drive(i int, d Drive) []string {
	id := "d" + strconv.Itoa(i)
	opts := []string{"file=" + escape(d.Path), "format=" + d.Format, "if=none", "id=" + id, "cache=writeback"}
	if d.ReadOnly {
		opts = append(opts, "readonly=on")
	}
	return []string{"-drive", strings.Join(opts, ","), "-device", c.virtio("blk") + ",drive=" + id}
}

// virtio names the virtio device model for the machine's transport.
func (c Config) virtio(kind string) string {
	if c.Machine == MicroVM {
		return "virtio-" + kind + "-device"
	}
	return "virtio-" + kind + "-pci"
}

// escape doubles commas, QEMU's quoting inside an option value.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
