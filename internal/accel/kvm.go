package accel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl numbers from <linux/kvm.h>.
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmGetSupportedCPUID   = 0xC008AE05
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46
	kvmRun                 = 0xAE80
	kvmSetRegs             = 0x4090AE82
	kvmGetSregs            = 0x8138AE83
	kvmSetSregs            = 0x4138AE84

	kvmAPIVersion = 12
	kvmExitIO     = 2
	kvmExitHLT    = 5
)

// runTimeout bounds each KVM_RUN of the probe's guest. A working KVM
// returns in microseconds; a broken one may never return, and then the
// probe's thread is left behind while hutch goes on with TCG.
const runTimeout = 2 * time.Second

// The probe guest, 16-bit real mode at guestBase: compute 0x2a+0x15, write
// it to port probePort, halt. Seeing the sum arrive and then the halt
// proves the vCPU executed instructions, not just entered.
var guestCode = []byte{
	0xb8, 0x2a, 0x00, // mov ax, 0x2a
	0x05, 0x15, 0x00, // add ax, 0x15
	0xba, 0x10, 0x00, // mov dx, probePort
	0xee, // out dx, al
	0xf4, // hlt
}

const (
	guestBase = 0x1000
	probePort = 0x10
	probeSum  = 0x3f
)

// ProbeDevice checks that KVM at device can run hutch's guests: the API
// version, the supported CPUID against the baseline, and a vCPU that runs
// a few instructions. It takes a few milliseconds; nothing is cached, so
// a module loaded or a group granted takes effect at the next command.
func ProbeDevice(device string) Probe {
	p := Probe{Device: device}
	fd, err := unix.Open(device, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			p.Why = "does not exist (no hardware virtualisation here)"
		case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EACCES):
			p.Why = "is not accessible to this user (see hutch check)"
		default:
			p.Why = fmt.Sprintf("cannot be opened: %v", err)
		}
		return p
	}
	defer unix.Close(fd)
	p.Nested = true // it opens: any failure from here on is a deeper one
	if v, err := ioctl(fd, kvmGetAPIVersion, 0); err != nil || v != kvmAPIVersion {
		p.Why = fmt.Sprintf("KVM API version %d (%v), want %d", v, err, kvmAPIVersion)
		return p
	}
	entries, err := supportedCPUID(fd)
	if err != nil {
		p.Why = fmt.Sprintf("KVM_GET_SUPPORTED_CPUID: %v", err)
		return p
	}
	if m := Missing(entries); len(m) > 0 {
		p.Why = missingPhrase(m)
		return p
	}
	if err := runGuest(fd); err != nil {
		p.Why = "a test guest does not run: " + err.Error()
		return p
	}
	p.Usable, p.Nested = true, false
	return p
}

func ioctl(fd int, req uintptr, arg uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return int(r), errno
	}
	return int(r), nil
}

// supportedCPUID reads the table KVM can offer a guest, growing the buffer
// while the kernel says it is too small.
func supportedCPUID(fd int) ([]CPUIDEntry, error) {
	const entrySize = 40 // struct kvm_cpuid_entry2
	for n := 64; n <= 4096; n *= 2 {
		buf := make([]byte, 8+n*entrySize)
		binary.LittleEndian.PutUint32(buf, uint32(n))
		_, err := ioctl(fd, kvmGetSupportedCPUID, uintptr(unsafe.Pointer(&buf[0])))
		if errors.Is(err, unix.E2BIG) {
			continue
		}
		if err != nil {
			return nil, err
		}
		got := int(binary.LittleEndian.Uint32(buf))
		out := make([]CPUIDEntry, 0, got)
		for i := 0; i < got && i < n; i++ {
			e := buf[8+i*entrySize:]
			u := func(off int) uint32 { return binary.LittleEndian.Uint32(e[off:]) }
			out = append(out, CPUIDEntry{Function: u(0), Index: u(4), EAX: u(12), EBX: u(16), ECX: u(20), EDX: u(24)})
		}
		return out, nil
	}
	return nil, errors.New("table too large")
}

// runGuest creates a VM with one page of memory and one vCPU and runs
// guestCode on it.
func runGuest(kvm int) error {
	vmfd, err := ioctl(kvm, kvmCreateVM, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	defer unix.Close(vmfd)
	mem, err := unix.Mmap(-1, 0, 0x1000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("guest memory: %w", err)
	}
	defer unix.Munmap(mem)
	copy(mem, guestCode)
	// struct kvm_userspace_memory_region: slot, flags, guest_phys_addr,
	// memory_size, userspace_addr.
	region := make([]byte, 32)
	binary.LittleEndian.PutUint64(region[8:], guestBase)
	binary.LittleEndian.PutUint64(region[16:], uint64(len(mem)))
	binary.LittleEndian.PutUint64(region[24:], uint64(uintptr(unsafe.Pointer(&mem[0]))))
	if _, err := ioctl(vmfd, kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&region[0]))); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", err)
	}
	cpu, err := ioctl(vmfd, kvmCreateVCPU, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	defer unix.Close(cpu)
	size, err := ioctl(kvm, kvmGetVCPUMmapSize, 0)
	if err != nil || size < 48 {
		return fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %d, %v", size, err)
	}
	run, err := unix.Mmap(cpu, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map the vcpu: %w", err)
	}
	defer unix.Munmap(run)

	// Real mode with CS based at 0, so IP is the physical address.
	sregs := make([]byte, 312)
	if _, err := ioctl(cpu, kvmGetSregs, uintptr(unsafe.Pointer(&sregs[0]))); err != nil {
		return fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	binary.LittleEndian.PutUint64(sregs[0:], 0) // cs.base
	binary.LittleEndian.PutUint16(sregs[12:], 0)
	if _, err := ioctl(cpu, kvmSetSregs, uintptr(unsafe.Pointer(&sregs[0]))); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	regs := make([]byte, 144) // struct kvm_regs: 16 GPRs, rip, rflags
	binary.LittleEndian.PutUint64(regs[128:], guestBase)
	binary.LittleEndian.PutUint64(regs[136:], 0x2)
	if _, err := ioctl(cpu, kvmSetRegs, uintptr(unsafe.Pointer(&regs[0]))); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}

	exit, err := runOnce(cpu, run)
	if err != nil {
		return err
	}
	// struct kvm_run: exit_reason at 8; the io exit at 32: direction,
	// size, port, count, data_offset.
	port := binary.LittleEndian.Uint16(run[34:])
	off := binary.LittleEndian.Uint64(run[40:])
	if exit != kvmExitIO || port != probePort || off >= uint64(len(run)) || run[off] != probeSum {
		return fmt.Errorf("unexpected exit %d (port %#x)", exit, port)
	}
	if exit, err = runOnce(cpu, run); err != nil {
		return err
	}
	if exit != kvmExitHLT {
		return fmt.Errorf("unexpected exit %d, want hlt", exit)
	}
	return nil
}

// runOnce is one KVM_RUN under runTimeout. A run that never returns leaves
// its goroutine blocked; the descriptors it holds stay open until exit,
// which is the price of not hanging the command.
func runOnce(cpu int, run []byte) (uint32, error) {
	done := make(chan error, 1)
	go func() {
		_, err := ioctl(cpu, kvmRun, 0)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return 0, fmt.Errorf("KVM_RUN: %w", err)
		}
		return binary.LittleEndian.Uint32(run[8:]), nil
	case <-time.After(runTimeout):
		return 0, fmt.Errorf("KVM_RUN did not return within %s", runTimeout)
	}
}
