package qemu

import (
	"reflect"
	"strings"
	"testing"
)

func TestArgvKernelBoot(t *testing.T) {
	c := Config{Machine: Q35, Accel: "tcg", CPUs: 2, MemoryMiB: 256, KernelFD: 5, InitrdFD: 6, Append: "console=ttyS0",
		Netdev: "user,id=n0", MAC: "52:54:00:12:34:57", SerialFD: 3, QMPFD: 4}
	want := []string{"qemu", "-nodefaults", "-no-user-config", "-name", "hutch", "-machine", "q35", "-accel", "tcg",
		"-smp", "2", "-m", "256M", "-display", "none", "-sandbox", Sandbox,
		"-chardev", "socket,id=ser0,fd=3", "-serial", "chardev:ser0",
		"-chardev", "socket,id=qmp,fd=4,server=on,wait=off", "-mon", "chardev=qmp,mode=control",
		"-kernel", "/proc/self/fd/5", "-initrd", "/proc/self/fd/6", "-append", "console=ttyS0",
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:57"}
	if got := c.Argv("qemu"); !reflect.DeepEqual(got, want) {
		t.Errorf("Argv =\n%q\nwant\n%q", got, want)
	}
}

// An overlay over a base: both layers come from fdsets, the backing link
// is explicit, and the bottom qcow2 is told it has no backing.
func TestArgvDriveChain(t *testing.T) {
	c := Config{Machine: Q35, Accel: "tcg", CPUs: 1, MemoryMiB: 128, SerialFD: 3, QMPFD: 4,
		FDSets: []FDSet{{ID: 1, FDs: []int{5, 6}}, {ID: 2, FDs: []int{7}}, {ID: 3, FDs: []int{8}}},
		Drives: []Drive{
			{Layers: []Layer{{FDSet: 1, Format: "qcow2"}, {FDSet: 2, Format: "qcow2"}}, Boot: true},
			{Layers: []Layer{{FDSet: 3, Format: "raw"}}, ReadOnly: true},
		}}
	got := strings.Join(c.Argv("qemu"), " ")
	want := "-add-fd fd=5,set=1 -add-fd fd=6,set=1 -add-fd fd=7,set=2 -add-fd fd=8,set=3 " +
		"-blockdev driver=file,node-name=d0-1-file,filename=/dev/fdset/2,read-only=on " +
		"-blockdev driver=qcow2,node-name=d0-1,file=d0-1-file,read-only=on,backing= " +
		"-blockdev driver=file,node-name=d0-file,filename=/dev/fdset/1 " +
		"-blockdev driver=qcow2,node-name=d0,file=d0-file,backing=d0-1 " +
		"-device virtio-blk-pci,drive=d0,bootindex=0 " +
		"-blockdev driver=file,node-name=d1-file,filename=/dev/fdset/3,read-only=on " +
		"-blockdev driver=raw,node-name=d1,file=d1-file,read-only=on " +
		"-device virtio-blk-pci,drive=d1"
	if !strings.HasSuffix(got, want) {
		t.Errorf("argv =\n%s\nwant it to end with\n%s", got, want)
	}
}

func TestArgvMicroVM(t *testing.T) {
	c := Config{Machine: MicroVM, Accel: "kvm", CPUs: 1, MemoryMiB: 128, SerialFD: 3, QMPFD: 4,
		FDSets: []FDSet{{ID: 1, FDs: []int{5}}}, Drives: []Drive{{Layers: []Layer{{FDSet: 1, Format: "raw"}}}},
		Netdev: "user,id=n0"}
	got := strings.Join(c.Argv("qemu"), " ")
	for _, want := range []string{"-machine microvm,acpi=on", "-cpu host", "-device virtio-blk-device,drive=d0", "-device virtio-net-device,netdev=n0"} {
		if !strings.Contains(got, want) {
			t.Errorf("argv lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "-kernel") {
		t.Errorf("argv has a kernel it was not given:\n%s", got)
	}
}

// UEFI: OVMF's code read-only and the VM's variable store writable, both
// fdsets, as the machine's pflash; a BIOS disk boot gets SeaBIOS's
// serial console; a VNC display is a unix socket.
func TestArgvFirmwareAndDisplay(t *testing.T) {
	c := Config{Name: "web", Machine: Q35, Accel: "tcg", CPUs: 1, MemoryMiB: 128, SerialFD: 3, QMPFD: 4,
		FDSets: []FDSet{{ID: 1, FDs: []int{5}}, {ID: 2, FDs: []int{6, 7}}}, Pflash: []int{1, 2}, VNC: "/run/x/vnc.sock"}
	got := strings.Join(c.Argv("qemu"), " ")
	for _, want := range []string{"-name guest=web", "-machine q35,pflash0=fw0,pflash1=fw1",
		"-blockdev driver=file,node-name=fw0-file,filename=/dev/fdset/1,read-only=on -blockdev driver=raw,node-name=fw0,file=fw0-file,read-only=on",
		"-blockdev driver=file,node-name=fw1-file,filename=/dev/fdset/2 -blockdev driver=raw,node-name=fw1,file=fw1-file ",
		"-device VGA -vnc unix:/run/x/vnc.sock"} {
		if !strings.Contains(got, want) {
			t.Errorf("argv lacks %q:\n%s", want, got)
		}
	}
	bios := Config{Machine: Q35, Accel: "tcg", CPUs: 1, MemoryMiB: 128, SerialFD: 3, QMPFD: 4, SerialFirmware: true}
	if got := strings.Join(bios.Argv("qemu"), " "); !strings.Contains(got, "-machine q35,graphics=off") {
		t.Errorf("BIOS disk boot argv: %s", got)
	}
}

func TestArgvShares(t *testing.T) {
	c := Config{Machine: Q35, Accel: "tcg", CPUs: 1, MemoryMiB: 256, SerialFD: 3, QMPFD: 4, FSFD: 7, FSTag: "hutch"}
	a := strings.Join(c.Argv("qemu"), " ")
	for _, want := range []string{"-machine q35,memory-backend=mem", "memory-backend-memfd,id=mem,size=256M,share=on",
		"socket,id=fs,fd=7", "vhost-user-fs-pci,chardev=fs,tag=hutch"} {
		if !strings.Contains(a, want) {
			t.Errorf("argv lacks %q: %s", want, a)
		}
	}
	c.Machine = MicroVM
	// virtiofsd refuses a legacy virtio-mmio device, QEMU's default.
	if a := strings.Join(c.Argv("qemu"), " "); !strings.Contains(a, "microvm,acpi=on,memory-backend=mem") || !strings.Contains(a, "vhost-user-fs-device") ||
		!strings.Contains(a, "-global virtio-mmio.force-legacy=false") {
		t.Errorf("microvm argv: %s", a)
	}
}

// A container's VM: a bounded TCG code buffer (never under KVM, which has
// none) and a balloon that only reports free pages.
func TestArgvMemoryKnobs(t *testing.T) {
	c := Config{Machine: Q35, Accel: "tcg", CPUs: 1, MemoryMiB: 256, TBSizeMiB: 16, FreePageReporting: true}
	a := strings.Join(c.Argv("qemu"), " ")
	for _, want := range []string{"-accel tcg,tb-size=16 ", "-device virtio-balloon-pci,free-page-reporting=on"} {
		if !strings.Contains(a, want) {
			t.Errorf("argv %q lacks %q", a, want)
		}
	}
	c.Accel, c.Machine = "kvm", MicroVM
	a = strings.Join(c.Argv("qemu"), " ")
	if !strings.Contains(a, "-accel kvm ") || !strings.Contains(a, "virtio-balloon-device,free-page-reporting=on") {
		t.Errorf("argv under KVM on microvm: %q", a)
	}
}
