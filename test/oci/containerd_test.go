package oci

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/internal/accel"
	"github.com/hutch-vm/hutch/internal/config"
	"github.com/hutch-vm/hutch/test/testproc"
)

// containerd is a containerd the test runs as root in its own directories,
// with a client for it.
type containerd struct {
	dir, sock string
	cmd       *exec.Cmd
}

func startContainerd(t *testing.T) *containerd {
	dir := t.TempDir()
	c := &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock")}
	c.run(t, filepath.Join(dir, "containerd.log"), "--config", "/dev/null", "--root", filepath.Join(dir, "root"),
		"--state", filepath.Join(dir, "state"), "--address", c.sock)
	return c
}

// run starts containerd with args, its output in logPath, stops it when
// the test ends, and waits until it answers on c.sock.
func (c *containerd) run(t *testing.T, logPath string, args ...string) {
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command("containerd", args...)
	c.cmd.Stdout, c.cmd.Stderr = log, log
	if err := testproc.StartDaemon(c.cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		c.cmd.Wait()
		log.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for c.ctr("version").Run() != nil {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("containerd did not answer:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *containerd) ctr(args ...string) *exec.Cmd {
	return testproc.Command("ctr", append([]string{"--address", c.sock}, args...)...)
}

// importImage loads the test image into containerd: root's Podman turns
// the rootfs into an image archive, ctr imports it. With user set, the
// image's USER is that uid:gid.
func (c *containerd) importImage(t *testing.T, name, userSpec string) {
	archive := filepath.Join(c.dir, "image.tar")
	args := []string{"import"}
	if userSpec != "" {
		args = append(args, "--change", "USER="+userSpec)
	}
	for _, step := range [][]string{
		append(args, rootfsTar, name),
		{"save", "--format", "docker-archive", "-o", archive, name},
	} {
		if out, err := testproc.Command("podman", step...).CombinedOutput(); err != nil {
			t.Fatalf("podman %s: %v: %s", step, err, out)
		}
	}
	if out, err := c.ctr("image", "import", archive).CombinedOutput(); err != nil {
		t.Fatalf("ctr image import: %v: %s", err, out)
	}
	os.Remove(archive)
}

func TestContainerdRun(t *testing.T) {
	c := startContainerd(t)
	c.importImage(t, image, "")
	r := runCmd(t, c.ctr("run", "--rm", "--runc-binary", runtimeBin, image+":latest", "hutch-ctr-run",
		"sh", "-c", "echo from ctr; hostname; exit 4"))
	if r.code != 4 || !strings.Contains(r.stdout, "from ctr") {
		t.Fatalf("ctr run: exit %d (want 4), stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}

	id := "hutch-ctr-vmm9"
	if r := runCmd(t, c.ctr("run", "-d", "--runc-binary", runtimeBin, image+":latest", id, "sleep", "1000")); r.code != 0 {
		t.Fatalf("ctr run -d: exit %d: %s", r.code, r.stderr)
	}
	defer runCmd(t, c.ctr("container", "rm", id))
	pid := 0
	for _, line := range strings.Split(runCmd(t, c.ctr("task", "ls")).stdout, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == id {
			pid, _ = strconv.Atoi(f[1])
		}
	}
	assertVMMDeathEnds(t, pid, func() (bool, int, string) {
		for _, line := range strings.Split(runCmd(t, c.ctr("task", "ls")).stdout, "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == id {
				if f[2] != "STOPPED" {
					return false, 0, f[2]
				}
				// ctr task rm warns of a non-zero status.
				rm := runCmd(t, c.ctr("task", "rm", id))
				code := 0
				if _, after, ok := strings.Cut(rm.stderr, "non-zero exit code "); ok {
					fmt.Sscan(after, &code)
				}
				return true, code, f[2] + ": " + rm.stderr
			}
		}
		return false, 0, "missing from ctr task ls"
	})
}

// TestContainerdVMMIdentity: started by root, the VMM runs as the
// container's user when that is not root (urunc's rule), and as an id
// leased for it otherwise; never as root, never with a capability.
// (Debian 12's ctr has no --user: the image's USER sets process.user.)
func TestContainerdVMMIdentity(t *testing.T) {
	c := startContainerd(t)
	c.importImage(t, imageUser, "1234:1234")
	c.importImage(t, image, "")
	leases := config.Defaults().Leases
	for _, tc := range []struct {
		image, id string
		wantUID   func(uid int) bool
		want      string
	}{
		{imageUser, "hutch-ctr-user", func(uid int) bool { return uid == 1234 }, "uid 1234"},
		{image, "hutch-ctr-lease", func(uid int) bool {
			return int64(uid) >= int64(leases.First) && int64(uid) < int64(leases.First)+int64(leases.Count)
		}, "a leased uid"},
	} {
		t.Run(tc.id, func(t *testing.T) {
			if r := runCmd(t, c.ctr("run", "-d", "--runc-binary", runtimeBin, tc.image+":latest", tc.id, "sleep", "1000")); r.code != 0 {
				t.Fatalf("ctr run -d: exit %d: %s", r.code, r.stderr)
			}
			defer func() {
				runCmd(t, c.ctr("task", "kill", "-s", "KILL", tc.id))
				time.Sleep(500 * time.Millisecond)
				runCmd(t, c.ctr("task", "rm", "-f", tc.id))
				runCmd(t, c.ctr("container", "rm", tc.id))
			}()
			task := runCmd(t, c.ctr("task", "ls"))
			var shimPid int
			for _, line := range strings.Split(task.stdout, "\n") {
				if f := strings.Fields(line); len(f) == 3 && f[0] == tc.id {
					shimPid, _ = strconv.Atoi(f[1])
				}
			}
			vmm := childQEMU(shimPid)
			if vmm == 0 {
				t.Fatalf("no VMM under the container's pid %d (ctr task ls: %s)", shimPid, task.stdout)
			}
			// The accelerator is the probe's answer, with the notice in the
			// runtime's log (containerd's shim passes --log).
			probe := accel.ProbeDevice(accel.Device)
			want := accel.TCG
			if probe.Usable {
				want = accel.KVM
			}
			// tcg may carry options (tb-size), after a comma.
			if got, _, _ := strings.Cut(vmmAccel(vmm), ","); got != want {
				t.Errorf("VMM -accel %q, want %s (%+v)", vmmAccel(vmm), want, probe)
			}
			if !probe.Usable {
				logPath := filepath.Join(c.dir, "state", "io.containerd.runtime.v2.task", "default", tc.id, "log.json")
				if b, err := os.ReadFile(logPath); err != nil || !strings.Contains(string(b), probe.Problem()+"; using TCG") {
					t.Errorf("runtime log %s (%v): %q; want the TCG notice naming %q", logPath, err, b, probe.Problem())
				}
			}
			st := procStatus(vmm)
			uid, _ := strconv.Atoi(strings.Fields(st["Uid"])[0])
			if !tc.wantUID(uid) || strings.Fields(st["Uid"])[3] != strconv.Itoa(uid) {
				t.Errorf("VMM Uid %q, want %s", st["Uid"], tc.want)
			}
			if gid := strings.Fields(st["Gid"])[0]; gid == "0" {
				t.Errorf("VMM Gid %q", st["Gid"])
			}
			for field, want := range map[string]string{"CapEff": "0000000000000000", "CapBnd": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2", "Groups": ""} {
				if st[field] != want {
					t.Errorf("VMM %s = %q, want %q", field, st[field], want)
				}
			}
		})
	}
}

// childQEMU finds the QEMU process whose parent is pid.
// vmmAccel is the value of the live VMM's -accel option ("" without one).
func vmmAccel(vmm int) string {
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", vmm))
	args := strings.Split(string(cmdline), "\x00")
	for i, a := range args[:max(len(args)-1, 0)] {
		if a == "-accel" {
			return args[i+1]
		}
	}
	return ""
}

func childQEMU(pid int) int {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if pids := qemuPids(func(st map[string]string) bool { return st["PPid"] == fmt.Sprint(pid) }); len(pids) > 0 {
			return pids[0]
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0
}
