package oci

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// maxSocketPath is what fits in sockaddr_un's sun_path with its NUL.
// Engines nest the runtime's root deep (Docker's exec-root/runtime-runc/
// moby/<64 hex>), past it.
const maxSocketPath = 107

// socketPath returns a name for the unix socket at path that fits
// sun_path: path itself when short, otherwise the same file reached
// through a descriptor of its directory (/proc/self/fd/N/name), as runc
// does. The returned closer releases that descriptor once the socket is
// bound or connected.
func socketPath(path string) (string, func(), error) {
	if len(path) <= maxSocketPath {
		return path, func() {}, nil
	}
	fd, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("open %s: %w", filepath.Dir(path), err)
	}
	short := "/proc/self/fd/" + strconv.Itoa(fd) + "/" + filepath.Base(path)
	if len(short) > maxSocketPath {
		unix.Close(fd)
		return "", nil, fmt.Errorf("socket name %s is too long", filepath.Base(path))
	}
	return short, func() { unix.Close(fd) }, nil
}

// listenUnix listens on a unix socket of the given network at path.
func listenUnix(network, path string) (*net.UnixListener, error) {
	name, done, err := socketPath(path)
	if err != nil {
		return nil, err
	}
	defer done()
	os.Remove(path)
	l, err := net.ListenUnix(network, &net.UnixAddr{Name: name, Net: network})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// The name Go would unlink on Close is the /proc one; remove by path.
	l.SetUnlinkOnClose(false)
	return l, nil
}

// dialUnix connects to the unix socket of the given network at path.
func dialUnix(network, path string) (*net.UnixConn, error) {
	name, done, err := socketPath(path)
	if err != nil {
		return nil, err
	}
	defer done()
	return net.DialUnix(network, nil, &net.UnixAddr{Name: name, Net: network})
}
