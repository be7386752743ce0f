package oci

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/test/hostproc"
)

// noneLeft fails the test if a VMM, shim or virtiofsd of uid is still alive
// after a grace period.
func noneLeft(t *testing.T, uid int, what string) {
	t.Helper()
	ofUID := func(st map[string]string) bool { return strings.Fields(st["Uid"])[0] == strconv.Itoa(uid) }
	deadline := time.Now().Add(5 * time.Second)
	for {
		q, f, s := qemuPids(ofUID), virtiofsdPids(ofUID), shims()
		if len(q)+len(f)+len(s) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: QEMU %v, virtiofsd %v, hutch-runtime %v still run", what, q, f, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// hostDir is a directory the Podman user owns, with one file in it.
func hostDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(podman.Home, "share-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "in.txt"), []byte("from-the-host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "in.txt")} {
		os.Chown(p, podman.UID, podman.GID)
	}
	return dir
}

func TestPodmanBindMount(t *testing.T) {
	dir := hostDir(t)
	r := runCmd(t, podman.podman("run", "--rm", "-v", dir+":/data", image, "sh", "-c",
		"cat /data/in.txt && echo from-the-container > /data/out.txt && mkdir /data/made"))
	if r.code != 0 || r.stdout != "from-the-host\n" {
		t.Fatalf("podman run -v: exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
	b, err := os.ReadFile(filepath.Join(dir, "out.txt"))
	if err != nil || string(b) != "from-the-container\n" {
		t.Fatalf("the container's write did not reach the host: %q, %v", b, err)
	}
	// The container's root is the user, as with runc under rootless Podman.
	for _, p := range []string{"out.txt", "made"} {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != podman.UID || int(st.Gid) != podman.GID {
			t.Errorf("%s made by the container's root is owned by %d:%d on the host, want the user %d:%d", p, st.Uid, st.Gid, podman.UID, podman.GID)
		}
	}

	r = runCmd(t, podman.podman("run", "--rm", "-v", dir+":/data:ro", image, "sh", "-c",
		"cat /data/in.txt && echo nope > /data/ro.txt"))
	if r.code == 0 || r.stdout != "from-the-host\n" || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("podman run -v :ro: exit %d (want non-zero), stdout %q, stderr %q (want Read-only file system)", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "ro.txt")); err == nil {
		t.Errorf("a write to a :ro volume reached the host")
	}
	noneLeft(t, podman.UID, "podman run --rm -v")
}

func TestPodmanNamedVolume(t *testing.T) {
	vol := "hutch-oci-vol"
	runCmd(t, podman.podman("volume", "rm", "-f", vol))
	if r := runCmd(t, podman.podman("volume", "create", vol)); r.code != 0 {
		t.Fatalf("podman volume create: %s", r.stderr)
	}
	defer runCmd(t, podman.podman("volume", "rm", "-f", vol))
	if r := runCmd(t, podman.podman("run", "--rm", "-v", vol+":/v", image, "sh", "-c", "echo kept-$((6*7)) > /v/f")); r.code != 0 {
		t.Fatalf("first container: exit %d: %s", r.code, r.stderr)
	}
	if r := runCmd(t, podman.podman("run", "--rm", "-v", vol+":/v", image, "cat", "/v/f")); r.code != 0 || r.stdout != "kept-42\n" {
		t.Fatalf("second container reads %q (exit %d, %s), want kept-42", r.stdout, r.code, r.stderr)
	}
}

// TestPodmanRootfsWrites: the rootfs is the engine's own directory, so
// writes survive stop and start, and cp, diff, commit and build see them.
func TestPodmanRootfsWrites(t *testing.T) {
	name := "hutch-oci-rootfs"
	committed := "localhost/hutch-oci-committed"
	runCmd(t, podman.podman("rm", "-f", name))
	defer runCmd(t, podman.podman("rmi", "-f", committed))
	defer runCmd(t, podman.podman("rm", "-f", name))
	if r := runCmd(t, podman.podman("run", "-d", "--name", name, image, "sleep", "1000")); r.code != 0 {
		t.Fatalf("podman run -d: %s", r.stderr)
	}
	assertHelperIdentities(t, name)
	if r := runCmd(t, podman.podman("exec", name, "sh", "-c", "echo persist-$((6*7)) > /note")); r.code != 0 {
		t.Fatalf("podman exec: %s", r.stderr)
	}
	if r := runCmd(t, podman.podman("stop", "-t", "2", name)); r.code != 0 {
		t.Fatalf("podman stop: %s", r.stderr)
	}
	if r := runCmd(t, podman.podman("start", name)); r.code != 0 {
		t.Fatalf("podman start: %s", r.stderr)
	}
	if r := runCmd(t, podman.podman("exec", name, "cat", "/note")); r.stdout != "persist-42\n" {
		t.Fatalf("after stop and start /note is %q (exit %d, %s), want persist-42", r.stdout, r.code, r.stderr)
	}

	// cp into a running container, and out of it.
	src := filepath.Join(podman.Home, "cp-in.txt")
	if err := os.WriteFile(src, []byte("copied-in\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(src, podman.UID, podman.GID)
	defer os.Remove(src)
	if r := runCmd(t, podman.podman("cp", src, name+":/cp-in.txt")); r.code != 0 {
		t.Fatalf("podman cp into the container: exit %d: %s", r.code, r.stderr)
	}
	var seen result
	// A new name reaches the guest once its negative lookup cache expires.
	if !waitUntil(5*time.Second, func() bool {
		seen = runCmd(t, podman.podman("exec", name, "cat", "/cp-in.txt"))
		return seen.stdout == "copied-in\n"
	}) {
		t.Errorf("podman cp into a running container: the container reads %q (exit %d, %s)", seen.stdout, seen.code, seen.stderr)
	}
	runCmd(t, podman.podman("exec", name, "sh", "-c", "echo made-inside > /cp-out.txt"))
	dst := filepath.Join(podman.Home, "cp-out.txt")
	defer os.Remove(dst)
	if r := runCmd(t, podman.podman("cp", name+":/cp-out.txt", dst)); r.code != 0 {
		t.Fatalf("podman cp out of the container: exit %d: %s", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(dst); string(b) != "made-inside\n" {
		t.Errorf("podman cp out of the container gave %q", b)
	}

	if r := runCmd(t, podman.podman("diff", name)); !strings.Contains(r.stdout, "A /note") {
		t.Errorf("podman diff does not show the write: %q (exit %d, %s)", r.stdout, r.code, r.stderr)
	}
	if r := runCmd(t, podman.podman("commit", name, committed)); r.code != 0 {
		t.Fatalf("podman commit: exit %d: %s", r.code, r.stderr)
	}
	if r := runCmd(t, podman.podman("run", "--rm", committed, "cat", "/note")); r.stdout != "persist-42\n" {
		t.Errorf("the committed image has /note = %q (exit %d, %s)", r.stdout, r.code, r.stderr)
	}
	if r := runCmd(t, podman.podman("rm", "-f", "-t", "0", name)); r.code != 0 {
		t.Fatalf("podman rm -f: %s", r.stderr)
	}
	noneLeft(t, podman.UID, "podman rm -f")
}

func TestPodmanBuild(t *testing.T) {
	built := "localhost/hutch-oci-built"
	defer runCmd(t, podman.podman("rmi", "-f", built))
	ctx := filepath.Join(podman.Home, "build-ctx")
	os.RemoveAll(ctx)
	if err := os.Mkdir(ctx, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(ctx)
	cf := "FROM " + image + "\nRUN echo built-$((6*7)) > /built.txt\n"
	if err := os.WriteFile(filepath.Join(ctx, "Containerfile"), []byte(cf), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(ctx, podman.UID, podman.GID)
	os.Chown(filepath.Join(ctx, "Containerfile"), podman.UID, podman.GID)
	// No cache: the RUN step must run, in a VM, now.
	if r := runCmd(t, podman.podman("build", "--no-cache", "-t", built, ctx)); r.code != 0 {
		t.Fatalf("podman build: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	// Read back with runc: the file is in the image, not only in a VM.
	r := runCmd(t, podman.Podman("runc", "run", "--rm", built, "cat", "/built.txt"))
	if r.stdout != "built-42\n" {
		t.Fatalf("the built image has /built.txt = %q (exit %d, %s)", r.stdout, r.code, r.stderr)
	}
	noneLeft(t, podman.UID, "podman build")
}

// assertHelperIdentities checks the host side of a running rootless
// container: its virtiofsd runs as the user, in a user namespace of its
// own (not the host's, not Podman's), with no_new_privs and its seccomp
// filter on the process that serves requests.
func assertHelperIdentities(t *testing.T, name string) {
	t.Helper()
	inspect := runCmd(t, podman.podman("inspect", "--format", "{{.State.Pid}}", name))
	shim, _ := strconv.Atoi(strings.TrimSpace(inspect.stdout))
	hostNS, _ := os.Readlink("/proc/1/ns/user")
	shimNS, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", shim))
	fs := virtiofsdPids(func(st map[string]string) bool { return strings.Fields(st["Uid"])[0] == strconv.Itoa(podman.UID) })
	if len(fs) == 0 {
		t.Fatalf("no virtiofsd of uid %d runs for %s", podman.UID, name)
	}
	filtered := false
	for _, pid := range fs {
		st := hostproc.Status(pid)
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", pid))
		if ns == hostNS || ns == shimNS {
			t.Errorf("virtiofsd %d is in user namespace %s: want one of its own (host %s, Podman's %s)", pid, ns, hostNS, shimNS)
		}
		if st["NoNewPrivs"] != "1" {
			t.Errorf("virtiofsd %d NoNewPrivs = %q", pid, st["NoNewPrivs"])
		}
		if gid := strings.Fields(st["Gid"]); gid[0] != strconv.Itoa(podman.GID) {
			t.Errorf("virtiofsd %d Gid %q, want %d", pid, st["Gid"], podman.GID)
		}
		filtered = filtered || st["Seccomp"] == "2"
	}
	if !filtered {
		t.Errorf("no virtiofsd process of %v has its seccomp filter", fs)
	}
}

func waitUntil(d time.Duration, f func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(200 * time.Millisecond) {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
