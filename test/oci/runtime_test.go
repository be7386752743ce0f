package oci

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hutch-vm/hutch/internal/accel"
	"github.com/hutch-vm/hutch/test/testproc"
)

// bundle writes an OCI bundle with the test image's root and a
// configuration like `runc spec` writes, changed by edit.
func bundle(t *testing.T, edit func(*specs.Spec)) string {
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	os.Mkdir(rootfs, 0o755)
	if out, err := testproc.Command("tar", "-xf", rootfsTar, "-C", rootfs).CombinedOutput(); err != nil {
		t.Fatalf("unpack rootfs: %v: %s", err, out)
	}
	s := &specs.Spec{
		Version:  specs.Version,
		Root:     &specs.Root{Path: "rootfs"},
		Hostname: "hutch-test",
		Process: &specs.Process{Args: []string{"sh", "-c", "echo out; echo err >&2; sleep 1000"}, Cwd: "/",
			Env: []string{"PATH=/bin"}},
		Mounts: []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}}},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}, {Type: specs.MountNamespace}}},
	}
	if edit != nil {
		edit(s)
	}
	b, _ := json.Marshal(s)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rt runs hutch-runtime with its root in dir. The shim a create starts
// keeps create's stdio, as a container keeps runc's: a pipe would never
// see EOF, so output goes to files, each call's its own.
type rt struct {
	t     *testing.T
	dir   string
	root  string
	calls int
}

func newRuntime(t *testing.T) *rt {
	dir := t.TempDir()
	return &rt{t: t, dir: dir, root: filepath.Join(dir, "root")}
}

// run runs one command; its stdout and stderr files stay, named in the
// result, for the container's output when the command is a create.
func (r *rt) run(args ...string) result {
	r.t.Helper()
	r.calls++
	outPath := filepath.Join(r.dir, fmt.Sprintf("stdout-%d", r.calls))
	errPath := filepath.Join(r.dir, fmt.Sprintf("stderr-%d", r.calls))
	out, _ := os.Create(outPath)
	errf, _ := os.Create(errPath)
	defer out.Close()
	defer errf.Close()
	c := testproc.Command(runtimeBin, append([]string{"--root", r.root}, args...)...)
	c.Stdout, c.Stderr = out, errf
	err := c.Run()
	res := result{stdout: readFile(outPath), stderr: readFile(errPath), outPath: outPath, errPath: errPath}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		r.t.Fatal(err)
	}
	return res
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func (r *rt) state(id string) map[string]any {
	r.t.Helper()
	res := r.run("state", id)
	if res.code != 0 {
		r.t.Fatalf("state %s: exit %d: %s", id, res.code, res.stderr)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
		r.t.Fatalf("state %s: %v: %s", id, err, res.stdout)
	}
	return st
}

// entries lists what the runtime's root holds, but its cache.
func (r *rt) entries() []string {
	ents, _ := os.ReadDir(r.root)
	var names []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names
}

func TestRuntimeLifecycle(t *testing.T) {
	r := newRuntime(t)
	b := bundle(t, nil)
	pidFile := filepath.Join(t.TempDir(), "pid")
	created := r.run("create", "--bundle", b, "--pid-file", pidFile, "life")
	if created.code != 0 {
		t.Fatalf("create: exit %d: %s", created.code, created.stderr)
	}
	defer r.run("delete", "--force", "life")
	st := r.state("life")
	pid, _ := strconv.Atoi(readFile(pidFile))
	if st["status"] != "created" || int(st["pid"].(float64)) != pid || pid == 0 || st["bundle"] != b || st["id"] != "life" {
		t.Fatalf("state after create: %v (pid file %d)", st, pid)
	}
	if res := r.run("start", "life"); res.code != 0 {
		t.Fatalf("start: exit %d: %s", res.code, res.stderr)
	}
	if st := r.state("life"); st["status"] != "running" {
		t.Fatalf("state after start: %v", st)
	}
	if res := r.run("start", "life"); res.code == 0 || !strings.Contains(res.stderr, "already running") {
		t.Fatalf("second start: exit %d: %s", res.code, res.stderr)
	}
	waitOutput := func(path, want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(readFile(path), want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s never held %q: %q", path, want, readFile(path))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The create's stdout and stderr are the container's.
	waitOutput(created.outPath, "out")
	waitOutput(created.errPath, "err")

	res := r.run("exec", "life", "sh", "-c", "hostname; echo exec-err >&2; exit 6")
	if res.code != 6 || res.stdout != "hutch-test\n" || res.stderr != "exec-err\n" {
		t.Fatalf("exec: exit %d (want 6), stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	// ps: the container's host processes, the shim (its pid) first, then
	// the VMM and its helpers.
	res = r.run("ps", "--format", "json", "life")
	var pids []int
	if err := json.Unmarshal([]byte(res.stdout), &pids); err != nil || res.code != 0 || len(pids) < 2 || pids[0] != pid || !slices.Contains(pids, childQEMU(pid)) {
		t.Fatalf("ps --format json: exit %d, %q (%v), want the shim %d and the VMM %d: %s", res.code, res.stdout, err, pid, childQEMU(pid), res.stderr)
	}
	if res := r.run("ps", "life"); res.code != 0 || !strings.HasPrefix(res.stdout, "UID") || !strings.Contains(res.stdout, "qemu-system-x86_64") {
		t.Fatalf("ps: exit %d, want ps -ef's header and the VMM:\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res := r.run("ps", "--format", "yaml", "life"); res.code == 0 || !strings.Contains(res.stderr, "invalid format") {
		t.Fatalf("ps --format yaml: exit %d: %s", res.code, res.stderr)
	}
	// events --stats reads the container's cgroup in the guest; update
	// changes its limits there, live: a pids limit of 1 (the container runs one
	// process, its sleep) leaves an exec no room to fork, and lifting it gives it
	// back.
	res = r.run("events", "--stats", "life")
	var ev struct {
		Type string
		ID   string
		Data struct {
			Memory struct{ Usage struct{ Usage, Limit uint64 } }
			Pids   struct{ Current int }
		}
	}
	if err := json.Unmarshal([]byte(res.stdout), &ev); err != nil || res.code != 0 || ev.Type != "stats" || ev.ID != "life" ||
		ev.Data.Memory.Usage.Usage == 0 || ev.Data.Memory.Usage.Limit < ev.Data.Memory.Usage.Usage || ev.Data.Pids.Current != 1 {
		t.Fatalf("events --stats: exit %d, %q (%v): %s", res.code, res.stdout, err, res.stderr)
	}
	if res := r.run("update", "--pids-limit", "1", "life"); res.code != 0 {
		t.Fatalf("update --pids-limit 1: exit %d: %s", res.code, res.stderr)
	}
	if res := r.run("exec", "life", "sh", "-c", "(true); true"); res.code == 0 {
		t.Fatalf("exec forked under a pids limit the container's one process fills")
	}
	if res := r.run("update", "--pids-limit", "0", "life"); res.code != 0 {
		t.Fatalf("update --pids-limit 0: exit %d: %s", res.code, res.stderr)
	}
	if res := r.run("exec", "life", "true"); res.code != 0 {
		t.Fatalf("exec after the limit was lifted: exit %d: %s", res.code, res.stderr)
	}
	if res := r.run("update", "life"); res.code == 0 || !strings.Contains(res.stderr, "changes nothing") {
		t.Fatalf("update with nothing: exit %d: %s", res.code, res.stderr)
	}
	if res := r.run("delete", "life"); res.code == 0 || !strings.Contains(res.stderr, "cannot delete container life that is not stopped: running") {
		t.Fatalf("delete of a running container: exit %d: %s", res.code, res.stderr)
	}
	// pause stops the whole VM: the guest's clock stands still while an
	// exec cannot run; resume carries on.
	if res := r.run("resume", "life"); res.code == 0 || !strings.Contains(res.stderr, "container not paused") {
		t.Fatalf("resume of a running container: exit %d: %s", res.code, res.stderr)
	}
	if res := r.run("pause", "life"); res.code != 0 {
		t.Fatalf("pause: exit %d: %s", res.code, res.stderr)
	}
	if st := r.state("life"); st["status"] != "paused" {
		t.Fatalf("state after pause: %v", st)
	}
	if res := r.run("exec", "life", "true"); res.code == 0 {
		t.Fatalf("exec in a paused container ran")
	}
	if res := r.run("delete", "life"); res.code == 0 || !strings.Contains(res.stderr, "not stopped: paused") {
		t.Fatalf("delete of a paused container: exit %d: %s", res.code, res.stderr)
	}
	if res := r.run("pause", "life"); res.code == 0 || !strings.Contains(res.stderr, "container not running") {
		t.Fatalf("second pause: exit %d: %s", res.code, res.stderr)
	}
	if res := r.run("resume", "life"); res.code != 0 {
		t.Fatalf("resume: exit %d: %s", res.code, res.stderr)
	}
	if st := r.state("life"); st["status"] != "running" {
		t.Fatalf("state after resume: %v", st)
	}
	if res := r.run("exec", "life", "echo", "thawed"); res.code != 0 || res.stdout != "thawed\n" {
		t.Fatalf("exec after resume: exit %d, %q, %s", res.code, res.stdout, res.stderr)
	}
	if res := r.run("kill", "life", "TERM"); res.code != 0 {
		t.Fatalf("kill TERM: exit %d: %s", res.code, res.stderr)
	}
	deadline := time.Now().Add(30 * time.Second)
	for r.state("life")["status"] != "stopped" {
		if time.Now().After(deadline) {
			t.Fatal("the container did not stop after SIGTERM")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if procStatus(pid) != nil {
		t.Fatalf("the container's pid %d outlived it", pid)
	}
	if res := r.run("kill", "life", "9"); res.code == 0 || !strings.Contains(res.stderr, "container not running") {
		t.Fatalf("kill of a stopped container: exit %d: %s", res.code, res.stderr)
	}
	if res := r.run("delete", "life"); res.code != 0 {
		t.Fatalf("delete: exit %d: %s", res.code, res.stderr)
	}
	if res := r.run("state", "life"); res.code == 0 || !strings.Contains(res.stderr, "does not exist") {
		t.Fatalf("state after delete: exit %d: %s", res.code, res.stderr)
	}
	if left := r.entries(); len(left) != 0 {
		t.Fatalf("the root still holds %v", left)
	}
}

// TestRuntimeSignalStatus: the pid engines wait on exits 128+N when the
// container's process dies of signal N.
func TestRuntimeSignalStatus(t *testing.T) {
	r := newRuntime(t)
	b := bundle(t, func(s *specs.Spec) { s.Process.Args = []string{"sleep", "1000"} })
	c := testproc.Command(runtimeBin, "--root", r.root, "run", "--bundle", b, "sig")
	outPath := filepath.Join(r.dir, "run-output")
	out, _ := os.Create(outPath)
	defer out.Close()
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if res := r.run("state", "sig"); res.code == 0 && strings.Contains(res.stdout, `"running"`) {
			break
		}
		if time.Now().After(deadline) {
			c.Process.Kill()
			t.Fatalf("the container never ran: %s", readFile(outPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res := r.run("kill", "sig", "SIGUSR1"); res.code != 0 {
		t.Fatalf("kill SIGUSR1: exit %d: %s", res.code, res.stderr)
	}
	err := c.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 128+10 {
		t.Fatalf("run after SIGUSR1: %v, want exit 138", err)
	}
	if left := r.entries(); len(left) != 0 {
		t.Fatalf("run left %v in the root", left)
	}
}

// TestRuntimeBadBundles: create refuses a bad bundle with runc's words,
// exit 1, and leaves no state behind.
func TestRuntimeBadBundles(t *testing.T) {
	cases := []struct {
		name  string
		id    string
		setup func(t *testing.T) string
		want  string
	}{
		{"no config.json", "c1", func(t *testing.T) string {
			b := bundle(t, nil)
			os.Remove(filepath.Join(b, "config.json"))
			return b
		}, "JSON specification file config.json not found"},
		{"invalid JSON", "c2", func(t *testing.T) string {
			b := bundle(t, nil)
			os.WriteFile(filepath.Join(b, "config.json"), []byte(`{"ociVersion": "1.0.2", "process": `), 0o644)
			return b
		}, "unexpected end of JSON input"},
		{"missing rootfs", "c3", func(t *testing.T) string {
			b := bundle(t, nil)
			os.RemoveAll(filepath.Join(b, "rootfs"))
			return b
		}, "/rootfs) does not exist"},
		{"unknown OCI version", "c4", func(t *testing.T) string {
			return bundle(t, func(s *specs.Spec) { s.Version = "2.0.0" })
		}, `unsupported ociVersion \"2.0.0\"`}, // quoted as runc's logfmt quotes it
		{"no process", "c5", func(t *testing.T) string {
			return bundle(t, func(s *specs.Spec) { s.Process = nil })
		}, "process property must not be empty"},
		{"bad id", "../escape", func(t *testing.T) string { return bundle(t, nil) }, "invalid container id format"},
		{"terminal without console socket", "c6", func(t *testing.T) string {
			return bundle(t, func(s *specs.Spec) { s.Process.Terminal = true })
		}, "cannot allocate tty"},
		{"Kata rootless annotation false", "c7", func(t *testing.T) string {
			return bundle(t, func(s *specs.Spec) {
				s.Annotations = map[string]string{"io.katacontainers.config.hypervisor.rootless": "false"}
			})
		}, "is not supported"},
	}
	r := newRuntime(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := r.run("create", "--bundle", tc.setup(t), tc.id)
			if res.code != 1 || !strings.Contains(res.stderr, tc.want) || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 {
				t.Fatalf("create: exit %d (want 1), stderr %q (want one line with %q)", res.code, res.stderr, tc.want)
			}
			if left := r.entries(); len(left) != 0 {
				t.Fatalf("a refused create left %v", left)
			}
		})
	}
	t.Run("duplicate id", func(t *testing.T) {
		b := bundle(t, nil)
		if res := r.run("create", "--bundle", b, "dup"); res.code != 0 {
			t.Fatalf("create: exit %d: %s", res.code, res.stderr)
		}
		defer r.run("delete", "--force", "dup")
		before := r.state("dup")
		res := r.run("create", "--bundle", b, "dup")
		if res.code != 1 || !strings.Contains(res.stderr, "container with given ID already exists") {
			t.Fatalf("second create: exit %d, stderr %q", res.code, res.stderr)
		}
		if after := r.state("dup"); after["pid"] != before["pid"] || after["status"] != "created" {
			t.Fatalf("the first container changed: %v, then %v", before, after)
		}
	})
}

// TestRuntimeCLI checks the parts engines parse: the version's three
// lines, features, and JSON log lines.
func TestRuntimeCLI(t *testing.T) {
	r := newRuntime(t)
	res := r.run("--version")
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if res.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "hutch-runtime version ") ||
		!strings.HasPrefix(lines[1], "commit: ") || lines[2] != "spec: "+specs.Version {
		t.Fatalf("--version: exit %d: %q", res.code, res.stdout)
	}
	res = r.run("features")
	var f struct {
		OCIVersionMax string   `json:"ociVersionMax"`
		MountOptions  []string `json:"mountOptions"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &f); err != nil || f.OCIVersionMax != specs.Version || len(f.MountOptions) == 0 {
		t.Fatalf("features: %v: %s", err, res.stdout)
	}
	log := filepath.Join(t.TempDir(), "log.json")
	res = r.run("--log", log, "--log-format", "json", "state", "nosuch")
	if res.code != 1 {
		t.Fatalf("state of an unknown id: exit %d", res.code)
	}
	var entry map[string]string
	if err := json.Unmarshal([]byte(strings.TrimSpace(readFile(log))), &entry); err != nil {
		t.Fatalf("log line: %v: %q", err, readFile(log))
	}
	if entry["level"] != "error" || !strings.Contains(entry["msg"], "does not exist") || entry["time"] == "" {
		t.Fatalf("log line %v, want level error, a time, and runc's message", entry)
	}
	for _, sig := range []string{"0", "65", "NOSUCH"} {
		if res := r.run("kill", "x", sig); res.code != 1 || !strings.Contains(res.stderr, "signal") {
			t.Errorf("kill with signal %q: exit %d: %s", sig, res.code, res.stderr)
		}
	}
}

// TestRuntimeKilledShim: SIGKILL to the container's pid takes the VM with
// it; state then says stopped and delete leaves nothing.
func TestRuntimeKilledShim(t *testing.T) {
	r := newRuntime(t)
	if res := r.run("create", "--bundle", bundle(t, nil), "k9"); res.code != 0 {
		t.Fatalf("create: exit %d: %s", res.code, res.stderr)
	}
	st := r.state("k9")
	pid := int(st["pid"].(float64))
	vmm := childQEMU(pid)
	if vmm == 0 {
		t.Fatal("no VMM under the shim")
	}
	syscall.Kill(pid, syscall.SIGKILL)
	if !waitGone(vmm) {
		t.Fatalf("the VMM %d outlived its shim", vmm)
	}
	// As its PID namespace's first process, the shim finishes dying only
	// once the kernel has reaped everything in the namespace: the VMM can
	// be gone a moment before it.
	if !waitGone(pid) {
		t.Fatalf("the shim %d did not die of SIGKILL", pid)
	}
	if st := r.state("k9"); st["status"] != "stopped" || st["pid"] != float64(0) {
		t.Fatalf("state after the shim was killed: %v", st)
	}
	if res := r.run("delete", "k9"); res.code != 0 {
		t.Fatalf("delete: exit %d: %s", res.code, res.stderr)
	}
	if left := r.entries(); len(left) != 0 {
		t.Fatalf("delete left %v", left)
	}
}

// TestRuntimeKilledCreate: a create killed while its VM boots leaves a
// container that state shows and delete --force removes, VM and all.
func TestRuntimeKilledCreate(t *testing.T) {
	r := newRuntime(t)
	out, _ := os.Create(filepath.Join(r.dir, "create-output"))
	defer out.Close()
	c := testproc.Command(runtimeBin, "--root", r.root, "create", "--bundle", bundle(t, nil), "killed")
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var vmm int
	deadline := time.Now().Add(30 * time.Second)
	for vmm == 0 && time.Now().Before(deadline) {
		vmm = qemuUnder(c.Process.Pid)
		time.Sleep(20 * time.Millisecond)
	}
	c.Process.Kill()
	c.Wait()
	if vmm == 0 {
		t.Fatal("create never started a VMM")
	}
	if res := r.run("state", "killed"); res.code != 0 {
		t.Fatalf("state of the half-created container: exit %d: %s", res.code, res.stderr)
	}
	if res := r.run("delete", "--force", "killed"); res.code != 0 {
		t.Fatalf("delete --force: exit %d: %s", res.code, res.stderr)
	}
	if !waitGone(vmm) {
		t.Fatalf("the VMM %d outlived delete --force", vmm)
	}
	if left := r.entries(); len(left) != 0 {
		t.Fatalf("delete --force left %v", left)
	}
}

// qemuUnder finds a QEMU process whose parent's parent is pid (create ->
// shim -> QEMU).
func qemuUnder(pid int) int {
	for _, q := range qemuPids(func(map[string]string) bool { return true }) {
		ppid, _ := strconv.Atoi(procStatus(q)["PPid"])
		if st := procStatus(ppid); st != nil && st["PPid"] == strconv.Itoa(pid) {
			return q
		}
	}
	return 0
}

func waitGone(pid int) bool {
	deadline := time.Now().Add(10 * time.Second)
	for procStatus(pid) != nil {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// TestRuntimeLowPortsSysctl: the shim opens low ports to the VMM only in
// a network namespace of the container's, and puts the old value back
// when the container ends; a bundle that names the host's namespace
// leaves the host's sysctl alone.
func TestRuntimeLowPortsSysctl(t *testing.T) {
	const sysctl = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
	hostBefore := readFile(sysctl)
	// A namespace made for the test, as an engine makes one, with a known
	// value in it.
	ns := "hutch-lowports-" + strconv.Itoa(os.Getpid())
	if out, err := testproc.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer testproc.Command("ip", "netns", "delete", ns).Run()
	if out, err := testproc.Command("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_unprivileged_port_start=777").CombinedOutput(); err != nil {
		t.Fatalf("sysctl in %s: %v: %s", ns, err, out)
	}
	inNS := func() string {
		out, _ := testproc.Command("ip", "netns", "exec", ns, "cat", sysctl).Output()
		return strings.TrimSpace(string(out))
	}
	for _, c := range []struct {
		id, path string
		during   func() string
		want     string
	}{
		// The test's own namespace stands for the host's: where it is the
		// host's, or where the shim cannot tell, nothing may change.
		{"host-ns", fmt.Sprintf("/proc/%d/ns/net", os.Getpid()), func() string { return strings.TrimSpace(readFile(sysctl)) }, strings.TrimSpace(hostBefore)},
		{"own-ns", "/run/netns/" + ns, inNS, "0"},
	} {
		r := newRuntime(t)
		b := bundle(t, func(s *specs.Spec) {
			s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: c.path}, {Type: specs.MountNamespace}}
		})
		if res := r.run("create", "--bundle", b, c.id); res.code != 0 {
			t.Fatalf("%s: create: exit %d: %s", c.id, res.code, res.stderr)
		}
		if got := c.during(); got != c.want {
			t.Errorf("%s: ip_unprivileged_port_start while the container lives = %q, want %q", c.id, got, c.want)
		}
		// Sent TERM, the shim ends by itself and restores; a SIGKILLed
		// shim cannot (the namespace is the container's, and goes with it).
		r.run("kill", c.id, "TERM")
		deadline := time.Now().Add(30 * time.Second)
		for r.state(c.id)["status"] != "stopped" && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		r.run("delete", "--force", c.id)
	}
	if got := readFile(sysctl); got != hostBefore {
		t.Errorf("the host's ip_unprivileged_port_start changed: %q, was %q", got, hostBefore)
	}
	deadline := time.Now().Add(10 * time.Second)
	for inNS() != "777" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if inNS() != "777" {
		t.Errorf("the container's namespace kept %q after the container ended, want 777 back", inNS())
	}
}

// TestRuntimeVMMGroups: an image may ask for any supplementary group
// (disk, shadow, docker); the VMM is a host process and gets only those
// the engine's user has, plus kvm with KVM, never group 0.
func TestRuntimeVMMGroups(t *testing.T) {
	r := newRuntime(t)
	b := bundle(t, func(s *specs.Spec) {
		s.Process.User = specs.User{UID: 1234, GID: 1234, AdditionalGids: []uint32{0, 6, 42, 999}}
	})
	pidFile := filepath.Join(t.TempDir(), "pid")
	if res := r.run("create", "--bundle", b, "--pid-file", pidFile, "groups"); res.code != 0 {
		t.Fatalf("create: exit %d: %s", res.code, res.stderr)
	}
	defer r.run("delete", "--force", "groups")
	shim, _ := strconv.Atoi(readFile(pidFile))
	vmm := childQEMU(shim)
	if vmm == 0 {
		t.Fatalf("no VMM under the shim %d", shim)
	}
	st := procStatus(vmm)
	want := ""
	if accel.ProbeDevice(accel.Device).Usable {
		want = strconv.Itoa(int(kvmGid(t)))
	}
	if st["Groups"] != want || !strings.HasPrefix(st["Uid"], "1234") {
		t.Errorf("VMM Uid %q Groups %q, want uid 1234 and groups %q (root has none of 6, 42, 999; 0 is never given)", st["Uid"], st["Groups"], want)
	}
}

func kvmGid(t *testing.T) uint32 {
	g, err := user.LookupGroup("kvm")
	if err != nil {
		t.Fatalf("no kvm group: %v", err)
	}
	n, _ := strconv.Atoi(g.Gid)
	return uint32(n)
}

// TestRuntimeKilledVMM: when the VMM dies under a running container, the
// shim (the pid engines wait on) ends at once with an error status, so
// the engine sees the container stop instead of a "running" one whose
// exec is refused.
func TestRuntimeKilledVMM(t *testing.T) {
	r := newRuntime(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	if res := r.run("create", "--bundle", bundle(t, nil), "--pid-file", pidFile, "vmm9"); res.code != 0 {
		t.Fatalf("create: exit %d: %s", res.code, res.stderr)
	}
	defer r.run("delete", "--force", "vmm9")
	if res := r.run("start", "vmm9"); res.code != 0 {
		t.Fatalf("start: exit %d: %s", res.code, res.stderr)
	}
	shim, _ := strconv.Atoi(readFile(pidFile))
	vmm := childQEMU(shim)
	if vmm == 0 {
		t.Fatal("no VMM under the shim")
	}
	syscall.Kill(vmm, syscall.SIGKILL)
	deadline := time.Now().Add(5 * time.Second)
	for procStatus(shim) != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if procStatus(shim) != nil {
		t.Fatalf("the shim %d is still up 5 s after its VMM died", shim)
	}
	if st := r.state("vmm9"); st["status"] != "stopped" {
		t.Fatalf("state after the VMM died: %v", st)
	}
}
