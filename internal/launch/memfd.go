//go:build linux && !386 && !arm

package launch

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// SealedCopy copies path into a memfd that can no longer change. QEMU
// running as another identity cannot reopen a file it may not read, not
// even through /proc/self/fd; it can reopen its own memfd.
func SealedCopy(path string) (*os.File, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("hutch-boot", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("copy %s: memfd: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return nil, fmt.Errorf("copy %s: %w", path, err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal copy of %s: %w", path, err)
	}
	return f, nil
}
