package store

import (
	"os"
	"path/filepath"
	"strconv"
)

// The files of one OCI container under the runtime's root (hutch-runtime
// --root). Nothing else spells them.
const (
	containerState   = "state.json"
	containerLock    = "state.lock"
	containerShim    = "shim.sock"
	containerRootfs  = "rootfs.img"
	containerConsole = "console.log"
	containerQMP     = "qmp.sock"
	containerShimLog = "shim.log"
	runtimeCacheDir  = ".cache"
)

// DefaultRuntimeRoot is where hutch-runtime keeps containers when the
// engine names no --root: runc's place for a privileged runtime, the
// user's runtime dir for a rootless one.
func DefaultRuntimeRoot(rootless bool) string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); rootless && d != "" {
		return filepath.Join(d, "hutch-runtime")
	}
	if rootless {
		return filepath.Join(os.TempDir(), "hutch-runtime-"+strconv.Itoa(os.Getuid()))
	}
	return "/run/hutch-runtime"
}

// Container names the files of container id under a runtime root.
type Container struct{ Dir string }

// ContainerIn is container id's directory under root.
func ContainerIn(root, id string) Container { return Container{Dir: filepath.Join(root, id)} }

// RuntimeCache holds what hutch-runtime rebuilds at will (the guest's
// initramfs), shared by the containers of one root.
func RuntimeCache(root string) string { return filepath.Join(root, runtimeCacheDir) }

func (c Container) State() string   { return filepath.Join(c.Dir, containerState) }
func (c Container) Lock() string    { return filepath.Join(c.Dir, containerLock) }
func (c Container) Shim() string    { return filepath.Join(c.Dir, containerShim) }
func (c Container) Rootfs() string  { return filepath.Join(c.Dir, containerRootfs) }
func (c Container) Console() string { return filepath.Join(c.Dir, containerConsole) }
func (c Container) QMP() string     { return filepath.Join(c.Dir, containerQMP) }
func (c Container) ShimLog() string { return filepath.Join(c.Dir, containerShimLog) }

// FS is the empty directory the container's file server assembles its
// tree on; FSLog is that server's log.
func (c Container) FS() string    { return filepath.Join(c.Dir, fsDir) }
func (c Container) FSLog() string { return filepath.Join(c.Dir, fsLogFile) }
