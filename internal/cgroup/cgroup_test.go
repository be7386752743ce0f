package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/launch"
)

// TestMain lets the test binary stand in for hutch's `_exec` stage, so the
// host test starts its process the way hutch does.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == launch.StageCommand {
		fmt.Fprintln(os.Stderr, launch.Stage(os.Args[2]))
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// fakeKernel plays cgroupfs on a plain directory tree: mkdir creates the
// interface files the kernel would, rmdir refuses a populated group.
type fakeKernel struct {
	root string
	v2   bool
	v1   []string         // hierarchies mounted under root (v1 and hybrid)
	fail map[string]error // mkdir of this path fails so
	busy map[string]int   // rmdir of this path is EBUSY this many times more
}

var (
	v1Files = map[string][]string{
		"memory": {"memory.limit_in_bytes", "memory.usage_in_bytes"},
		"pids":   {"pids.max", "pids.current"},
		"cpu":    {"cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.shares"},
	}
	v2Files = map[string][]string{
		"memory": {"memory.max", "memory.current"},
		"pids":   {"pids.max", "pids.current"},
		"cpu":    {"cpu.max", "cpu.weight"},
	}
)

// newV2 is a pure v2 host whose root enables the given controllers for its
// children (what systemd usually does).
func newV2(t *testing.T, enabled string) (FS, *fakeKernel) {
	k := &fakeKernel{root: t.TempDir(), v2: true}
	put(t, filepath.Join(k.root, "cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc")
	put(t, filepath.Join(k.root, "cgroup.subtree_control"), enabled)
	put(t, filepath.Join(k.root, "cgroup.procs"), "1\n")
	return k.fs(), k
}

// newV1 is a v1 host with the given hierarchies mounted, plus the empty
// cgroup2 "unified" mount of a hybrid host.
func newV1(t *testing.T, hierarchies ...string) (FS, *fakeKernel) {
	k := &fakeKernel{root: t.TempDir(), v1: hierarchies}
	for _, h := range append(hierarchies, "unified") {
		if err := os.Mkdir(filepath.Join(k.root, h), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return k.fs(), k
}

func (k *fakeKernel) fs() FS {
	return FS{Root: k.root, fsType: k.fsType, mkdir: k.mkdir, rmdir: k.rmdir}
}

func (k *fakeKernel) fsType(p string) (int64, error) {
	if _, err := os.Stat(p); err != nil {
		return 0, err
	}
	switch rel, _ := filepath.Rel(k.root, p); {
	case rel == "." && k.v2, rel == "unified":
		return unix.CGROUP2_SUPER_MAGIC, nil
	case rel == ".":
		return unix.TMPFS_MAGIC, nil
	case slices.Contains(k.v1, rel):
		return unix.CGROUP_SUPER_MAGIC, nil
	}
	return unix.EXT4_SUPER_MAGIC, nil
}

func (k *fakeKernel) mkdir(p string) error {
	if err := k.fail[p]; err != nil {
		return &os.PathError{Op: "mkdir", Path: p, Err: err}
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		return err
	}
	files := []string{"cgroup.procs"}
	if k.v2 {
		b, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cgroup.subtree_control"))
		var offered []string
		for _, c := range strings.Fields(string(b)) {
			c = strings.TrimPrefix(c, "+")
			offered = append(offered, c)
			files = append(files, v2Files[c]...)
		}
		put(nil, filepath.Join(p, "cgroup.controllers"), strings.Join(offered, " "))
		files = append(files, "cgroup.subtree_control")
	} else {
		// The hierarchy's own dir is named for all it carries ("cpu,cpuacct").
		rel, _ := filepath.Rel(k.root, p)
		mount, _ := filepath.EvalSymlinks(filepath.Join(k.root, strings.Split(rel, "/")[0]))
		for _, c := range strings.Split(filepath.Base(mount), ",") {
			files = append(files, v1Files[c]...)
		}
	}
	for _, f := range files {
		put(nil, filepath.Join(p, f), "")
	}
	return nil
}

func (k *fakeKernel) rmdir(p string) error {
	if k.busy[p] > 0 {
		k.busy[p]--
		return &os.PathError{Op: "rmdir", Path: p, Err: unix.EBUSY}
	}
	ents, err := os.ReadDir(p)
	if err != nil {
		return err
	}
	if b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs")); len(b) > 0 {
		return &os.PathError{Op: "rmdir", Path: p, Err: unix.EBUSY}
	}
	for _, e := range ents {
		if e.IsDir() {
			return &os.PathError{Op: "rmdir", Path: p, Err: unix.EBUSY}
		}
	}
	for _, e := range ents {
		os.Remove(filepath.Join(p, e.Name()))
	}
	return os.Remove(p)
}

func put(t *testing.T, p, s string) {
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		if t == nil {
			panic(err)
		}
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fs      func(t *testing.T) FS
		lim     Limits
		version int
		dirs    []string // relative to Root
	}{
		{"v2", func(t *testing.T) FS { fs, _ := newV2(t, "cpu memory pids"); return fs }, Limits{}, 2,
			[]string{"hutch/vm"}},
		{"hybrid", func(t *testing.T) FS { fs, _ := newV1(t, "memory", "pids", "cpu", "cpuacct", "systemd"); return fs }, Limits{}, 1,
			[]string{"memory/hutch/vm", "pids/hutch/vm", "cpu/hutch/vm"}},
		{"v1 without pids, none asked", func(t *testing.T) FS { fs, _ := newV1(t, "memory", "cpu"); return fs }, Limits{MemoryBytes: 1 << 30}, 1,
			[]string{"memory/hutch/vm", "cpu/hutch/vm"}},
		{"v1 co-mounted cpu,cpuacct", func(t *testing.T) FS {
			fs, k := newV1(t, "memory", "pids", "cpu,cpuacct", "cpu", "cpuacct")
			for _, l := range []string{"cpu", "cpuacct"} {
				os.Remove(filepath.Join(k.root, l))
				os.Symlink("cpu,cpuacct", filepath.Join(k.root, l))
			}
			return fs
		}, Limits{CPUs: 2}, 1, []string{"memory/hutch/vm", "pids/hutch/vm", "cpu/hutch/vm"}},
		{"memory and pids sharing one hierarchy", func(t *testing.T) FS {
			fs, k := newV1(t, "memory,pids", "memory", "pids")
			for _, l := range []string{"memory", "pids"} {
				os.Remove(filepath.Join(k.root, l))
				os.Symlink("memory,pids", filepath.Join(k.root, l))
			}
			return fs
		}, Limits{MemoryBytes: 1 << 30, Pids: 9}, 1, []string{"memory/hutch/vm"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := tc.fs(t)
			g, err := Create(fs, "vm", tc.lim)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, d := range tc.dirs {
				want = append(want, filepath.Join(fs.Root, d))
			}
			if g.Version != tc.version || !slices.Equal(g.Dirs, want) {
				t.Errorf("got v%d %q, want v%d %q", g.Version, g.Dirs, tc.version, want)
			}
			var procs []string
			for _, d := range want {
				procs = append(procs, filepath.Join(d, "cgroup.procs"))
			}
			if !slices.Equal(g.Procs(), procs) {
				t.Errorf("Procs() = %q, want %q", g.Procs(), procs)
			}
		})
	}
}

func TestLimitsWritten(t *testing.T) {
	lim := Limits{MemoryBytes: 256 << 20, Pids: 64, CPUs: 1.5}
	t.Run("v1", func(t *testing.T) {
		fs, _ := newV1(t, "memory", "pids", "cpu")
		if _, err := Create(fs, "vm", lim); err != nil {
			t.Fatal(err)
		}
		for f, v := range map[string]string{
			"memory/hutch/vm/memory.limit_in_bytes": "268435456",
			"pids/hutch/vm/pids.max":                "64",
			"cpu/hutch/vm/cpu.cfs_period_us":        "100000",
			"cpu/hutch/vm/cpu.cfs_quota_us":         "150000",
		} {
			if got := read(t, filepath.Join(fs.Root, f)); got != v {
				t.Errorf("%s = %q, want %q", f, got, v)
			}
		}
	})
	t.Run("v1 co-mounted", func(t *testing.T) {
		fs, k := newV1(t, "memory,pids", "memory", "pids", "cpu")
		for _, l := range []string{"memory", "pids"} {
			os.Remove(filepath.Join(k.root, l))
			os.Symlink("memory,pids", filepath.Join(k.root, l))
		}
		if _, err := Create(fs, "vm", lim); err != nil {
			t.Fatal(err)
		}
		for f, v := range map[string]string{
			"memory,pids/hutch/vm/memory.limit_in_bytes": "268435456",
			"memory,pids/hutch/vm/pids.max":              "64",
			"cpu/hutch/vm/cpu.cfs_quota_us":              "150000",
		} {
			if got := read(t, filepath.Join(fs.Root, f)); got != v {
				t.Errorf("%s = %q, want %q", f, got, v)
			}
		}
	})
	t.Run("v2", func(t *testing.T) {
		fs, _ := newV2(t, "cpu io memory pids")
		if _, err := Create(fs, "vm", lim); err != nil {
			t.Fatal(err)
		}
		for f, v := range map[string]string{
			"hutch/cgroup.subtree_control": "+memory +pids +cpu",
			"hutch/vm/memory.max":          "268435456",
			"hutch/vm/pids.max":            "64",
			"hutch/vm/cpu.max":             "150000 100000",
		} {
			if got := read(t, filepath.Join(fs.Root, f)); got != v {
				t.Errorf("%s = %q, want %q", f, got, v)
			}
		}
	})
	t.Run("v2 enables only what is offered", func(t *testing.T) {
		fs, _ := newV2(t, "memory")
		if _, err := Create(fs, "vm", Limits{MemoryBytes: 1 << 30}); err != nil {
			t.Fatal(err)
		}
		if got := read(t, filepath.Join(fs.Root, "hutch/cgroup.subtree_control")); got != "+memory" {
			t.Errorf("subtree_control = %q, want %q", got, "+memory")
		}
	})
	t.Run("tiny cpu share is the kernel minimum", func(t *testing.T) {
		fs, _ := newV2(t, "cpu")
		if _, err := Create(fs, "vm", Limits{CPUs: 0.001}); err != nil {
			t.Fatal(err)
		}
		if got := read(t, filepath.Join(fs.Root, "hutch/vm/cpu.max")); got != "1000 100000" {
			t.Errorf("cpu.max = %q, want %q", got, "1000 100000")
		}
	})
	t.Run("zero is no limit", func(t *testing.T) {
		fs, _ := newV1(t, "memory", "pids", "cpu")
		if _, err := Create(fs, "vm", Limits{}); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"memory/hutch/vm/memory.limit_in_bytes", "pids/hutch/vm/pids.max", "cpu/hutch/vm/cpu.cfs_quota_us"} {
			if got := read(t, filepath.Join(fs.Root, f)); got != "" {
				t.Errorf("%s = %q, want untouched", f, got)
			}
		}
	})
}

// Without a usable cgroup, Create says why and leaves nothing behind.
func TestNoUsableCgroup(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) FS
		vm    string
		lim   Limits
		why   string
	}{
		{"no cgroup mounted", func(t *testing.T) FS { fs, _ := newV1(t); return fs }, "vm", Limits{},
			"none of the v1 controllers"},
		{"limited controller missing", func(t *testing.T) FS { fs, _ := newV1(t, "memory", "cpu"); return fs }, "vm", Limits{Pids: 10},
			"pids not mounted"},
		{"read-only", func(t *testing.T) FS {
			fs, k := newV1(t, "memory", "pids", "cpu")
			k.fail = map[string]error{}
			for _, c := range k.v1 {
				k.fail[filepath.Join(k.root, c, "hutch")] = unix.EROFS
			}
			return fs
		}, "vm", Limits{}, "read-only file system"},
		{"not permitted in one hierarchy", func(t *testing.T) FS {
			fs, k := newV1(t, "memory", "pids", "cpu")
			k.fail = map[string]error{filepath.Join(k.root, "pids/hutch/vm"): unix.EACCES}
			return fs
		}, "vm", Limits{MemoryBytes: 1 << 30, Pids: 10}, "permission denied"},
		{"v2 controller not offered", func(t *testing.T) FS { fs, _ := newV2(t, "cpu pids"); return fs }, "vm", Limits{MemoryBytes: 1 << 30},
			"memory not offered"},
		{"bad name", func(t *testing.T) FS { fs, _ := newV2(t, "memory"); return fs }, "../x", Limits{}, "not a valid"},
		{"negative limit", func(t *testing.T) FS { fs, _ := newV2(t, "memory"); return fs }, "vm", Limits{Pids: -1}, "invalid limits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := tc.setup(t)
			g, err := Create(fs, tc.vm, tc.lim)
			if g != nil || err == nil || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("Create = %v, %v; want nil and a reason containing %q", g, err, tc.why)
			}
			left, _ := filepath.Glob(filepath.Join(fs.Root, "*", "hutch", "*"))
			left2, _ := filepath.Glob(filepath.Join(fs.Root, "hutch", "*"))
			for _, p := range append(left, left2...) {
				if fi, err := os.Stat(p); err == nil && fi.IsDir() {
					t.Errorf("left behind %s", p)
				}
			}
		})
	}
}

func TestExistingGroupIsNotTaken(t *testing.T) {
	fs, _ := newV1(t, "memory", "pids")
	if _, err := Create(fs, "vm", Limits{}); err != nil {
		t.Fatal(err)
	}
	if g, err := Create(fs, "vm", Limits{Pids: 5}); g != nil || err == nil {
		t.Fatalf("second Create = %v, %v; want an error", g, err)
	}
	if !exists(filepath.Join(fs.Root, "memory/hutch/vm")) || !exists(filepath.Join(fs.Root, "pids/hutch/vm")) {
		t.Error("the failed Create removed the group that was there")
	}
}

func TestRemove(t *testing.T) {
	fs, k := newV1(t, "memory", "pids", "cpu")
	g, err := Create(fs, "vm", Limits{Pids: 5})
	if err != nil {
		t.Fatal(err)
	}
	// The kernel still counts reaped tasks for a moment.
	k.busy = map[string]int{g.Dirs[0]: 3}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	for _, d := range g.Dirs {
		if exists(d) {
			t.Errorf("%s still there", d)
		}
	}
	if !exists(filepath.Join(fs.Root, "memory/hutch")) {
		t.Error("removed the shared hutch dir")
	}
	if err := g.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	var none *Group
	if none.Remove() != nil || none.Procs() != nil {
		t.Error("a nil Group is not a no-op")
	}
}

func TestRemoveGivesUpOnALiveGroup(t *testing.T) {
	defer func(d time.Duration) { removeWait = d }(removeWait)
	removeWait = 50 * time.Millisecond
	fs, _ := newV2(t, "pids")
	g, err := Create(fs, "vm", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	put(t, g.Procs()[0], "4242\n")
	start := time.Now()
	if err := g.Remove(); !errors.Is(err, unix.EBUSY) {
		t.Errorf("Remove of a populated group = %v, want EBUSY", err)
	}
	if d := time.Since(start); d < removeWait || d > 20*removeWait {
		t.Errorf("gave up after %v, want about %v", d, removeWait)
	}
}

func TestSweep(t *testing.T) {
	fs, _ := newV1(t, "memory", "pids", "cpu")
	var groups []*Group
	for _, n := range []string{"live", "dead", "busy"} {
		g, err := Create(fs, n, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		groups = append(groups, g)
	}
	put(t, groups[2].Procs()[1], "4242\n") // a process left in pids/hutch/busy
	asked := map[string]int{}
	Sweep(fs, func(n string) bool { asked[n]++; return n == "live" })

	want := map[string]int{"live": 1, "dead": 1, "busy": 1}
	if fmt.Sprint(asked) != fmt.Sprint(want) {
		t.Errorf("live() asked %v, want once per name %v", asked, want)
	}
	for _, d := range groups[0].Dirs {
		if !exists(d) {
			t.Errorf("swept live %s", d)
		}
	}
	for _, d := range groups[1].Dirs {
		if exists(d) {
			t.Errorf("dead %s not swept", d)
		}
	}
	if !exists(groups[2].Dirs[1]) {
		t.Errorf("swept %s with a process in it", groups[2].Dirs[1])
	}
}

// On this host, for real: a group with limits, a process started into it
// through launch, and nothing left after Remove.
func TestHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("the host test creates cgroups and must run as root (euid %d)", os.Geteuid())
	}
	name := fmt.Sprintf("test-%d-%d", os.Getpid(), time.Now().UnixNano())
	g, err := Create(Host(), name, Limits{MemoryBytes: 256 << 20, Pids: 64, CPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	t.Logf("cgroup v%d: %q", g.Version, g.Dirs)

	want := map[string]map[string]string{ // hierarchy -> file -> value
		"":       {"memory.max": "268435456", "pids.max": "64", "cpu.max": "100000 100000"},
		"memory": {"memory.limit_in_bytes": "268435456"},
		"pids":   {"pids.max": "64"},
		"cpu":    {"cpu.cfs_quota_us": "100000", "cpu.cfs_period_us": "100000"},
	}
	hierarchy := func(dir string) string { // "" on v2
		if g.Version == 2 {
			return ""
		}
		return filepath.Base(filepath.Dir(filepath.Dir(dir)))
	}
	for _, d := range g.Dirs {
		for f, v := range want[hierarchy(d)] {
			if got := strings.TrimSpace(read(t, filepath.Join(d, f))); got != v {
				t.Errorf("%s/%s = %q, want %q", d, f, got, v)
			}
		}
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := launch.Command(self, launch.Spec{
		UID: 1879048193, GID: 1879048193,
		Argv:        []string{"/bin/sleep", "30"},
		CgroupProcs: g.Procs(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(b) == "sleep\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("target never started; stderr %q", stderr.String())
		}
	}

	// /proc/pid/cgroup lines are "id:controllers:path"; v2's has no controllers.
	lines := strings.Split(read(t, fmt.Sprintf("/proc/%d/cgroup", pid)), "\n")
	for _, d := range g.Dirs {
		h := hierarchy(d)
		found := slices.ContainsFunc(lines, func(l string) bool {
			f := strings.SplitN(l, ":", 3)
			return len(f) == 3 && f[2] == "/hutch/"+name &&
				(h == "" && f[1] == "" || h != "" && slices.Contains(strings.Split(f[1], ","), h))
		})
		if !found {
			t.Errorf("/proc/%d/cgroup does not list /hutch/%s for %q:\n%s", pid, name, h, strings.Join(lines, "\n"))
		}
		if procs := strings.Fields(read(t, filepath.Join(d, "cgroup.procs"))); !slices.Equal(procs, []string{fmt.Sprint(pid)}) {
			t.Errorf("%s/cgroup.procs = %v, want just %d", d, procs, pid)
		}
	}

	cmd.Process.Kill()
	cmd.Wait()
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	for _, d := range g.Dirs {
		if exists(d) {
			t.Errorf("%s still there after Remove", d)
		}
	}
	if err := g.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestContainerPath(t *testing.T) {
	for in, want := range map[string]string{
		"/docker/abc":             "/docker/abc",
		"k8s.io/abc":              "/k8s.io/abc",
		"system.slice:docker:abc": "/system.slice/docker-abc.scope",
		"kubepods-besteffort-pod1.slice:cri-containerd:abc": "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope",
		":libpod:abc":            "/system.slice/libpod-abc.scope",
		"machine.slice:libpod:x": "/machine.slice/libpod-x.scope",
	} {
		if got, err := ContainerPath(in); err != nil || got != want {
			t.Errorf("ContainerPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "/", "../x", "/a/../../b"} {
		if got, err := ContainerPath(bad); err == nil {
			t.Errorf("ContainerPath(%q) = %q, want an error", bad, got)
		}
	}
}
