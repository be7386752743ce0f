// Package store owns hutch's on-disk state: where every file lives, how
// records are written (atomically, under a lock) and how a recorded process
// is recognised as still alive.
package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Layout is the root of one user's (or the system's) hutch state. Runtime
// files (sockets) live under RunRoot, which the OS clears on reboot;
// records, logs and overlays live under DataRoot.
type Layout struct {
	RunRoot  string
	DataRoot string
	// CacheRoot holds what hutch can rebuild, such as initramfs images.
	CacheRoot string
}

// The names of every file hutch keeps for a VM. Nothing else spells them.
const (
	recordFile     = "vm.json"
	lockFile       = "vm.lock"
	consoleLogFile = "console.log"
	vmmLogFile     = "qemu.log"
	superLogFile   = "supervisor.log"
	qmpSocket      = "qmp.sock"
	consoleSocket  = "console.sock"
	passtSocket    = "passt.sock"
	vncSocket      = "vnc.sock"
	fsDir          = "fs"
	uefiVarsFile   = "uefi-vars.fd"
	passtLogFile   = "passt.log"
	fsLogFile      = "virtiofsd.log"
	vmsDir         = "vms"
	portsLockFile  = "ports.lock"
	seedFile       = "seed.iso"
	knownHostsFile = "known_hosts"
	imagesDir      = "images"
	sshDir         = "ssh"
	sshKeyFile     = "id_ed25519"
)

// SessionLayout resolves the layout for the calling user from the XDG base
// directories, creating the roots private (0700) if needed.
func SessionLayout() (Layout, error) {
	uid := os.Getuid()
	run := os.Getenv("XDG_RUNTIME_DIR")
	var runRoot string
	if run != "" {
		if !filepath.IsAbs(run) {
			return Layout{}, fmt.Errorf("XDG_RUNTIME_DIR %q is not an absolute path: set it to an absolute path or unset it", run)
		}
		if err := ensurePrivateDir(run, uid, false); err != nil {
			return Layout{}, err
		}
		runRoot = filepath.Join(run, "hutch")
	} else {
		// Without XDG_RUNTIME_DIR (no login session, cron, su), fall back to
		// a per-user directory in /tmp. Anyone can create names there, so it
		// is only trusted after checking owner, type and mode.
		runRoot = filepath.Join(os.TempDir(), "hutch-"+strconv.Itoa(uid))
	}
	if err := ensurePrivateDir(runRoot, uid, true); err != nil {
		return Layout{}, err
	}

	data := os.Getenv("XDG_DATA_HOME")
	if data == "" || !filepath.IsAbs(data) {
		home, err := os.UserHomeDir()
		if err != nil || home == "" {
			return Layout{}, fmt.Errorf("cannot find a data directory: set HOME or XDG_DATA_HOME")
		}
		data = filepath.Join(home, ".local", "share")
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return Layout{}, fmt.Errorf("create data directory: %w", err)
	}
	dataRoot := filepath.Join(data, "hutch")
	if err := ensurePrivateDir(dataRoot, uid, true); err != nil {
		return Layout{}, err
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" || !filepath.IsAbs(cache) {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	l := Layout{RunRoot: runRoot, DataRoot: dataRoot, CacheRoot: filepath.Join(cache, "hutch")}
	for _, d := range []string{filepath.Join(runRoot, vmsDir), filepath.Join(dataRoot, vmsDir)} {
		if err := os.Mkdir(d, 0o700); err != nil && !os.IsExist(err) {
			return Layout{}, fmt.Errorf("create %s: %w", d, err)
		}
	}
	return l, nil
}

// System roots: where root's VMs live.
const (
	SystemRunRoot   = "/run/hutch"
	SystemDataRoot  = "/var/lib/hutch"
	SystemCacheRoot = "/var/cache/hutch"
)

// SystemLayout is the layout when root runs hutch. The runtime roots are
// 0711: each VM's runtime dir below is 0700 and owned by that VM's leased
// identity, which must be able to reach it by path (passt's socket) while
// no one may list the VMs there. Everything else stays root's, 0700.
func SystemLayout() (Layout, error) {
	l := Layout{RunRoot: SystemRunRoot, DataRoot: SystemDataRoot, CacheRoot: SystemCacheRoot}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{l.RunRoot, 0o711}, {filepath.Join(l.RunRoot, vmsDir), 0o711},
		{l.DataRoot, 0o700}, {l.VMsDir(), 0o700}, {l.CacheRoot, 0o700},
	} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return Layout{}, fmt.Errorf("create %s: %w", d.path, err)
		}
		// MkdirAll honours the umask and leaves existing dirs alone; the
		// modes are part of the security model, so set them.
		if err := os.Chmod(d.path, d.mode); err != nil {
			return Layout{}, fmt.Errorf("set mode of %s: %w", d.path, err)
		}
	}
	return l, nil
}

// Leases is the ledger of identities leased to system VMs. It lives on
// the runtime tmpfs: holders are recognised by start times counted from
// boot, which a ledger kept across a reboot could match by chance.
func (l Layout) Leases() string { return filepath.Join(l.RunRoot, "leases.json") }

// ensurePrivateDir makes sure dir is a real directory owned by uid that no
// one else can enter. With create it makes a missing one (0700); an
// existing one that fails the check is an error, never repaired, because
// someone else may have planted it.
func ensurePrivateDir(dir string, uid int, create bool) error {
	fi, err := os.Lstat(dir)
	if os.IsNotExist(err) && create {
		if err := os.Mkdir(dir, 0o700); err != nil && !os.IsExist(err) {
			return fmt.Errorf("create runtime directory %s: %w", dir, err)
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return fmt.Errorf("check directory %s: %w", dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("refusing %s: not a directory (a symlink or file is in the way); remove it", dir)
	case !ok || int(st.Uid) != uid:
		return fmt.Errorf("refusing %s: owned by uid %d, not %d; remove it or set XDG_RUNTIME_DIR", dir, st.Uid, uid)
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("refusing %s: mode %04o lets others in; run chmod 700 %s", dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// VM returns the paths of one VM.
func (l Layout) VM(name string) Paths {
	return Paths{
		Data: filepath.Join(l.DataRoot, vmsDir, name),
		Run:  filepath.Join(l.RunRoot, vmsDir, name),
	}
}

// VMsDir is the directory whose entries are the VMs' data dirs.
func (l Layout) VMsDir() string { return filepath.Join(l.DataRoot, vmsDir) }

// GuestCache is where built guest images are kept.
func (l Layout) GuestCache() string { return filepath.Join(l.CacheRoot, "guest") }

// Images is the local image cache: one NAME.qcow2 per image.
func (l Layout) Images() string { return filepath.Join(l.DataRoot, imagesDir) }

// Image is the file of the cached image name.
func (l Layout) Image(name string) string { return filepath.Join(l.Images(), name+".qcow2") }

// SSHKey is the private half of the key pair hutch puts into guests it
// seeds; the public half is SSHKey()+".pub". It is data, not cache: guests
// already seeded trust it.
func (l Layout) SSHKey() string { return filepath.Join(l.DataRoot, sshDir, sshKeyFile) }

// PortsLock serialises host-port checks with the VMMs binding them.
func (l Layout) PortsLock() string { return filepath.Join(l.RunRoot, portsLockFile) }

// Paths are the files of one VM.
type Paths struct {
	Data string // records, logs, overlays; survives reboots
	Run  string // sockets; private, removed when the VM stops
}

func (p Paths) Record() string     { return filepath.Join(p.Data, recordFile) }
func (p Paths) Lock() string       { return filepath.Join(p.Data, lockFile) }
func (p Paths) ConsoleLog() string { return filepath.Join(p.Data, consoleLogFile) }
func (p Paths) VMMLog() string     { return filepath.Join(p.Data, vmmLogFile) }
func (p Paths) SuperLog() string   { return filepath.Join(p.Data, superLogFile) }
func (p Paths) QMP() string        { return filepath.Join(p.Run, qmpSocket) }
func (p Paths) Console() string    { return filepath.Join(p.Run, consoleSocket) }
func (p Paths) Passt() string      { return filepath.Join(p.Run, passtSocket) }
func (p Paths) VNC() string        { return filepath.Join(p.Run, vncSocket) }

// FS is the empty directory the VM's file server assembles its tree on;
// FS()+".sock" is briefly its socket.
func (p Paths) FS() string         { return filepath.Join(p.Run, fsDir) }
func (p Paths) PasstLog() string   { return filepath.Join(p.Data, passtLogFile) }
func (p Paths) FSLog() string      { return filepath.Join(p.Data, fsLogFile) }
func (p Paths) Seed() string       { return filepath.Join(p.Data, seedFile) }
func (p Paths) UEFIVars() string   { return filepath.Join(p.Data, uefiVarsFile) }
func (p Paths) KnownHosts() string { return filepath.Join(p.Data, knownHostsFile) }
func (p Paths) Overlay(i int) string {
	return filepath.Join(p.Data, fmt.Sprintf("disk%d.qcow2", i))
}
