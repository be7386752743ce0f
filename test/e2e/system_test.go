package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/internal/config"
	"github.com/hutch-vm/hutch/test/testproc"
)

// rootUser runs hutch as root: system mode. Unlike newUser it has no
// private state: system VMs share /run/hutch and /var/lib/hutch, so each
// test names its VMs uniquely and removes them itself.
func rootUser(t *testing.T) *tUser {
	t.Helper()
	return &tUser{t: t, name: "root", env: []string{"HOME=/root", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}}
}

type lease struct {
	VM  string `json:"vm"`
	UID uint32 `json:"uid"`
}

func leases(t *testing.T) []lease {
	var f struct {
		Leases []lease `json:"leases"`
	}
	b, err := os.ReadFile("/run/hutch/leases.json")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if len(b) > 0 {
		json.Unmarshal(b, &f)
	}
	return f.Leases
}

func hasLease(t *testing.T, vm string) bool {
	for _, l := range leases(t) {
		if l.VM == vm {
			return true
		}
	}
	return false
}

// System mode: root starts the VM, the VMM and passt run as a leased
// identity with nothing else.
func TestSystemMode(t *testing.T) {
	r := rootUser(t)
	b := make([]byte, 3)
	rand.Read(b)
	a, z := "sysa-"+hex.EncodeToString(b), "sysz-"+hex.EncodeToString(b)
	t.Cleanup(func() { r.run("rm", "-f", a, z) })
	passwd, _ := os.ReadFile("/etc/passwd")
	group, _ := os.ReadFile("/etc/group")

	// A disk only root can open: the VMM must get it as a descriptor.
	secret := filepath.Join(t.TempDir(), "secret.raw")
	if out, err := testproc.Command("qemu-img", "create", "-q", "-f", "raw", secret, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	os.Chmod(secret, 0o600)
	before := fileFacts(t, secret)

	port := freePort(t)
	r.ok("run", "-d", "--name", a, "--memory", "256M", "--kernel", guest.Kernel, "--initrd", guest.Initrd,
		"--append", "console=ttyS0", "-p", fmt.Sprintf("127.0.0.1:%d:80", port), "--disk", secret, "--network", "passt")
	waitPage(t, port)
	v := r.inspect(a)
	if v.UID == 0 || v.GID == 0 {
		t.Fatalf("system vm runs as uid %d gid %d", v.UID, v.GID)
	}
	if bytes.Contains(passwd, []byte(":"+strconv.Itoa(v.UID)+":")) {
		t.Errorf("leased uid %d is a passwd account", v.UID)
	}
	for what, pid := range map[string]int{"qemu": v.Pid, "passt": v.PasstPid} {
		st := procStatus(pid)
		if st == nil {
			t.Fatalf("%s pid %d is not running", what, pid)
		}
		want := fmt.Sprintf("%d\t%d\t%d\t%d", v.UID, v.UID, v.UID, v.UID)
		if st["Uid"] != want || st["Gid"] != fmt.Sprintf("%d\t%d\t%d\t%d", v.GID, v.GID, v.GID, v.GID) {
			t.Errorf("%s Uid %q Gid %q, want all %d/%d", what, st["Uid"], st["Gid"], v.UID, v.GID)
		}
		if st["Groups"] != "" {
			t.Errorf("%s Groups %q, want none (no /dev/kvm here)", what, st["Groups"])
		}
		caps := []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}
		if what == "passt" && inOwnUserNS(t, pid) {
			// passt sandboxes itself in a user namespace of its own, where
			// the kernel resets the bounding set; capabilities there reach
			// nothing outside that empty namespace. What it holds is zero.
			caps = []string{"CapInh", "CapPrm", "CapEff", "CapAmb"}
		}
		for _, c := range caps {
			if st[c] != "0000000000000000" {
				t.Errorf("%s %s = %s, want 0", what, c, st[c])
			}
		}
		if st["NoNewPrivs"] != "1" || st["Seccomp"] != "2" {
			t.Errorf("%s NoNewPrivs %q Seccomp %q, want 1 and 2", what, st["NoNewPrivs"], st["Seccomp"])
		}
	}
	// The runtime dir is the lease's, private; an ordinary user can neither
	// list it nor reach QMP.
	fi, err := os.Stat(v.RuntimeDir)
	if err != nil || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != uint32(v.UID) {
		t.Errorf("runtime dir %s: %v, want 0700 owned by %d", v.RuntimeDir, fi, v.UID)
	}
	other := newUser(t, "hutchtest1")
	probe := other.cmd("x").SysProcAttr
	ls := testproc.Command("/bin/ls", v.RuntimeDir)
	ls.SysProcAttr = probe
	if out, err := ls.CombinedOutput(); err == nil {
		t.Errorf("an ordinary user lists the runtime dir: %s", out)
	}
	nc := testproc.Command("/usr/bin/socat", "-", "UNIX-CONNECT:"+v.RuntimeDir+"/qmp.sock")
	nc.SysProcAttr = probe
	if out, err := nc.CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("an ordinary user connecting to qmp: %v %s", err, out)
	}
	// QEMU holds the root-only disk through a descriptor, and the guest sees it.
	held := false
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", v.Pid))
	for _, fd := range fds {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", v.Pid, fd.Name())); target == secret {
			held = true
		}
	}
	if !held {
		t.Errorf("qemu holds no descriptor of %s", secret)
	}
	r.waitLog(a, guest.Marker)
	guestShell(t, r, a, "cat /sys/block/vda/size", "32768")

	// Its console log is root's: an ordinary user cannot read it.
	cat := testproc.Command("/bin/cat", "/var/lib/hutch/vms/"+a+"/console.log")
	cat.SysProcAttr = probe
	if out, err := cat.CombinedOutput(); err == nil {
		t.Errorf("an ordinary user reads the console log: %q", tail(string(out), 200))
	}

	// A second VM gets another lease.
	r.ok("run", "-d", "--name", z, "--memory", "128M", "--kernel", guest.Kernel, "--initrd", guest.Initrd, "--network", "none")
	vz := r.inspect(z)
	if vz.UID == v.UID {
		t.Errorf("two vms share uid %d", v.UID)
	}
	if !hasLease(t, a) || !hasLease(t, z) {
		t.Errorf("leases = %+v, want both vms", leases(t))
	}

	// rm frees everything of a.
	r.ok("rm", "-f", a)
	checkGone(t, a, v)

	// kill -9 of every process of z, then any command: everything of z is gone.
	for _, pid := range []int{vz.Pid, vz.SupervisorPid} {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	waitFor(5*time.Second, func() bool { return procStatus(vz.Pid) == nil && procStatus(vz.SupervisorPid) == nil })
	r.ok("ps")
	checkGone(t, z, vz)
	if got := r.inspect(z); got.State != "stopped" {
		t.Errorf("killed vm state %q", got.State)
	}

	if got := fileFacts(t, secret); got != before {
		t.Errorf("the root-only disk changed: %s -> %s", before, got)
	}
	p2, _ := os.ReadFile("/etc/passwd")
	g2, _ := os.ReadFile("/etc/group")
	if !bytes.Equal(passwd, p2) || !bytes.Equal(group, g2) {
		t.Error("/etc/passwd or /etc/group changed")
	}
}

// checkGone asserts a system VM left no lease, runtime dir, cgroup or process.
func checkGone(t *testing.T, name string, v view) {
	t.Helper()
	if hasLease(t, name) {
		t.Errorf("%s: lease survives", name)
	}
	if _, err := os.Stat(v.RuntimeDir); !os.IsNotExist(err) {
		t.Errorf("%s: runtime dir survives: %v", name, err)
	}
	for _, c := range []string{"memory", "pids", "cpu", "unified"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", c, "hutch", name)); err == nil {
			t.Errorf("%s: cgroup %s survives", name, c)
		}
	}
	for _, pid := range []int{v.Pid, v.SupervisorPid, v.PasstPid} {
		if pid > 0 && !waitFor(5*time.Second, func() bool { return procStatus(pid) == nil }) {
			t.Errorf("%s: pid %d survives", name, pid)
		}
	}
}

// rootless = false is refused with the reason; rootless = true is accepted.
func TestSystemConfigRootless(t *testing.T) {
	r := rootUser(t)
	restore := replaceFile(t, "/etc/hutch/hutch.toml", "rootless = false\n")
	defer restore()
	res := r.run("ps")
	if res.code == 0 || !strings.Contains(res.err, "rootless = false") || !strings.Contains(res.err, "never runs a VMM as root") {
		t.Errorf("rootless = false: %v", res)
	}
	os.WriteFile("/etc/hutch/hutch.toml", []byte("rootless = true\n"), 0o644)
	r.ok("ps")
}

// inOwnUserNS reports whether pid lives in a user namespace other than the
// host's (and, so, its capabilities there are bounded by that namespace).
func inOwnUserNS(t *testing.T, pid int) bool {
	host, err1 := os.Readlink("/proc/self/ns/user")
	its, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", pid))
	if err1 != nil || err2 != nil {
		t.Fatalf("read user namespaces: %v %v", err1, err2)
	}
	return host != its
}

// An image only root can read boots in system mode, through an overlay the
// VMM holds by descriptor; the image is unchanged afterwards.
func TestSystemModeRootOnlyImage(t *testing.T) {
	r := rootUser(t)
	b := make([]byte, 3)
	rand.Read(b)
	name := "sysimg-" + hex.EncodeToString(b)
	t.Cleanup(func() { r.run("rm", "-f", name) })
	base := filepath.Join(t.TempDir(), "base.qcow2")
	copyFile(t, guest.DiskImage, base)
	os.Chmod(base, 0o600)
	before := fileFacts(t, base)
	port := freePort(t)
	r.ok("run", "-d", "--name", name, "--memory", "256M", "-p", fmt.Sprintf("%d:80", port), base)
	waitPage(t, port)
	v := r.inspect(name)
	if v.UID == 0 {
		t.Fatal("the vmm runs as root")
	}
	r.ok("rm", "-f", name)
	if got := fileFacts(t, base); got != before {
		t.Errorf("base image changed: %s -> %s", before, got)
	}
}

// psLoop runs hutch ps -a as u, over and over, until the returned
// function is called; ps tidies up after dead VMs as it lists.
func psLoop(u *tUser) (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			default:
				u.cmd("ps", "-a").Run()
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// hutch ps tidies up after dead VMs, cgroups included; a VM being started
// is not dead, though its supervisor has not recorded itself yet. Starts
// with ps running in a loop beside them all succeed.
func TestSystemStartsWhilePs(t *testing.T) {
	r := rootUser(t)
	b := make([]byte, 3)
	rand.Read(b)
	stopPs := psLoop(r)
	var names []string
	t.Cleanup(func() {
		for _, n := range names {
			r.run("rm", "-f", n)
		}
	})
	failed := 0
	for i := range 8 {
		n := fmt.Sprintf("sysps-%s-%d", hex.EncodeToString(b), i)
		names = append(names, n)
		res := r.run("run", "-d", "--name", n, "--memory", "128M", "--kernel", guest.Kernel, "--initrd", guest.Initrd,
			"--network", "none", "--accel", "tcg")
		if res.code != 0 {
			failed++
			t.Errorf("start %d with ps looping: %v", i, res)
		}
		if failed > 2 {
			break
		}
	}
	stopPs()
}

// kill -9 of root's `run -d` at random points of a system VM's start,
// with ps running in a loop beside it (which tidies): each time the VM
// either runs and ps says so, or is gone; rm -f then leaves no lease,
// cgroup, runtime dir or process of any leased id, and no two VMMs ever
// share an id.
func TestSystemFaultRunKilled(t *testing.T) {
	r := rootUser(t)
	b := make([]byte, 3)
	rand.Read(b)
	defer psLoop(r)()
	lease := config.Defaults().Leases
	leasedProcs := func() []int {
		return testproc.Targets{FirstUID: int(lease.First), CountUID: int(lease.Count)}.Match()
	}
	const trials = 12
	for i := range trials {
		n := fmt.Sprintf("sysk-%s-%d", hex.EncodeToString(b), i)
		c := r.cmd("run", "-d", "--name", n, "--memory", "64M", "--kernel", guest.Kernel, "--initrd", guest.Initrd,
			"--network", "none", "--accel", "tcg")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(mrand.IntN(400)) * time.Millisecond)
		c.Process.Kill()
		c.Wait()
		// Whatever the kill left, ps tells the truth within a moment: the
		// VM runs with a live VMM of its own id, or it is not running.
		var v view
		waitFor(30*time.Second, func() bool {
			res := r.run("inspect", n)
			if res.code != 0 {
				v = view{} // never made, or removed by the failed run
				return true
			}
			if err := json.Unmarshal([]byte(res.out), &v); err != nil {
				t.Fatalf("inspect %s: %v: %s", n, err, res.out)
			}
			return v.State != "created"
		})
		if v.State == "running" {
			// The pid is the launch stage until it execs QEMU as the lease.
			var st map[string]string
			if !waitFor(10*time.Second, func() bool {
				st = procStatus(v.Pid)
				return st != nil && strings.Fields(st["Uid"])[0] == strconv.Itoa(v.UID)
			}) {
				t.Errorf("trial %d: %s says running, VMM %d status %v", i, n, v.Pid, st)
			}
		}
		if r := r.run("rm", "-f", n); r.code != 0 && !strings.Contains(r.err, "no such vm") {
			t.Errorf("trial %d: rm -f %s: %v", i, n, r)
		}
		checkGone(t, n, v)
		// Leases are unique among what is left.
		seen := map[uint32]string{}
		for _, l := range leases(t) {
			if other, dup := seen[l.UID]; dup {
				t.Errorf("trial %d: uid %d leased to %s and %s", i, l.UID, other, l.VM)
			}
			seen[l.UID] = l.VM
		}
	}
	if !waitFor(10*time.Second, func() bool { return len(leasedProcs()) == 0 }) {
		t.Errorf("processes of leased ids remain after %d trials: %v", trials, leasedProcs())
	}
}
