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

	"github.com/hutch-vm/hutch/internal/config"
	"github.com/hutch-vm/hutch/test/hostproc"
)

// rootDir is a directory of root's with one file in it, for root engines
// to bind-mount.
func rootDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "in.txt"), []byte("from-the-host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkShared reads what a container wrote through a read-write bind
// mount: the file, owned by host root (a root engine's container root is
// host root's ids, as under runc).
func checkShared(t *testing.T, engine, dir string, r result) {
	t.Helper()
	if r.code != 0 || r.stdout != "from-the-host\n" {
		t.Fatalf("%s with a bind mount: exit %d, stdout %q, stderr %s", engine, r.code, r.stdout, r.stderr)
	}
	fi, err := os.Stat(filepath.Join(dir, "out.txt"))
	if err != nil {
		t.Fatalf("%s: the container's write did not reach the host: %v", engine, err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
		t.Errorf("%s: out.txt is owned by %d:%d, want 0:0", engine, st.Uid, st.Gid)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "out.txt")); string(b) != "from-the-container\n" {
		t.Errorf("%s: out.txt holds %q", engine, b)
	}
}

// checkReadOnly: a write to a read-only bind mount fails and never lands.
func checkReadOnly(t *testing.T, engine, dir string, r result) {
	t.Helper()
	if r.code == 0 || !strings.Contains(r.stdout+r.stderr, "Read-only file system") {
		t.Errorf("%s with a read-only bind mount: exit %d (want non-zero), output %q %q (want Read-only file system)", engine, r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "ro.txt")); err == nil {
		t.Errorf("%s: a write to a read-only bind mount reached the host", engine)
	}
}

const (
	shareScript = "cat /data/in.txt && echo from-the-container > /data/out.txt"
	roScript    = "echo nope > /data/ro.txt"
)

// assertRootEngineHostSide checks every process a root engine's container
// has on the host, below its shim (the pid the engine sees), as
// docs/security.md states them:
//   - QEMU: a leased uid, no capabilities, no_new_privs, seccomp;
//   - virtiofsd: in a user namespace of its own that maps host ids to
//     themselves, so its capabilities hold there only; no_new_privs; its
//     serving process under its seccomp filter.
//
// Nothing else runs.
func assertRootEngineHostSide(t *testing.T, engine string, shim int) {
	t.Helper()
	leases := config.Defaults().Leases
	hostNS, _ := os.Readlink("/proc/1/ns/user")
	var qemus, fsds int
	filtered := false
	deadline := time.Now().Add(10 * time.Second)
	var procs []int
	for {
		procs = hostproc.Descendants(shim)
		qemus, fsds = 0, 0
		for _, p := range procs {
			switch procStatus(p)["Name"] {
			case "virtiofsd":
				fsds++
			case "qemu-system-x86":
				qemus++
			}
		}
		if (qemus > 0 && fsds > 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if qemus != 1 || fsds == 0 {
		t.Fatalf("%s: below the shim %d: %d QEMU, %d virtiofsd (%v); want one of each", engine, shim, qemus, fsds, procs)
	}
	for _, p := range procs {
		st := procStatus(p)
		if st == nil {
			continue
		}
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", p))
		uid, _ := strconv.Atoi(strings.Fields(st["Uid"])[0])
		switch {
		case strings.HasPrefix(st["Name"], "qemu-system"):
			if int64(uid) < int64(leases.First) || int64(uid) >= int64(leases.First)+int64(leases.Count) {
				t.Errorf("%s: QEMU %d runs as uid %d, not a leased one", engine, p, uid)
			}
			for field, want := range map[string]string{"CapEff": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"} {
				if st[field] != want {
					t.Errorf("%s: QEMU %s = %q, want %q", engine, field, st[field], want)
				}
			}
		case st["Name"] == "virtiofsd":
			if ns == hostNS {
				t.Errorf("%s: virtiofsd %d is in the host's user namespace", engine, p)
			}
			if m, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", p)); !strings.HasPrefix(strings.Join(strings.Fields(string(m)), " "), "0 0 ") {
				t.Errorf("%s: virtiofsd %d uid_map %q, want host ids mapped to themselves", engine, p, m)
			}
			if st["NoNewPrivs"] != "1" {
				t.Errorf("%s: virtiofsd %d NoNewPrivs = %q", engine, p, st["NoNewPrivs"])
			}
			filtered = filtered || st["Seccomp"] == "2"
		default:
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
			t.Errorf("%s: unexpected process %d (%s) below the shim", engine, p, strings.ReplaceAll(string(cmd), "\x00", " "))
		}
	}
	if !filtered {
		t.Errorf("%s: no virtiofsd process has its seccomp filter", engine)
	}
}

func TestDockerShares(t *testing.T) {
	d := startDockerd(t)
	dir := rootDir(t)
	run := func(args ...string) result {
		return runCmd(t, d.docker(append([]string{"run", "--rm", "--runtime", "hutch", "--network", "none"}, args...)...))
	}
	checkShared(t, "docker", dir, run("-v", dir+":/data", image, "sh", "-c", shareScript))
	checkReadOnly(t, "docker", dir, run("-v", dir+":/data:ro", image, "sh", "-c", roScript))

	name := "hutch-docker-rootfs"
	if r := runCmd(t, d.docker("run", "-d", "--name", name, "--runtime", "hutch", "--network", "none", image, "sleep", "1000")); r.code != 0 {
		t.Fatalf("docker run -d: exit %d: %s", r.code, r.stderr)
	}
	defer runCmd(t, d.docker("rm", "-f", name))
	var shim int
	fmt.Sscan(runCmd(t, d.docker("inspect", "--format", "{{.State.Pid}}", name)).stdout, &shim)
	assertRootEngineHostSide(t, "docker", shim)
	if r := runCmd(t, d.docker("exec", name, "sh", "-c", "echo persist-$((6*7)) > /note")); r.code != 0 {
		t.Fatalf("docker exec: %s", r.stderr)
	}
	for _, step := range [][]string{{"stop", "-t", "2", name}, {"start", name}} {
		if r := runCmd(t, d.docker(step...)); r.code != 0 {
			t.Fatalf("docker %s: exit %d: %s", step[0], r.code, r.stderr)
		}
	}
	if r := runCmd(t, d.docker("exec", name, "cat", "/note")); r.stdout != "persist-42\n" {
		t.Errorf("after docker stop and start /note is %q (exit %d, %s)", r.stdout, r.code, r.stderr)
	}
	if r := runCmd(t, d.docker("diff", name)); !strings.Contains(r.stdout, "A /note") {
		t.Errorf("docker diff does not show the write: %q", r.stdout)
	}
	// pause and unpause reach hutch-runtime through containerd's shim.
	if r := runCmd(t, d.docker("pause", name)); r.code != 0 {
		t.Fatalf("docker pause: exit %d: %s", r.code, r.stderr)
	}
	if r := runCmd(t, d.docker("inspect", "--format", "{{.State.Status}}", name)); strings.TrimSpace(r.stdout) != "paused" {
		t.Errorf("after docker pause the state is %q", r.stdout)
	}
	if r := runCmd(t, d.docker("unpause", name)); r.code != 0 {
		t.Fatalf("docker unpause: exit %d: %s", r.code, r.stderr)
	}
	if r := runCmd(t, d.docker("exec", name, "cat", "/note")); r.stdout != "persist-42\n" {
		t.Errorf("after docker unpause exec gives %q (exit %d, %s)", r.stdout, r.code, r.stderr)
	}
}

func TestContainerdShares(t *testing.T) {
	c := startContainerd(t)
	c.importImage(t, image, "")
	dir := rootDir(t)
	run := func(id, mount string, args ...string) result {
		full := append([]string{"run", "--rm", "--runc-binary", runtimeBin, "--mount", mount, image + ":latest", id}, args...)
		return runCmd(t, c.ctr(full...))
	}
	checkShared(t, "ctr", dir, run("hutch-ctr-rw", "type=bind,src="+dir+",dst=/data,options=rbind:rw", "sh", "-c", shareScript))
	checkReadOnly(t, "ctr", dir, run("hutch-ctr-ro", "type=bind,src="+dir+",dst=/data,options=rbind:ro", "sh", "-c", roScript))

	id := "hutch-ctr-rootfs"
	if r := runCmd(t, c.ctr("run", "-d", "--runc-binary", runtimeBin, image+":latest", id, "sleep", "1000")); r.code != 0 {
		t.Fatalf("ctr run -d: exit %d: %s", r.code, r.stderr)
	}
	stopTask := func() {
		runCmd(t, c.ctr("task", "kill", "-s", "KILL", id))
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if r := runCmd(t, c.ctr("task", "rm", id)); r.code == 0 {
				return
			}
		}
		runCmd(t, c.ctr("task", "rm", "-f", id))
	}
	defer func() {
		stopTask()
		runCmd(t, c.ctr("container", "rm", id))
	}()
	exec := func(execID string, args ...string) result {
		return runCmd(t, c.ctr(append([]string{"task", "exec", "--exec-id", execID, id}, args...)...))
	}
	if r := exec("w", "sh", "-c", "echo persist-$((6*7)) > /note"); r.code != 0 {
		t.Fatalf("ctr task exec: exit %d: %s", r.code, r.stderr)
	}
	stopTask()
	if r := runCmd(t, c.ctr("task", "start", "-d", id)); r.code != 0 {
		t.Fatalf("ctr task start: exit %d: %s", r.code, r.stderr)
	}
	if r := exec("r", "cat", "/note"); r.stdout != "persist-42\n" {
		t.Errorf("after the task is killed and started again /note is %q (exit %d, %s)", r.stdout, r.code, r.stderr)
	}
}
