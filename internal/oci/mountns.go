package oci

import (
	"fmt"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// hostRootFD is the shim's descriptor of the host's root directory, when
// create gave it a mount namespace of its own.
const hostRootFD = 4

// newMountNamespace says the configuration asks for a new mount namespace.
func newMountNamespace(s *specs.Spec) bool {
	if s.Linux == nil {
		return false
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.MountNamespace {
			return ns.Path == ""
		}
	}
	return false
}

// openHostRoot is "/" for the shim to come back to.
func openHostRoot() (*os.File, error) {
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /: %w", err)
	}
	return os.NewFile(uintptr(fd), "/"), nil
}

// enterContainerRoot makes rootfs the root of the shim's own mount
// namespace, as the container's init has it under runc: engines that join
// the container's mount namespace (podman cp on a running container) find
// its files at /. The shim itself then chroots back to the host's root
// through the descriptor create passed, so its own paths are unchanged.
func enterContainerRoot(rootfs string, hostRoot *os.File) error {
	defer hostRoot.Close()
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make the shim's mounts private: %w", err)
	}
	if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind the rootfs: %w", err)
	}
	if err := unix.Chdir(rootfs); err != nil {
		return fmt.Errorf("enter the rootfs: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root to the rootfs: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	if err := unix.Fchdir(int(hostRoot.Fd())); err != nil {
		return fmt.Errorf("return to the host's root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("return to the host's root: %w", err)
	}
	return unix.Chdir("/")
}
