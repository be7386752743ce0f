package oci

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hutch-vm/hutch/test/ocitest"
)

// criAnnotations are what containerd's CRI puts on a pod's containers.
func criAnnotations(kind, sandbox string) map[string]string {
	return map[string]string{"io.kubernetes.cri.container-type": kind, "io.kubernetes.cri.sandbox-id": sandbox}
}

// TestRuntimePod: the containers of a pod, as containerd's CRI creates
// them, run in one VM: the sandbox's. A later container has its own root,
// process (PID 1 of its own namespace) and stdio, and shares the guest's
// network (a server on 127.0.0.1 in one answers the other), hostname and
// a volume bound into both.
func TestRuntimePod(t *testing.T) {
	r := newRuntime(t)
	shared := t.TempDir()
	os.Chmod(shared, 0o777)
	pidNS := func(s *specs.Spec) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	sandbox := bundle(t, func(s *specs.Spec) {
		pidNS(s)
		s.Hostname = "hutch-pod"
		s.Annotations = criAnnotations("sandbox", "pod1")
		s.Process.Args = []string{"sleep", "1000"}
	})
	hooksOut := t.TempDir()
	record := func(name string) specs.Hook {
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + filepath.Join(hooksOut, name)}}
	}
	var hooks *specs.Hooks
	member := func(args ...string) string {
		return bundle(t, func(s *specs.Spec) {
			s.Hooks = hooks
			pidNS(s)
			s.Hostname = "hutch-pod"
			s.Annotations = criAnnotations("container", "pod1")
			s.Process.Args = args
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/shared", Type: "bind", Source: shared, Options: []string{"rbind", "rw"}},
				specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}})
		})
	}
	if res := r.run("create", "--bundle", sandbox, "pod1"); res.code != 0 {
		t.Fatalf("create the sandbox: exit %d: %s", res.code, res.stderr)
	}
	defer r.run("delete", "--force", "pod1")
	if res := r.run("start", "pod1"); res.code != 0 {
		t.Fatalf("start the sandbox: exit %d: %s", res.code, res.stderr)
	}
	sandboxPid := int(r.state("pod1")["pid"].(float64))
	vmm := childQEMU(sandboxPid)
	if vmm == 0 {
		t.Fatal("no VMM under the sandbox")
	}

	// Member a has hooks of each kind; each writes the state it reads.
	hooks = &specs.Hooks{CreateRuntime: []specs.Hook{record("createRuntime")}, CreateContainer: []specs.Hook{record("createContainer")},
		StartContainer: []specs.Hook{record("startContainer")}, Poststart: []specs.Hook{record("poststart")}, Poststop: []specs.Hook{record("poststop")}}
	aBundle := member("sh", "-c", "echo from-a > /shared/a.txt; exec httpd -f -p 8080 -h /www")
	hooks = nil
	if res := r.run("create", "--bundle", aBundle, "a"); res.code != 0 {
		t.Fatalf("create member a: exit %d: %s", res.code, res.stderr)
	}
	defer r.run("delete", "--force", "a")
	hookSaw := func(name string) specs.State {
		var st specs.State
		if err := json.Unmarshal([]byte(readFile(filepath.Join(hooksOut, name))), &st); err != nil {
			t.Errorf("member a's %s hook: no state read (%v)", name, err)
		}
		return st
	}
	aCreated := int(r.state("a")["pid"].(float64))
	for _, name := range []string{"createRuntime", "createContainer"} {
		if st := hookSaw(name); st.ID != "a" || st.Pid != aCreated || st.Status != specs.StateCreating || st.Bundle != aBundle {
			t.Errorf("member a's %s hook read %+v, want id a, pid %d, status creating, bundle %s", name, st, aCreated, aBundle)
		}
	}
	if _, err := os.Stat(filepath.Join(hooksOut, "startContainer")); err == nil {
		t.Error("member a's startContainer hook ran at create")
	}
	if res := r.run("start", "a"); res.code != 0 {
		t.Fatalf("start member a: exit %d: %s", res.code, res.stderr)
	}
	for _, name := range []string{"startContainer", "poststart"} {
		if st := hookSaw(name); st.ID != "a" || st.Pid != aCreated {
			t.Errorf("member a's %s hook read %+v, want id a, pid %d", name, st, aCreated)
		}
	}
	script := `for i in $(seq 100); do [ -f /shared/a.txt ] && wget -qO- http://127.0.0.1:8080/ > /tmp/page 2>/dev/null && break; sleep 0.2; done
cat /shared/a.txt; grep -c "` + ocitest.PageText + `" /tmp/page; hostname; echo pid=$$; echo from-b > /shared/b.txt`
	b := r.run("create", "--bundle", member("sh", "-c", script), "b")
	if b.code != 0 {
		t.Fatalf("create member b: exit %d: %s", b.code, b.stderr)
	}
	defer r.run("delete", "--force", "b")
	if res := r.run("start", "b"); res.code != 0 {
		t.Fatalf("start member b: exit %d: %s", res.code, res.stderr)
	}
	deadline := time.Now().Add(60 * time.Second)
	for r.state("b")["status"] != "stopped" {
		if time.Now().After(deadline) {
			t.Fatalf("member b did not end; its output: %q %q", readFile(b.outPath), readFile(b.errPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, want := readFile(b.outPath), "from-a\n1\nhutch-pod\npid=1\n"; got != want {
		t.Errorf("member b printed %q, want %q (stderr %q)", got, want, readFile(b.errPath))
	}
	if data, err := os.ReadFile(filepath.Join(shared, "b.txt")); err != nil || string(data) != "from-b\n" {
		t.Errorf("the shared volume on the host: %q, %v", data, err)
	}
	// One VM: the members' pids (their relays) have no VMM of their own.
	if n := len(qemuPids(func(st map[string]string) bool { return true })); n != 1 {
		t.Errorf("%d VMMs run for a pod of three containers, want 1", n)
	}
	// A member that cannot be created fails with runc's words, and the pod
	// goes on (what its setup mounted in the guest is taken back: the
	// agent's TestReleaseUnmountsTheRoot).
	if res := r.run("create", "--bundle", member("no-such-command"), "bad"); res.code == 0 || !strings.Contains(res.stderr, "executable file not found") {
		t.Errorf("create of a member whose command is missing: exit %d, %s; want runc's not-found error", res.code, res.stderr)
	}
	r.run("delete", "--force", "bad")
	// So does one whose create-time hook fails, leaving no container.
	hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "exit 3"}}}}
	failing := member("sleep", "1000")
	hooks = nil
	if res := r.run("create", "--bundle", failing, "hookfail"); res.code == 0 || !strings.Contains(res.stderr, "hook") {
		t.Errorf("create of a member whose createRuntime hook fails: exit %d, %s; want the hook's failure", res.code, res.stderr)
	}
	if res := r.run("state", "hookfail"); res.code == 0 {
		t.Errorf("a member whose hook failed is still there: %s", res.stdout)
	}
	if res := r.run("exec", "a", "cat", "/shared/b.txt"); res.code != 0 || res.stdout != "from-b\n" {
		t.Errorf("exec in member a: exit %d, %q, %s", res.code, res.stdout, res.stderr)
	}
	if res := r.run("exec", "a", "sh", "-c", "cat /proc/1/comm"); res.code != 0 || res.stdout != "httpd\n" {
		t.Errorf("exec in member a sees PID 1 as %q (exit %d, %s), want its httpd", res.stdout, res.code, res.stderr)
	}
	// What keeps an idle guest small (docs/benchmarks.md): free pages go
	// back to the host in small blocks, and no tracing control files pin
	// ten thousand inodes.
	if res := r.run("exec", "a", "cat", "/sys/module/page_reporting/parameters/page_reporting_order"); res.code != 0 || res.stdout != "3\n" {
		t.Errorf("the guest's page reporting order: exit %d, %q, %s; want 3", res.code, res.stdout, res.stderr)
	}
	res := r.run("exec", "a", "cat", "/proc/sys/fs/inode-nr")
	if f := strings.Fields(res.stdout); res.code != 0 || len(f) != 2 {
		t.Errorf("the guest's inode count: exit %d, %q, %s", res.code, res.stdout, res.stderr)
	} else if n, _ := strconv.Atoi(f[0]); n <= 0 || n > 3000 {
		t.Errorf("the guest holds %d inodes, want under 3000 (tracefs's event files are about 10,000)", n)
	}
	aPid := int(r.state("a")["pid"].(float64))
	if res := r.run("kill", "a", "KILL"); res.code != 0 {
		t.Fatalf("kill member a: exit %d: %s", res.code, res.stderr)
	}
	if !waitGone(aPid) {
		t.Fatalf("member a's pid %d outlived SIGKILL", aPid)
	}
	for _, id := range []string{"a", "b"} {
		if res := r.run("delete", id); res.code != 0 {
			t.Fatalf("delete member %s: exit %d: %s", id, res.code, res.stderr)
		}
	}
	if st := hookSaw("poststop"); st.ID != "a" || st.Status != specs.StateStopped {
		t.Errorf("member a's poststop hook read %+v, want id a, status stopped", st)
	}
	if res := r.run("delete", "--force", "pod1"); res.code != 0 {
		t.Fatalf("delete the sandbox: exit %d: %s", res.code, res.stderr)
	}
	if !waitGone(vmm) {
		t.Fatalf("the pod's VMM %d outlived its sandbox", vmm)
	}
	if left := r.entries(); len(left) != 0 {
		t.Fatalf("the root still holds %v", left)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), r.root) {
		t.Fatalf("mounts under the runtime's root outlived the pod:\n%s", mounts)
	}
}
