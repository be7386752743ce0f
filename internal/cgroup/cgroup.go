// Package cgroup gives each VM its own cgroup where the host offers one:
// <root>/hutch/<name> on cgroup v2, or the same under each v1 controller
// hierarchy (memory, pids, cpu) on v1 and hybrid hosts. Limits go in the
// group; the processes join it through launch.Spec.CgroupProcs.
package cgroup

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Limits for one VM; zero means no limit.
type Limits struct {
	MemoryBytes int64
	Pids        int64
	CPUs        float64
}

// Group is one VM's cgroup.
type Group struct {
	Name    string
	Dirs    []string // one per v1 controller hierarchy, or the one v2 dir
	Version int      // 1 or 2

	rmdir func(string) error
}

// FS is a cgroup mount point: "/sys/fs/cgroup" on the host, a plain
// directory tree in unit tests.
type FS struct {
	Root string

	// What only the kernel does on a real cgroupfs, replaceable so a test
	// can play it on plain directories: the filesystem type of a path, and
	// mkdir and rmdir (which create and remove a cgroup's interface files).
	fsType func(path string) (int64, error)
	mkdir  func(path string) error
	rmdir  func(path string) error
}

// Host is the host's cgroup mount.
func Host() FS { return FS{Root: "/sys/fs/cgroup"} }

// parent is the directory under each hierarchy that holds every VM's group.
// It is shared and outlives the groups, so it is never removed.
const parent = "hutch"

// controllers hutch uses, in the order their dirs appear in Group.Dirs.
var controllers = []string{"memory", "pids", "cpu"}

// cpuPeriod is the CFS period in µs; quota = CPUs × period.
const cpuPeriod = 100000

func (fs FS) statType(p string) (int64, error) {
	if fs.fsType != nil {
		return fs.fsType(p)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return 0, err
	}
	return int64(st.Type), nil
}

func (fs FS) doMkdir(p string) error {
	if fs.mkdir != nil {
		return fs.mkdir(p)
	}
	return os.Mkdir(p, 0o755)
}

// removeWhenEmpty removes a dead VM's group. A VMM killed a moment ago
// can still be in it while the kernel tears down its memory (rmdir says
// EBUSY), so it is given up to two seconds to leave.
func removeWhenEmpty(rmdir func(string) error, p string) error {
	var err error
	for range 20 {
		if err = rmdirWith(rmdir, p); !errors.Is(err, unix.EBUSY) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func rmdirWith(rmdir func(string) error, p string) error {
	if rmdir != nil {
		return rmdir(p)
	}
	return unix.Rmdir(p)
}

// hierarchy is one mounted cgroup hierarchy and the controllers among
// ours that it carries (none listed on v2, which carries them all).
type hierarchy struct {
	mount       string
	controllers []string
}

// hierarchies returns where groups go: the v2 root alone, or each mounted v1
// hierarchy carrying one of our controllers. Detection uses the filesystem
// type, not directory names: hybrid hosts have a cgroup2 "unified" dir beside
// the v1 ones, and it offers no controllers, so v1 is what they use.
func (fs FS) hierarchies() (version int, hs []hierarchy, err error) {
	t, err := fs.statType(fs.Root)
	if err != nil {
		return 0, nil, fmt.Errorf("no cgroup filesystem at %s: %w", fs.Root, err)
	}
	if t == unix.CGROUP2_SUPER_MAGIC {
		return 2, []hierarchy{{mount: fs.Root}}, nil
	}
	index := map[string]int{} // resolved mount -> position in hs
	for _, c := range controllers {
		m := filepath.Join(fs.Root, c)
		if t, err := fs.statType(m); err != nil || t != unix.CGROUP_SUPER_MAGIC {
			continue
		}
		// Co-mounted controllers (cpu,cpuacct) share one hierarchy: one dir.
		real, err := filepath.EvalSymlinks(m)
		if err != nil {
			continue
		}
		if i, ok := index[real]; ok {
			hs[i].controllers = append(hs[i].controllers, c)
			continue
		}
		index[real] = len(hs)
		hs = append(hs, hierarchy{mount: m, controllers: []string{c}})
	}
	if len(hs) == 0 {
		return 0, nil, fmt.Errorf("no cgroup v2 at %s and none of the v1 controllers %v mounted under it", fs.Root, controllers)
	}
	return 1, hs, nil
}

func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\n")
}

// Create makes the cgroup for VM name and writes its limits. When the host
// offers no usable cgroup (not root, read-only mount, a limited controller
// missing) it returns nil and the reason, leaving nothing behind, so the
// caller can run the VM without one and log why. A controller with no
// limit asked is used where available (for accounting) and skipped where not.
func Create(fs FS, name string, lim Limits) (*Group, error) {
	g, err := create(fs, name, lim)
	if err != nil {
		return nil, fmt.Errorf("cgroup for %q: %w", name, err)
	}
	return g, nil
}

func create(fs FS, name string, lim Limits) (*Group, error) {
	if !validName(name) {
		return nil, errors.New("not a valid cgroup name")
	}
	if lim.MemoryBytes < 0 || lim.Pids < 0 || !(lim.CPUs >= 0) || math.IsInf(lim.CPUs, 0) {
		return nil, fmt.Errorf("invalid limits %+v", lim)
	}
	need := map[string]bool{"memory": lim.MemoryBytes > 0, "pids": lim.Pids > 0, "cpu": lim.CPUs > 0}
	version, hs, err := fs.hierarchies()
	if err != nil {
		return nil, err
	}
	g := &Group{Name: name, Version: version, rmdir: fs.rmdir}
	if version == 2 {
		if err := g.create2(fs, hs[0].mount, need, lim); err != nil {
			return nil, err
		}
		return g, nil
	}
	for _, c := range controllers {
		if need[c] && !slices.ContainsFunc(hs, func(h hierarchy) bool { return slices.Contains(h.controllers, c) }) {
			return nil, fmt.Errorf("v1 controller %s not mounted under %s", c, fs.Root)
		}
	}
	var skipped error
	for _, h := range hs {
		if err := g.create1(fs, h, lim); err != nil {
			if slices.ContainsFunc(h.controllers, func(c string) bool { return need[c] }) {
				g.Remove()
				return nil, err
			}
			skipped = err
		}
	}
	if len(g.Dirs) == 0 {
		return nil, fmt.Errorf("no v1 controller under %s usable: %w", fs.Root, skipped)
	}
	return g, nil
}

// create1 makes the group in v1 hierarchy h and sets the limits of the
// controllers it carries.
func (g *Group) create1(fs FS, h hierarchy, lim Limits) error {
	dir, err := g.mkdirs(fs, h.mount)
	if err != nil {
		return err
	}
	var files [][2]string
	for _, c := range h.controllers {
		switch {
		case c == "memory" && lim.MemoryBytes > 0:
			files = append(files, [2]string{"memory.limit_in_bytes", strconv.FormatInt(lim.MemoryBytes, 10)})
		case c == "pids" && lim.Pids > 0:
			files = append(files, [2]string{"pids.max", strconv.FormatInt(lim.Pids, 10)})
		case c == "cpu" && lim.CPUs > 0:
			// Period first: the quota is checked against it.
			files = append(files, [2]string{"cpu.cfs_period_us", strconv.Itoa(cpuPeriod)}, [2]string{"cpu.cfs_quota_us", quota(lim.CPUs)})
		}
	}
	for _, f := range files {
		if err := write(filepath.Join(dir, f[0]), f[1]); err != nil {
			return err
		}
	}
	return nil
}

// create2 makes the group under the v2 root r. A v2 group gets a controller's
// files only if its parent enables the controller for its children, so
// enable them in hutch's subtree_control, among those its parent offers.
func (g *Group) create2(fs FS, r string, need map[string]bool, lim Limits) error {
	hutch := filepath.Join(r, parent)
	if err := fs.doMkdir(hutch); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", hutch, err)
	}
	b, err := os.ReadFile(filepath.Join(hutch, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("read controllers offered to %s: %w", hutch, err)
	}
	offered := strings.Fields(string(b))
	var enable []string
	for _, c := range controllers {
		if slices.Contains(offered, c) {
			enable = append(enable, "+"+c)
		} else if need[c] {
			return fmt.Errorf("controller %s not offered to %s (only %q)", c, hutch, offered)
		}
	}
	if len(enable) > 0 {
		if err := write(filepath.Join(hutch, "cgroup.subtree_control"), strings.Join(enable, " ")); err != nil {
			return err
		}
	}
	dir, err := g.mkdirs(fs, r)
	if err != nil {
		return err
	}
	var files [][2]string
	if lim.MemoryBytes > 0 {
		files = append(files, [2]string{"memory.max", strconv.FormatInt(lim.MemoryBytes, 10)})
	}
	if lim.Pids > 0 {
		files = append(files, [2]string{"pids.max", strconv.FormatInt(lim.Pids, 10)})
	}
	if lim.CPUs > 0 {
		files = append(files, [2]string{"cpu.max", quota(lim.CPUs) + " " + strconv.Itoa(cpuPeriod)})
	}
	for _, f := range files {
		if err := write(filepath.Join(dir, f[0]), f[1]); err != nil {
			g.Remove()
			return err
		}
	}
	return nil
}

// mkdirs makes <m>/hutch (shared, may exist) and <m>/hutch/<name> (must
// not: it would be another VM's or a stale one) and records the latter.
func (g *Group) mkdirs(fs FS, m string) (string, error) {
	hutch := filepath.Join(m, parent)
	if err := fs.doMkdir(hutch); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create %s: %w", hutch, err)
	}
	dir := filepath.Join(hutch, g.Name)
	if err := fs.doMkdir(dir); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	g.Dirs = append(g.Dirs, dir)
	return dir, nil
}

// quota is CPUs × period in µs, at least the kernel's minimum of 1 ms.
func quota(cpus float64) string {
	return strconv.FormatInt(max(1000, int64(math.Round(cpus*cpuPeriod))), 10)
}

// write sets a cgroup interface file. No O_CREATE: a file the kernel did not
// make means a controller is not there, and must fail rather than be faked.
func write(p, v string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("set %s: %w", p, err)
	}
	_, err = f.WriteString(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("set %s to %q: %w", p, v, err)
	}
	return nil
}

// Procs returns the cgroup.procs files a process writes to join the group
// (launch.Spec.CgroupProcs). A nil Group, a VM without a cgroup, has none.
func (g *Group) Procs() []string {
	if g == nil {
		return nil
	}
	var p []string
	for _, d := range g.Dirs {
		p = append(p, filepath.Join(d, "cgroup.procs"))
	}
	return p
}

// removeWait bounds how long Remove waits for the kernel to finish with
// tasks that have exited but still count as members.
var removeWait = 2 * time.Second

// Remove deletes the group's directories. It is idempotent and does nothing
// for a nil Group. A group whose processes have just been killed can stay
// busy for a moment after they are reaped, so EBUSY is retried briefly.
func (g *Group) Remove() error {
	if g == nil {
		return nil
	}
	var errs []error
	for _, d := range slices.Backward(g.Dirs) {
		delay := 5 * time.Millisecond
		for deadline := time.Now().Add(removeWait); ; {
			err := rmdirWith(g.rmdir, d)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
				break
			}
			time.Sleep(delay)
			delay = min(2*delay, 100*time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// Sweep removes the groups under every hierarchy's hutch dir whose name is
// not live, e.g. left by a supervisor that was killed. live must answer true
// for a VM whose group is being created, or Sweep could take it away between
// Create and the join. A group that still has processes stays (EBUSY).
func Sweep(fs FS, live func(name string) bool) {
	_, hs, err := fs.hierarchies()
	if err != nil {
		return
	}
	answers := map[string]bool{}
	for _, h := range hs {
		m := h.mount
		ents, _ := os.ReadDir(filepath.Join(m, parent))
		for _, e := range ents {
			n := e.Name()
			if !e.IsDir() {
				continue
			}
			if _, ok := answers[n]; !ok {
				answers[n] = live(n)
			}
			if !answers[n] {
				removeWhenEmpty(fs.rmdir, filepath.Join(m, parent, n))
			}
		}
	}
}

// ContainerPath is an OCI linux.cgroupsPath as a path under each
// hierarchy's root. The systemd form "slice:prefix:name" becomes the
// directory systemd gives such a scope ("a-b.slice" nests in "a.slice"),
// so the group is where the engine, reading it back, looks for it.
func ContainerPath(cgroupsPath string) (string, error) {
	p := cgroupsPath
	if parts := strings.Split(p, ":"); len(parts) == 3 && !strings.Contains(parts[0], "/") {
		slice, prefix, name := parts[0], parts[1], parts[2]
		if slice == "" {
			slice = "system.slice"
		}
		var dir string
		if slice != "-.slice" {
			stem := strings.TrimSuffix(slice, ".slice")
			for i := range stem {
				if stem[i] == '-' {
					dir = filepath.Join(dir, stem[:i]+".slice")
				}
			}
			dir = filepath.Join(dir, slice)
		}
		leaf := name
		if !strings.HasSuffix(name, ".slice") {
			leaf = prefix + "-" + name + ".scope"
			if prefix == "" {
				leaf = name + ".scope"
			}
		}
		p = "/" + filepath.Join(dir, leaf)
	}
	clean := filepath.Clean("/" + p)
	if clean == "/" || p != "" && strings.Contains("/"+p+"/", "/../") {
		return "", fmt.Errorf("cgroupsPath %q: not a group below the root", cgroupsPath)
	}
	return clean, nil
}

// Join puts pid in the group at path (as ContainerPath gives it) of every
// mounted hierarchy, making the group where it is missing, as runc places
// a container's init: the v2 tree, or each v1 hierarchy. It returns the
// groups' directories.
func Join(fs FS, path string, pid int) ([]string, error) {
	t, err := fs.statType(fs.Root)
	if err != nil {
		return nil, fmt.Errorf("no cgroup filesystem at %s: %w", fs.Root, err)
	}
	mounts := []string{fs.Root}
	if t != unix.CGROUP2_SUPER_MAGIC {
		mounts = nil
		ents, err := os.ReadDir(fs.Root)
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, e := range ents {
			m := filepath.Join(fs.Root, e.Name())
			real, err := filepath.EvalSymlinks(m)
			if err != nil || seen[real] {
				continue
			}
			if t, err := fs.statType(real); err != nil || t != unix.CGROUP_SUPER_MAGIC {
				continue // the hybrid layout's cgroup2 "unified" carries no controller
			}
			seen[real] = true
			mounts = append(mounts, real)
		}
	}
	var dirs []string
	for _, m := range mounts {
		dir := filepath.Join(m, path)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return dirs, fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		dirs = append(dirs, dir)
		if err := inheritCpuset(m, path); err != nil {
			return dirs, err
		}
		if err := write(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return dirs, err
		}
	}
	return dirs, nil
}

// inheritCpuset fills the empty cpuset.cpus and cpuset.mems of the groups
// on path from their parents, as runc does: a v1 cpuset group starts
// empty, and takes no process until both are set.
func inheritCpuset(mount, path string) error {
	parent := mount
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		dir := filepath.Join(parent, part)
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			cur, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				return nil // not a cpuset hierarchy
			}
			if len(strings.TrimSpace(string(cur))) > 0 {
				continue
			}
			v, err := os.ReadFile(filepath.Join(parent, f))
			if err != nil {
				return fmt.Errorf("read %s: %w", filepath.Join(parent, f), err)
			}
			if err := write(filepath.Join(dir, f), strings.TrimSpace(string(v))); err != nil {
				return err
			}
		}
		parent = dir
	}
	return nil
}

// RemoveDirs removes groups Join made, once the processes in them are gone.
func RemoveDirs(dirs []string) {
	for _, d := range dirs {
		removeWhenEmpty(nil, d)
	}
}
