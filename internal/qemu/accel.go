package qemu

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Probe picks the accelerator: kvm when the device opens read-write for
// this process, else tcg with a notice saying why.
func Probe(kvmDevice string) (accel, notice string) {
	f, err := os.OpenFile(kvmDevice, os.O_RDWR, 0)
	if err == nil {
		f.Close()
		return "kvm", ""
	}
	why := "cannot be opened"
	switch {
	case errors.Is(err, os.ErrNotExist):
		why = "does not exist (no hardware virtualisation here)"
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EACCES):
		why = "is not accessible to this user (see `hutch check`)"
	}
	return "tcg", fmt.Sprintf("%s %s; using TCG software emulation, which is much slower", kvmDevice, why)
}
