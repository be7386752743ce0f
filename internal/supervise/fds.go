package supervise

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/launch"
	"github.com/hutch-vm/hutch/internal/netstack"
	"github.com/hutch-vm/hutch/internal/vm"
)

// vmmFiles makes or opens, in plan order, every descriptor QEMU inherits.
// This is the privileged side: the VMM gets descriptors, never a path it
// would need permission for. The caller closes the returned files once
// QEMU has them.
func (s *supervisor) vmmFiles(serial, qmp *os.File) ([]*os.File, error) {
	var files []*os.File
	fail := func(err error) ([]*os.File, error) {
		closeAll(files)
		return nil, err
	}
	for _, fd := range s.rec.Plan.FDs {
		var f *os.File
		var err error
		switch fd.Kind {
		case vm.FDSerial:
			f, err = dup(serial)
		case vm.FDQMP:
			f, err = dup(qmp)
		case vm.FDShare:
			if s.fsConn == nil {
				err = fmt.Errorf("plan shares files but no virtiofsd runs")
				break
			}
			f, err = dup(s.fsConn)
		case vm.FDTap:
			f, err = s.openTap()
		case vm.FDFile:
			mode := os.O_RDONLY
			if fd.Write {
				mode = os.O_RDWR
			}
			f, err = os.OpenFile(fd.Path, mode, 0)
		case vm.FDCopy:
			f, err = launch.SealedCopy(fd.Path)
		default:
			err = fmt.Errorf("unknown descriptor kind %q in plan", fd.Kind)
		}
		if err != nil {
			return fail(err)
		}
		files = append(files, f)
	}
	return files, nil
}

// openTap makes the VM's tap: as root directly, as a user through QEMU's
// setuid bridge helper, which enforces the administrator's ACL.
func (s *supervisor) openTap() (*os.File, error) {
	if h := s.rec.Plan.BridgeHelper; h != nil {
		return netstack.OpenBridgeTap(h.Binary, h.Args[0])
	}
	return netstack.CreateTap(s.rec.Spec.Bridge)
}

func dup(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
