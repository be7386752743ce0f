package qemu

import (
	"reflect"
	"strings"
	"testing"
)

func TestArgvKernelBoot(t *testing.T) {
	c := Config{Machine: Q35, Accel: "tcg", CPUs: 2, MemoryMiB: 256, Kernel: "/k", Initrd: "/i", Append: "console=ttyS0",
		Netdev: "user,id=n0", SerialFD: 3, QMPFD: 4}
	want := []string{"qemu", "-nodefaults", "-no-user-config", "-name", "hutch", "-machine", "q35", "-accel", "tcg",
		"-smp", "2", "-m", "256M", "-display", "none", "-sandbox", Sandbox,
		"-chardev", "socket,id=ser0,fd=3", "-serial", "chardev:ser0",
		"-chardev", "socket,id=qmp,fd=4,server=on,wait=off", "-mon", "chardev=qmp,mode=control",
		"-kernel", "/k", "-initrd", "/i", "-append", "console=ttyS0",
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"}
	if got := c.Argv("qemu"); !reflect.DeepEqual(got, want) {
		t.Errorf("Argv =\n%q\nwant\n%q", got, want)
	}
}

func TestArgvMicroVMAndDrives(t *testing.T) {
	c := Config{Machine: MicroVM, Accel: "kvm", CPUs: 1, MemoryMiB: 128, SerialFD: 3, QMPFD: 4,
		Drives: []Drive{{Path: "/a,b.qcow2", Format: "qcow2"}, {Path: "/d.raw", Format: "raw", ReadOnly: true}}}
	got := strings.Join(c.Argv("qemu"), " ")
	for _, want := range []string{
		"-machine microvm,acpi=on",
		"-cpu host",
		"-drive file=/a,,b.qcow2,format=qcow2,if=none,id=d0,cache=writeback -device virtio-blk-device,drive=d0",
		"-drive file=/d.raw,format=raw,if=none,id=d1,cache=writeback,readonly=on -device virtio-blk-device,drive=d1",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("argv lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "-netdev") || strings.Contains(got, "-kernel") {
		t.Errorf("argv has a NIC or kernel it was not given:\n%s", got)
	}
}

func TestProbeWithoutKVM(t *testing.T) {
	accel, notice := Probe(t.TempDir() + "/kvm")
	if accel != "tcg" || !strings.Contains(notice, "does not exist") || !strings.Contains(notice, "TCG") {
		t.Errorf("Probe of a missing device = %q, %q", accel, notice)
	}
	accel, notice = Probe("/dev/null") // opens read-write: stands in for a usable device
	if accel != "kvm" || notice != "" {
		t.Errorf("Probe of an openable device = %q, %q", accel, notice)
	}
}
