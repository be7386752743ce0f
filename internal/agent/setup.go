//go:build linux

package agent

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/virtiofs"
)

// setup configures the guest as the container asks (network, hostname,
// sysctls: the guest's own, since the guest is the container, or for a
// pod the first container's) and starts the container's stage, which
// assembles its root and waits for start. id is the container's own
// process's.
func (a *guestAgent) setup(id uint32, s Setup) error {
	a.mu.Lock()
	_, exists := a.containers[id]
	a.mu.Unlock()
	if exists {
		return fmt.Errorf("container %d exists", id)
	}
	if a.procFD == 0 {
		var err error
		if a.procFD, err = unix.Open("/proc", unix.O_RDONLY|unix.O_DIRECTORY, 0); err != nil {
			return fmt.Errorf("open /proc: %w", err)
		}
	}
	if !s.Member {
		if err := configureGuest(s); err != nil {
			return err
		}
	}
	if s.Shared && !a.fsMounted {
		if err := mountShared(); err != nil {
			return err
		}
		a.fsMounted = true
	}
	c := &container{root: ContainerRoot(id), ownPIDs: s.NewPIDNamespace}
	if !a.cgroups {
		if err := mountCgroups(); err != nil {
			slog.Warn("containers get no cgroup in the guest: no stats, no update", "err", err)
		}
		a.cgroups = true
	}
	if err := os.Mkdir(cgroupOf(id), 0o755); err == nil {
		c.cgroup = cgroupOf(id)
	}
	if s.SharePIDs {
		a.mu.Lock()
		if sb := a.containers[0]; sb != nil && sb.ownPIDs {
			c.sharedWith = sb.initPid
		}
		a.mu.Unlock()
		if c.sharedWith == 0 {
			release(c)
			return fmt.Errorf("the pod's sandbox has no PID namespace to share")
		}
	}
	st, err := a.forkStage(s.NewPIDNamespace && c.sharedWith == 0, c.sharedWith)
	if err != nil {
		release(c)
		return err
	}
	err = st.send(stageRequest{Root: c.root, Setup: &s, Cgroup: c.cgroup})
	if err == nil {
		err = st.result()
	}
	if err != nil {
		// The stage shares the agent's mount namespace: what it mounted
		// before it failed would stay for the VM's life (a pod's).
		st.close()
		release(c)
		return err
	}
	c.init, c.initPid = st, st.pid
	a.mu.Lock()
	a.containers[id] = c
	a.mu.Unlock()
	return nil
}

func configureGuest(s Setup) error {
	if s.Network.Enabled {
		if err := configureNetwork(s.Network); err != nil {
			return err
		}
	} else if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
	}
	if s.Hostname != "" {
		if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	for k, v := range s.Sysctl {
		p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	return nil
}

// remove ends what is left of container id and takes its root apart.
func (a *guestAgent) remove(id uint32) error {
	a.mu.Lock()
	c := a.containers[id]
	delete(a.containers, id)
	a.mu.Unlock()
	if c == nil {
		return nil
	}
	if c.init != nil {
		c.init.close() // a stage still waiting for start exits
	}
	a.signalAll(c, unix.SIGKILL)
	if err := release(c); err != nil {
		return fmt.Errorf("container %d: %w", id, err)
	}
	return nil
}

// release takes away what a container's setup made in the guest: its
// root, with everything mounted in it, and its cgroup.
func release(c *container) error {
	if err := unix.Unmount(c.root, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount the root: %w", err)
	}
	os.Remove(c.root)
	if c.cgroup != "" {
		// Empty once its processes are gone, which a killed process may
		// take a moment to be; the agent's other containers do not wait.
		go func() {
			for i := 0; i < 20 && os.Remove(c.cgroup) != nil; i++ {
				if _, err := os.Stat(c.cgroup); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	return nil
}

// assemble mounts the container's root at root and everything the spec
// mounts in it, as the stage of the container's own process: a /proc
// mounted here shows the container's PID namespace.
func assemble(root string, s Setup) error {
	if err := mountRoot(root, s); err != nil {
		return err
	}
	for _, m := range s.Mounts {
		if err := mount(root, m); err != nil {
			return err
		}
	}
	if err := makeDevices(root, s.Devices); err != nil {
		return err
	}
	for _, f := range s.Files {
		p := filepath.Join(root, f.Destination)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.Remove(p) // a symlink there (e.g. /etc/resolv.conf) must not be followed
		if err := os.WriteFile(p, f.Data, os.FileMode(f.Mode).Perm()); err != nil {
			return fmt.Errorf("copy %s into the container: %w", f.Destination, err)
		}
	}
	if s.RootfsReadonly {
		if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("make the root read-only: %w", err)
		}
	}
	return nil
}

// mountRoot mounts the container's root at root: the rootfs entry of the
// shared tree, or the block device holding its copy.
func mountRoot(root string, s Setup) error {
	os.MkdirAll(root, 0o755)
	if !s.Shared {
		if err := waitFor(s.Rootfs, 10*time.Second); err != nil {
			return err
		}
		if err := unix.Mount(s.Rootfs, root, "ext4", 0, ""); err != nil {
			return fmt.Errorf("mount the container's root %s: %w", s.Rootfs, err)
		}
		return nil
	}
	shared := s.SharedRoot
	if shared == "" {
		shared = SharedRootfs
	}
	if err := unix.Mount(filepath.Join(virtiofs.GuestRoot, filepath.Clean("/"+shared)), root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("mount the container's root: %w", err)
	}
	return nil
}

// mountShared mounts the shared tree; the device may still be probing
// when the agent asks.
func mountShared() error {
	os.MkdirAll(virtiofs.GuestRoot, 0o755)
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err = unix.Mount(virtiofs.Tag, virtiofs.GuestRoot, "virtiofs", unix.MS_NOSUID|unix.MS_NODEV, ""); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("mount the shared files (virtiofs tag %s): %w", virtiofs.Tag, err)
	}
	return nil
}

// SharedRootfs is the rootfs's entry in the shared tree.
const SharedRootfs = "rootfs"

func waitFor(path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %s", path, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func configureNetwork(n Network) error {
	for _, name := range []string{"lo", "eth0"} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		if name == "eth0" {
			addr, err := netlink.ParseAddr(n.Address)
			if err != nil {
				return fmt.Errorf("address %q: %w", n.Address, err)
			}
			if err := netlink.AddrAdd(l, addr); err != nil {
				return fmt.Errorf("add %s to eth0: %w", n.Address, err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("bring %s up: %w", name, err)
		}
		if name == "eth0" && n.Gateway != "" {
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(n.Gateway)}); err != nil {
				return fmt.Errorf("default route via %s: %w", n.Gateway, err)
			}
		}
	}
	return nil
}

// mountFlags are the OCI mount options that are flags; the others are
// passed to the filesystem as data.
var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"nosuid": {false, unix.MS_NOSUID}, "suid": {true, unix.MS_NOSUID},
	"nodev": {false, unix.MS_NODEV}, "dev": {true, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "exec": {true, unix.MS_NOEXEC},
	"sync": {false, unix.MS_SYNCHRONOUS}, "async": {true, unix.MS_SYNCHRONOUS},
	"noatime": {false, unix.MS_NOATIME}, "atime": {true, unix.MS_NOATIME},
	"nodiratime": {false, unix.MS_NODIRATIME}, "diratime": {true, unix.MS_NODIRATIME},
	"relatime": {false, unix.MS_RELATIME}, "norelatime": {true, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME}, "dirsync": {false, unix.MS_DIRSYNC},
	"mand": {false, unix.MS_MANDLOCK}, "nomand": {true, unix.MS_MANDLOCK},
}

// ignoredOptions are propagation and bind options that mean nothing for a
// mount the guest makes itself.
var ignoredOptions = []string{"bind", "rbind", "private", "rprivate", "shared", "rshared", "slave", "rslave",
	"unbindable", "runbindable", "tmpcopyup", "z", "Z", "U", "idmap", "ridmap", "copy", "nocopy", "notmpcopyup"}

// ParseMountOptions splits OCI mount options into mount(2) flags and data.
func ParseMountOptions(opts []string) (flags uintptr, data string) {
	var rest []string
	for _, o := range opts {
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		if slices.Contains(ignoredOptions, o) {
			continue
		}
		rest = append(rest, o)
	}
	return flags, strings.Join(rest, ",")
}

// bindSources holds, outside the container's root, the empty directories
// that stand for bind-mounted host directories.
const bindSources = "/binds"

// propagation are the OCI mount options that set a mount's propagation.
var propagation = map[string]uintptr{
	"shared": unix.MS_SHARED, "rshared": unix.MS_SHARED | unix.MS_REC,
	"slave": unix.MS_SLAVE, "rslave": unix.MS_SLAVE | unix.MS_REC,
	"private": unix.MS_PRIVATE, "rprivate": unix.MS_PRIVATE | unix.MS_REC,
	"unbindable": unix.MS_UNBINDABLE, "runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// mount makes one OCI mount under root. Bind mounts of host directories
// cannot reach the guest (it shares no filesystem with the host): an
// empty directory named like the source is bind-mounted there instead,
// with the mount's flags, which the host side has said.
func mount(root string, m Mount) error {
	dst := filepath.Join(root, m.Destination)
	if m.Shared != "" {
		return bindShared(root, m)
	}
	if m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind") {
		return bindEmpty(dst, m)
	}
	flags, data := ParseMountOptions(m.Options)
	typ := m.Type
	switch typ {
	case "cgroup", "cgroup2":
		// One cgroup v2 tree for the whole guest, which is the container.
		typ, data = "cgroup2", ""
	case "":
		return fmt.Errorf("mount %s: no type", m.Destination)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	src := m.Source
	if src == "" {
		src = typ
	}
	if err := unix.Mount(src, dst, typ, flags, data); err != nil {
		if typ == "cgroup2" || typ == "mqueue" {
			slog.Warn("optional mount failed", "destination", m.Destination, "type", typ, "err", err)
			return nil
		}
		return fmt.Errorf("mount %s (%s, %q): %w", m.Destination, typ, data, err)
	}
	return setPropagation(dst, m)
}

// bindShared binds an entry of the shared tree at its destination, which
// is resolved inside root as the container would see it (a symlink on the
// way leads within the container, never out to the guest's own files).
func bindShared(root string, m Mount) error {
	src := filepath.Join(virtiofs.GuestRoot, m.Shared)
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("bind mount %s: %w", m.Destination, err)
	}
	dst, err := resolveIn(root, m.Destination)
	if err != nil {
		return fmt.Errorf("bind mount %s: %w", m.Destination, err)
	}
	if fi.IsDir() {
		err = os.MkdirAll(dst, 0o755)
	} else if err = os.MkdirAll(filepath.Dir(dst), 0o755); err == nil {
		var f *os.File
		if f, err = os.OpenFile(dst, os.O_RDONLY|os.O_CREATE|unix.O_NOFOLLOW, 0o644); err == nil {
			f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("bind mount %s: make its mount point: %w", m.Destination, err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind mount %s: %w", m.Destination, err)
	}
	if flags, _ := ParseMountOptions(m.Options); flags&^(unix.MS_BIND|unix.MS_REC) != 0 {
		if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|flags, ""); err != nil {
			return fmt.Errorf("bind mount %s: remount with its options: %w", m.Destination, err)
		}
	}
	return setPropagation(dst, m)
}

// resolveIn is path inside root with every symlink on the way followed as
// if root were /: absolute links restart at root, and .. stops there.
func resolveIn(root, path string) (string, error) {
	rest := strings.Split(filepath.Clean("/"+path), "/")
	cur := "/"
	for links := 0; len(rest) > 0; {
		part := rest[0]
		rest = rest[1:]
		if part == "" || part == "." {
			continue
		}
		if part == ".." {
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, part)
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			// Not a link, or not there yet: the rest is made as directories.
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", fmt.Errorf("too many symlinks in %s", path)
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(root, cur), nil
}

func bindEmpty(dst string, m Mount) error {
	src := filepath.Join(bindSources, m.Destination, filepath.Base(m.Source))
	if err := os.MkdirAll(src, 0o755); err != nil {
		return fmt.Errorf("bind mount %s: %w", m.Destination, err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("bind mount %s: %w", m.Destination, err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s: %w", m.Destination, err)
	}
	// A bind mount takes its flags (ro, nosuid...) only when remounted.
	if flags, _ := ParseMountOptions(m.Options); flags != 0 {
		if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|flags, ""); err != nil {
			return fmt.Errorf("bind mount %s: remount with its options: %w", m.Destination, err)
		}
	}
	return setPropagation(dst, m)
}

func setPropagation(dst string, m Mount) error {
	for _, o := range m.Options {
		if flag, ok := propagation[o]; ok {
			if err := unix.Mount("", dst, "", flag, ""); err != nil {
				return fmt.Errorf("mount %s: make it %s: %w", m.Destination, o, err)
			}
		}
	}
	return nil
}

// defaultDevices are the nodes every OCI container gets in /dev.
var defaultDevices = []Device{
	{Path: "/dev/null", Type: "c", Major: 1, Minor: 3, Mode: 0o666},
	{Path: "/dev/zero", Type: "c", Major: 1, Minor: 5, Mode: 0o666},
	{Path: "/dev/full", Type: "c", Major: 1, Minor: 7, Mode: 0o666},
	{Path: "/dev/random", Type: "c", Major: 1, Minor: 8, Mode: 0o666},
	{Path: "/dev/urandom", Type: "c", Major: 1, Minor: 9, Mode: 0o666},
	{Path: "/dev/tty", Type: "c", Major: 5, Minor: 0, Mode: 0o666},
}

func makeDevices(root string, extra []Device) error {
	dev := filepath.Join(root, "dev")
	os.MkdirAll(dev, 0o755)
	for _, d := range append(slices.Clone(defaultDevices), extra...) {
		p := filepath.Join(root, d.Path)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		mode := d.Mode & 0o7777
		switch d.Type {
		case "c", "u":
			mode |= unix.S_IFCHR
		case "b":
			mode |= unix.S_IFBLK
		case "p":
			mode |= unix.S_IFIFO
		default:
			return fmt.Errorf("device %s: unknown type %q", d.Path, d.Type)
		}
		if err := unix.Mknod(p, mode, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor)))); err != nil {
			return fmt.Errorf("create device %s: %w", d.Path, err)
		}
		unix.Chmod(p, d.Mode&0o7777) // the umask applied to mknod
		unix.Chown(p, int(d.UID), int(d.GID))
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx", "core": "/proc/kcore"} {
		os.Symlink(target, filepath.Join(dev, name))
	}
	return nil
}

// watchPorts reports the TCP ports the container listens on, so the host
// can forward to them: a container engine publishes a port to the
// container's network namespace, where the VM's network lives.
func (a *guestAgent) watchPorts() {
	var last Ports
	for {
		now := Ports{TCP: a.listening("tcp", tcpListen), UDP: a.listening("udp", udpUnconnected)}
		if !slices.Equal(now.TCP, last.TCP) || !slices.Equal(now.UDP, last.UDP) {
			if a.conn.SendJSON(TypePorts, 0, now) != nil {
				return
			}
			last = now
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Socket states in /proc/net tables: a TCP socket listening, and a UDP
// socket with no peer (TCP_CLOSE), which is how a server's looks.
const (
	tcpListen      = "0A"
	udpUnconnected = "07"
)

func (a *guestAgent) listening(proto, state string) []int {
	var ports []int
	for _, table := range []string{"net/" + proto, "net/" + proto + "6"} {
		fd, err := unix.Openat(a.procFD, table, unix.O_RDONLY, 0)
		if err != nil {
			continue
		}
		f := os.NewFile(uintptr(fd), table)
		ports = append(ports, ListeningPorts(bufio.NewScanner(f), state)...)
		f.Close()
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

// ListeningPorts reads a /proc/net/tcp table and returns the ports in
// LISTEN state reachable from outside the guest (not loopback-only).
func ListeningPorts(s *bufio.Scanner, state string) []int {
	var ports []int
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 4 || f[3] != state {
			continue
		}
		// A socket with a peer is a client's, not a server's.
		if _, rport, _ := strings.Cut(f[2], ":"); rport != "0000" {
			continue
		}
		addr, port, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		// 127.0.0.0/8 (little-endian hex ending in 7F) and ::1.
		if (len(addr) == 8 && strings.HasSuffix(addr, "7F")) || addr == "00000000000000000000000001000000" {
			continue
		}
		if n, err := strconv.ParseUint(port, 16, 16); err == nil {
			ports = append(ports, int(n))
		}
	}
	return ports
}
