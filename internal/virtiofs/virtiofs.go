// Package virtiofs shares host files with a VM. One virtiofsd serves each
// VM a tree assembled from everything the VM was given (a container's
// rootfs, its volumes, single files, a session VM's -v directories), so a
// file can be shared without its siblings and read-only is enforced by the
// host's mounts, not by the guest.
//
// The daemon never runs with a capability in the host's user namespace: a
// short stage (the hutch binary re-executed as `_virtiofsd`, like
// launch's `_exec`) starts in a new user and mount namespace, bind-mounts
// the entries onto a private tmpfs and execs virtiofsd on it with its own
// namespace sandbox, seccomp filter and no_new_privs.
package virtiofs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// StageCommand is the hidden verb of hutch and hutch-runtime that runs Stage.
const StageCommand = "_virtiofsd"

// Tag is the mount tag the guest mounts the tree by.
const Tag = "hutch"

// GuestRoot is where hutch's guests mount the tree before binding its
// entries into place.
const GuestRoot = "/run/hutch/fs"

// Cache is virtiofsd's cache mode: "auto" lets a change made on the host
// (podman cp into a running container) reach the guest within a second,
// where "always" would keep the guest's view until it drops it.
const Cache = "auto"

// binaries are where distributions install virtiofsd: QEMU's C daemon
// (Debian 12) and the Rust one that replaced it.
var binaries = []string{"/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd", "/usr/lib/virtiofsd"}

// Find returns the installed virtiofsd.
func Find() (string, error) {
	for _, p := range binaries {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("virtiofsd"); err == nil {
		return p, nil
	}
	return "", errors.New("virtiofsd is not installed (looked in " + strings.Join(binaries, ", ") + "): install qemu-system-common (Debian 12) or virtiofsd")
}

// Entry is one top-level name of the served tree.
type Entry struct {
	Name     string `json:"name"`   // one path element
	Source   string `json:"source"` // an absolute host path: a directory or a file
	ReadOnly bool   `json:"readOnly,omitempty"`
	// Base, when set, puts the source at Name/Base instead of Name: the
	// guest's mountinfo then names the source's own base name, as a
	// bind mount's root under runc does.
	Base string `json:"base,omitempty"`
}

// Path is where the entry is in the tree.
func (e Entry) Path() string {
	if e.Base != "" {
		return e.Name + "/" + e.Base
	}
	return e.Name
}

// IDMap is one line of a user namespace's uid_map or gid_map.
type IDMap struct {
	Inside  uint32 `json:"inside"`
	Outside uint32 `json:"outside"`
	Count   uint32 `json:"count"`
}

// Server is one VM's virtiofsd.
type Server struct {
	Binary  string  `json:"binary"`
	Entries []Entry `json:"entries"`
	// Root is an empty directory, private to the VM, that the tree is
	// assembled on inside the daemon's own mount namespace; from the host
	// it stays empty.
	Root string `json:"root"`
	// UIDMap and GIDMap are the daemon's user namespace (see Mapping).
	UIDMap []IDMap `json:"uidMap"`
	GIDMap []IDMap `json:"gidMap"`
	// Helpers says the maps are written by newuidmap and newgidmap, the
	// setuid helpers that let an ordinary user map its subordinate ids
	// (and allow setgroups, which virtiofsd calls).
	Helpers bool `json:"helpers,omitempty"`
}

// Mapping is the user namespace the daemon gets, the least that can serve
// the caller's files:
//   - an ordinary user is root inside, and its subordinate ids (as
//     rootless Podman maps them) are 1 and up: the guest's root writes as
//     that user, its other users as the subordinate ids;
//   - the root of a user namespace that maps to an ordinary user (a
//     rootless engine) passes its own namespace's ids on unchanged, so
//     the container's files keep their owners;
//   - real root (a root engine) maps every id to itself: the container's
//     files belong to host ids. The daemon's capabilities then count only
//     in its own namespace, which owns nothing but its sandbox.
func Mapping() (uids, gids []IDMap, helpers bool, err error) {
	euid, egid := os.Geteuid(), os.Getegid()
	if euid != 0 {
		return userMapping(euid, egid)
	}
	if uids, err = ownRange("/proc/self/uid_map"); err != nil {
		return nil, nil, false, err
	}
	if gids, err = ownRange("/proc/self/gid_map"); err != nil {
		return nil, nil, false, err
	}
	return uids, gids, false, nil
}

// userMapping is an ordinary user's: itself as root, its subordinate ids
// after. Without subordinate ids virtiofsd cannot run (it must drop the
// user's supplementary groups, which only a helper-written map allows).
func userMapping(uid, gid int) (uids, gids []IDMap, helpers bool, err error) {
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	hint := fmt.Sprintf("give user %s subordinate ids in /etc/subuid and /etc/subgid (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s) and install uidmap, as rootless Podman needs", name, name)
	for _, h := range []string{"newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(h); err != nil {
			return nil, nil, false, fmt.Errorf("sharing files needs %s: %s", h, hint)
		}
	}
	su, err1 := subordinate("/etc/subuid", name, uid)
	sg, err2 := subordinate("/etc/subgid", name, uid)
	if err1 != nil || err2 != nil {
		return nil, nil, false, fmt.Errorf("sharing files needs subordinate ids: %s", hint)
	}
	return []IDMap{{0, uint32(uid), 1}, {1, su.Outside, su.Count}}, []IDMap{{0, uint32(gid), 1}, {1, sg.Outside, sg.Count}}, true, nil
}

// subordinate is the first range /etc/subuid (or subgid) gives a user,
// named or by number, capped at 65535 ids.
func subordinate(path, name string, uid int) (IDMap, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return IDMap{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) != 3 || (f[0] != name && f[0] != strconv.Itoa(uid)) {
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil || count == 0 {
			continue
		}
		return IDMap{Outside: uint32(start), Count: uint32(min(count, 65535))}, nil
	}
	return IDMap{}, fmt.Errorf("%s has no range for %s", path, name)
}

// ownRange maps every id of this process's user namespace to itself,
// one line per line of its own map: the kernel takes a line only when one
// line of the parent's map holds all of it.
func ownRange(path string) ([]IDMap, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	ms, err := IdentityOf(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ms, nil
}

// IdentityOf maps the inside ids of a uid_map's lines to themselves.
func IdentityOf(uidMap string) ([]IDMap, error) {
	var out []IDMap
	zero := false
	for _, line := range strings.Split(uidMap, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("bad line %q", line)
		}
		in, err1 := strconv.ParseUint(f[0], 10, 32)
		_, err2 := strconv.ParseUint(f[1], 10, 32)
		n, err3 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil || err3 != nil || n == 0 {
			return nil, fmt.Errorf("bad line %q", line)
		}
		zero = zero || in == 0
		out = append(out, IDMap{uint32(in), uint32(in), uint32(n)})
	}
	if !zero {
		return nil, errors.New("id 0 is not mapped")
	}
	return out, nil
}

// CheckEntries refuses names that are not one clean path element, a
// source that is not absolute, and a name given twice.
func CheckEntries(es []Entry) error {
	seen := map[string]bool{}
	for _, e := range es {
		names := []string{e.Name}
		if e.Base != "" {
			names = append(names, e.Base)
		}
		for _, n := range names {
			if n == "" || n == "." || n == ".." || strings.ContainsRune(n, '/') {
				return fmt.Errorf("share name %q is not one path element", n)
			}
		}
		if seen[e.Name] {
			return fmt.Errorf("share name %q is given twice", e.Name)
		}
		seen[e.Name] = true
		if !filepath.IsAbs(e.Source) {
			return fmt.Errorf("share source %q is not absolute", e.Source)
		}
	}
	return nil
}

// Start runs the daemon as self's StageCommand, logging to log, and
// returns it with the VMM's end of its vhost-user socket, already
// connected: QEMU opens no path.
func (s Server) Start(self string, log *os.File) (*exec.Cmd, *os.File, error) {
	if err := CheckEntries(s.Entries); err != nil {
		return nil, nil, err
	}
	spec, err := json.Marshal(s)
	if err != nil {
		return nil, nil, fmt.Errorf("virtiofsd: %w", err)
	}
	listener, conn, err := socketPair(s.Root + ".sock")
	if err != nil {
		return nil, nil, err
	}
	defer listener.Close()
	// The stage reports its pid as /proc numbers it (this process may be
	// pid 1 of a namespace of its own, and /proc the host's), then waits
	// for its maps.
	reportR, reportW, err := os.Pipe()
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("virtiofsd: %w", err)
	}
	defer reportR.Close()
	syncR, syncW, err := os.Pipe()
	if err != nil {
		reportW.Close()
		conn.Close()
		return nil, nil, fmt.Errorf("virtiofsd: %w", err)
	}
	defer syncR.Close()
	defer syncW.Close()
	cmd := exec.Command(self, StageCommand, string(spec))
	cmd.Env = []string{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = []*os.File{listener, syncR, reportW}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		Pdeathsig:  syscall.SIGKILL,
	}
	err = cmd.Start()
	reportW.Close()
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("start virtiofsd: %w", err)
	}
	fail := func(err error) (*exec.Cmd, *os.File, error) {
		cmd.Process.Kill()
		cmd.Wait()
		conn.Close()
		return nil, nil, err
	}
	reportR.SetReadDeadline(time.Now().Add(10 * time.Second))
	line := make([]byte, 16)
	n, _ := reportR.Read(line)
	pid, err := strconv.Atoi(strings.TrimSpace(string(line[:n])))
	if err != nil || pid <= 0 {
		return fail(errors.New("start virtiofsd: its stage did not report its pid (see its log)"))
	}
	if err := s.writeMaps(pid); err != nil {
		return fail(err)
	}
	if _, err := syncW.Write([]byte{0}); err != nil {
		return fail(fmt.Errorf("virtiofsd: %w", err))
	}
	return cmd, conn, nil
}

// writeMaps gives process pid its ids: through the setuid helpers for an
// ordinary user, directly otherwise.
func (s Server) writeMaps(pid int) error {
	if s.Helpers {
		if err := runMapHelper("newuidmap", pid, s.UIDMap); err != nil {
			return err
		}
		return runMapHelper("newgidmap", pid, s.GIDMap)
	}
	for _, m := range []struct {
		file string
		ms   []IDMap
	}{{"uid_map", s.UIDMap}, {"gid_map", s.GIDMap}} {
		var b strings.Builder
		for _, l := range m.ms {
			fmt.Fprintf(&b, "%d %d %d\n", l.Inside, l.Outside, l.Count)
		}
		path := fmt.Sprintf("/proc/%d/%s", pid, m.file)
		if err := os.WriteFile(path, []byte(b.String()), 0); err != nil {
			return fmt.Errorf("virtiofsd: write %s: %w", path, err)
		}
	}
	return nil
}

// runMapHelper writes pid's map with newuidmap or newgidmap.
func runMapHelper(bin string, pid int, ms []IDMap) error {
	args := []string{strconv.Itoa(pid)}
	for _, m := range ms {
		args = append(args, strconv.FormatUint(uint64(m.Inside), 10), strconv.FormatUint(uint64(m.Outside), 10), strconv.FormatUint(uint64(m.Count), 10))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// socketPair makes a listening unix socket for the daemon, which accepts
// one client, and that client: bound at path just long enough to connect.
// The path is reached through a descriptor of its directory, so its length
// is never past sun_path's.
func socketPair(path string) (listener, conn *os.File, err error) {
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return nil, nil, fmt.Errorf("virtiofsd socket: %w", err)
	}
	defer dir.Close()
	os.Remove(path)
	short := fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path))
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: short, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("virtiofsd socket: %w", err)
	}
	l.SetUnlinkOnClose(false)
	defer os.Remove(path)
	defer l.Close()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: short, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("virtiofsd socket: %w", err)
	}
	defer c.Close()
	if listener, err = l.File(); err != nil {
		return nil, nil, fmt.Errorf("virtiofsd socket: %w", err)
	}
	if conn, err = c.File(); err != nil {
		listener.Close()
		return nil, nil, fmt.Errorf("virtiofsd socket: %w", err)
	}
	return listener, conn, nil
}

// mappedEnv marks the stage's second exec, once its ids are mapped.
const mappedEnv = "HUTCH_VIRTIOFSD_MAPPED"

// Stage is the body of StageCommand, in the new namespaces as their root.
// On success it never returns.
func Stage(specJSON string) error {
	var s Server
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		return fmt.Errorf("virtiofsd stage: %w", err)
	}
	if err := CheckEntries(s.Entries); err != nil {
		return fmt.Errorf("virtiofsd stage: %w", err)
	}
	if os.Getenv(mappedEnv) == "" {
		// Fd 5 takes this process's pid, fd 4 gives one byte once its maps
		// are written (EOF if the parent died).
		pid, _ := os.Readlink("/proc/self")
		unix.Write(5, []byte(pid+"\n"))
		unix.Close(5)
		var b [1]byte
		if n, _ := unix.Read(4, b[:]); n != 1 {
			return errors.New("virtiofsd stage: the parent went away before mapping ids")
		}
		unix.Close(4)
		// This process was exec'd before its ids were mapped, which left it
		// no capabilities in its namespace; exec'd again as the
		// namespace's root, it has them.
		err := unix.Exec("/proc/self/exe", []string{os.Args[0], StageCommand, specJSON}, []string{mappedEnv + "=1"})
		return fmt.Errorf("virtiofsd stage: re-exec: %w", err)
	}
	if err := assemble(s); err != nil {
		return fmt.Errorf("virtiofsd stage: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("virtiofsd stage: no_new_privs: %w", err)
	}
	// No announce_submounts: the guest then sees the tree as one
	// filesystem, and a bind of an entry keeps the entry's path as its
	// root in the guest's mountinfo (as runc's binds show the source's).
	argv := []string{s.Binary, "--fd=3", "-o", "source=" + s.Root, "-o", "sandbox=namespace",
		"-o", "cache=" + Cache, "-o", "no_posix_lock",
		// Raising the descriptor limit needs a capability of the host's
		// namespace, which the daemon does not have.
		"--rlimit-nofile=0"}
	err := unix.Exec(s.Binary, argv, []string{})
	return fmt.Errorf("virtiofsd stage: exec %s: %w", s.Binary, err)
}

// assemble builds the tree on Root: a tmpfs, read-only once the entries'
// mount points are made, with each entry bind-mounted on its name.
func assemble(s Server) error {
	// Nothing done here may reach the host's mounts.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("tmpfs", s.Root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=64k"); err != nil {
		return fmt.Errorf("mount a tmpfs on %s: %w", s.Root, err)
	}
	if err := BindEntries(s.Root, s.Entries); err != nil {
		return err
	}
	if err := unix.Mount("", s.Root, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("make the tree's top read-only: %w", err)
	}
	return nil
}

// BindEntries bind-mounts each entry at its path under root, read-only
// where it says so.
func BindEntries(root string, entries []Entry) error {
	for _, e := range entries {
		if e.Base != "" {
			if err := os.Mkdir(filepath.Join(root, e.Name), 0o755); err != nil {
				return fmt.Errorf("share %s: %w", e.Source, err)
			}
		}
		dst := filepath.Join(root, e.Path())
		fi, err := os.Stat(e.Source)
		if err != nil {
			return fmt.Errorf("share %s: %w", e.Source, err)
		}
		if fi.IsDir() {
			err = os.Mkdir(dst, 0o755)
		} else {
			err = os.WriteFile(dst, nil, 0o644)
		}
		if err != nil {
			return fmt.Errorf("share %s: %w", e.Source, err)
		}
		if err := unix.Mount(e.Source, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("share %s: bind mount: %w", e.Source, err)
		}
		if e.ReadOnly {
			if err := remountReadOnly(dst); err != nil {
				return fmt.Errorf("share %s read-only: %w", e.Source, err)
			}
		}
	}
	return nil
}

// remountReadOnly makes a bind mount read-only, keeping the flags a user
// namespace may not clear.
func remountReadOnly(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return err
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY)
	for _, f := range []struct{ st, ms uintptr }{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if uintptr(st.Flags)&f.st != 0 {
			flags |= f.ms
		}
	}
	return unix.Mount("", path, "", flags, "")
}
