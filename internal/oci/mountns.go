package oci

import (
	"fmt"
	"log/slog"
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
// With proc, the root gets a /proc of the shim's PID namespace, which
// engines read for the container's processes (podman top): the shim, the
// VMM and its helpers.
func enterContainerRoot(rootfs string, hostRoot *os.File, proc bool) error {
	defer hostRoot.Close()
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make the shim's mounts private: %w", err)
	}
	if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind the rootfs: %w", err)
	}
	if proc {
		mountProc(rootfs)
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

// mountProc mounts a procfs on rootfs's proc directory, before the host's
// /proc leaves the namespace (a user namespace may mount procfs only where
// one is fully visible). The image's proc must be a directory, not a link
// that would put it on the host's paths the shim goes on using.
func mountProc(rootfs string) {
	fd, err := unix.Open(rootfs+"/proc", unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		slog.Warn("the container's root gets no /proc for podman top", "err", err)
		return
	}
	defer unix.Close(fd)
	target := fmt.Sprintf("/proc/self/fd/%d", fd)
	if err := unix.Mount("proc", target, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		slog.Warn("the container's root gets no /proc for podman top", "err", err)
	}
}
