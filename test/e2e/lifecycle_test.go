package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/internal/accel"
	"github.com/hutch-vm/hutch/test/testproc"
)

// expectedAccel is what hutch must pick for u: kvm only if the probe hutch
// runs, taken here as root, finds a KVM that runs guests, and u may open
// the device with the credentials hutch runs with.
func (u *tUser) expectedAccel() string {
	if !accel.ProbeDevice(accel.Device).Usable {
		return accel.TCG
	}
	if u.uid != 0 {
		open := u.cmd()
		open.Path, open.Args = "/bin/sh", []string{"sh", "-c", "exec 3<>" + accel.Device}
		if open.Run() != nil {
			return accel.TCG
		}
	}
	return accel.KVM
}

// The whole life of a session VM as an ordinary user.
func TestSessionLifecycle(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	port := u.runGuest("web")

	if body := waitPage(t, port); !strings.Contains(body, "hutch test guest") {
		t.Fatalf("page = %q", body)
	}

	vs := u.ps(false)
	if len(vs) != 1 || vs[0].Name != "web" || vs[0].State != "running" {
		t.Fatalf("ps = %+v, want web running", vs)
	}
	table := u.ok("ps")
	if !strings.Contains(table, "web") || !strings.Contains(table, "running") {
		t.Errorf("ps table does not list web running:\n%s", table)
	}

	v := u.inspect("web")
	if v.State != "running" || v.UID != u.uid || v.GID != u.gid || v.Accel != u.expectedAccel() {
		t.Errorf("inspect = %+v", v)
	}
	if len(v.Ports) != 1 || v.Ports[0].HostIP != "127.0.0.1" || v.Ports[0].HostPort != port || v.Ports[0].GuestPort != 80 || v.Ports[0].Protocol != "tcp" {
		t.Errorf("inspect ports = %+v", v.Ports)
	}
	if v.Created == "" || v.ExitCode != nil {
		t.Errorf("inspect created %q exitCode %v", v.Created, v.ExitCode)
	}
	st := procStatus(v.Pid)
	comm, _ := os.ReadFile("/proc/" + strconv.Itoa(v.Pid) + "/comm")
	if st == nil || !strings.HasPrefix(string(comm), "qemu-system") {
		t.Fatalf("inspect pid %d is not a qemu process (comm %q)", v.Pid, comm)
	}
	if uid := strings.Fields(st["Uid"]); uid[0] != strconv.Itoa(u.uid) || uid[1] != strconv.Itoa(u.uid) {
		t.Errorf("qemu Uid = %q, want %d", st["Uid"], u.uid)
	}
	if st["NoNewPrivs"] != "1" || st["Seccomp"] != "2" {
		t.Errorf("qemu NoNewPrivs %q Seccomp %q, want 1 and 2 (QEMU's sandbox)", st["NoNewPrivs"], st["Seccomp"])
	}
	fi, err := os.Stat(v.RuntimeDir)
	if err != nil || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != uint32(u.uid) {
		t.Errorf("runtime dir %s: %v, want 0700 owned by %d", v.RuntimeDir, fi, u.uid)
	}
	// What a session VM can have of the system VM's limits, it has.
	limits, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", v.Pid))
	for _, want := range []string{`Max core file size\s+0\s+0`, `Max open files\s+4096\s+4096`} {
		if !regexp.MustCompile(want).Match(limits) {
			t.Errorf("qemu limits lack %q:\n%s", want, limits)
		}
	}

	u.waitLog("web", guest.Marker)
	if got := strings.TrimSpace(u.ok("port", "web")); got != "80/tcp -> 127.0.0.1:"+strconv.Itoa(port) {
		t.Errorf("port = %q", got)
	}

	// The console, through a real terminal: type a command, see it run,
	// detach with Ctrl-].
	consoleSession(t, u, "web")
	if got := u.inspect("web").State; got != "running" {
		t.Fatalf("after detaching, vm is %s, want running", got)
	}

	// The test guest runs no ACPI daemon: it ignores the power button, so
	// stop has to terminate QEMU, and must say so rather than call it clean.
	start := time.Now()
	r := u.run("stop", "-t", "5", "web")
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("stop -t 5 took %s", d)
	}
	if r.code != 0 || !strings.Contains(r.err, "did not power off within 5s; terminating its QEMU") {
		t.Errorf("stop of a guest that ignores ACPI: %v; want a warning that QEMU was terminated", r)
	}
	v2 := u.inspect("web")
	if v2.State != "stopped" || v2.ExitCode == nil || *v2.ExitCode != 143 || v2.Pid != 0 || !strings.Contains(v2.Reason, "terminated by hutch stop") {
		t.Errorf("after a forced stop: %+v (exit %v); want 143, terminated by hutch stop", v2, v2.ExitCode)
	}
	for _, pid := range []int{v.Pid, v.SupervisorPid} {
		if procStatus(pid) != nil {
			t.Errorf("pid %d still runs after stop", pid)
		}
	}
	if _, err := os.Stat(v.RuntimeDir); !os.IsNotExist(err) {
		t.Errorf("runtime dir %s survives stop: %v", v.RuntimeDir, err)
	}
	if vs := u.ps(false); len(vs) != 0 {
		t.Errorf("ps without -a lists a stopped vm: %+v", vs)
	}
	u.ok("rm", "web")
	if r := u.run("inspect", "web"); r.code != 1 || !strings.Contains(r.err, "no such vm") {
		t.Errorf("inspect after rm: %v", r)
	}
	if left := strings.TrimSpace(u.tree()); strings.Contains(left, "/web") {
		t.Errorf("files of web remain after rm:\n%s", left)
	}
}

// consoleSession attaches `hutch console` on a pty, runs a command in the
// guest's shell and detaches.
func consoleSession(t *testing.T, u *tUser, name string) {
	t.Helper()
	master, slave := openPty(t)
	defer master.Close()
	c := u.cmd("console", name)
	c.Stdin, c.Stdout, c.Stderr = slave, slave, slave
	c.SysProcAttr.Setsid = true
	c.SysProcAttr.Setctty = true
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	out := &syncBuffer{}
	go io.Copy(out, master)

	token := strconv.FormatInt(time.Now().UnixNano(), 36)
	// The arithmetic runs in the guest: the answer is not in what we type.
	if !waitFor(30*time.Second, func() bool {
		master.Write([]byte("echo " + token + "-$((6*7))\r"))
		return waitFor(2*time.Second, func() bool { return strings.Contains(out.String(), token+"-42") })
	}) {
		t.Fatalf("guest shell did not answer through hutch console; saw:\n%s", tail(out.String(), 2000))
	}
	master.Write([]byte{0x1d})
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("hutch console after Ctrl-]: %v; output:\n%s", err, tail(out.String(), 500))
		}
	case <-time.After(10 * time.Second):
		c.Process.Kill()
		t.Fatal("hutch console did not detach on Ctrl-]")
	}
	if !waitFor(3*time.Second, func() bool { return strings.Contains(out.String(), "detached") }) {
		t.Errorf("console did not say it detached: %q", tail(out.String(), 300))
	}
}

// An attached run shows the console and returns when the guest powers off;
// with --rm the VM then disappears by itself.
func TestRunAttachedRemovesOnPoweroff(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	c := u.cmd("run", "--rm", "--name", "once", "--memory", "256M", "--kernel", guest.Kernel,
		"--initrd", guest.Initrd, "--append", "console=ttyS0 hutch.poweroff=1")
	c.Stdin = strings.NewReader("")
	done := make(chan result, 1)
	go func() { done <- u.runCmd(c) }()
	var r result
	select {
	case r = <-done:
	case <-time.After(bootTimeout):
		t.Fatal("attached run did not return after the guest powered off")
	}
	if r.code != 0 || !strings.Contains(r.out, guest.Marker) {
		t.Fatalf("attached run: %v", r)
	}
	if !waitFor(10*time.Second, func() bool { return u.run("inspect", "once").code != 0 }) {
		t.Fatalf("--rm vm still exists after poweroff: %v", u.run("inspect", "once"))
	}
	if left := u.tree(); strings.Contains(left, "/once") {
		t.Errorf("files of a --rm vm remain:\n%s", left)
	}

	// Detached, the same: it goes away on its own.
	u.ok("run", "-d", "--rm", "--name", "bg", "--memory", "256M", "--kernel", guest.Kernel,
		"--initrd", guest.Initrd, "--append", "console=ttyS0 hutch.poweroff=1")
	if !waitFor(bootTimeout, func() bool { return u.run("inspect", "bg").code != 0 }) {
		t.Fatalf("detached --rm vm still exists: %v", u.run("inspect", "bg"))
	}
}

// Descriptors hutch's caller leaks (opened without close-on-exec) never
// reach QEMU or passt: they get exactly what the plan lists.
func TestNoDescriptorLeaks(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	canary := openDir(t) + "/canary"
	os.WriteFile(canary, nil, 0o644)
	f, err := os.Open(canary)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := u.cmd("run", "-d", "--name", "leak", "--memory", "128M", "--network", "passt", "--kernel", guest.Kernel, "--initrd", guest.Initrd)
	c.ExtraFiles = []*os.File{f, f, f} // fds 3, 4, 5 of hutch run
	if r := u.runCmd(c); r.code != 0 {
		t.Fatalf("run: %v", r)
	}
	v := u.inspect("leak")
	for what, pid := range map[string]int{"supervisor": v.SupervisorPid, "qemu": v.Pid, "passt": v.PasstPid} {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); target == canary && what != "supervisor" {
				t.Errorf("%s (pid %d) holds the caller's descriptor as fd %s", what, pid, fd.Name())
			}
		}
	}
}

// A disk image boots through an overlay; the base is never written.
func TestDiskImageBootsThroughOverlay(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	// The user owns this copy and could write it: only the overlay keeps it intact.
	base := openDir(t) + "/base.qcow2"
	copyFile(t, guest.DiskImage, base)
	os.Chown(base, u.uid, u.gid)
	before := fileFacts(t, base)

	port := freePort(t)
	u.ok("run", "-d", "--name", "vm2", "--memory", "256M", "-p", strconv.Itoa(port)+":80", base)
	waitPage(t, port)
	// QEMU holds the overlay read-write and the base read-only, both as
	// descriptors: it opens no image path itself.
	var overlayRW, baseRO, baseRW bool
	for _, d := range u.inspect("vm2").Descriptors {
		overlayRW = overlayRW || (strings.HasSuffix(d.Path, "/disk0.qcow2") && d.Write)
		baseRO = baseRO || (d.Path == base && !d.Write)
		baseRW = baseRW || (d.Path == base && d.Write)
	}
	if !overlayRW || !baseRO || baseRW {
		t.Errorf("descriptors: overlay read-write %v, base read-only %v, base read-write %v", overlayRW, baseRO, baseRW)
	}
	if got := fileFacts(t, base); got != before {
		t.Errorf("base image changed while running: %s -> %s", before, got)
	}
	u.ok("rm", "-f", "vm2")
	if got := fileFacts(t, base); got != before {
		t.Errorf("base image changed after rm: %s -> %s", before, got)
	}
}

// kill -9 of the supervisor or of QEMU: ps tells the truth, rm cleans up.
func TestKilledProcessesAreReported(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	u.runGuest("a")
	u.runGuest("b")
	va, vb := u.inspect("a"), u.inspect("b")

	syscall.Kill(va.SupervisorPid, syscall.SIGKILL)
	syscall.Kill(vb.Pid, syscall.SIGKILL)
	if !waitFor(10*time.Second, func() bool { return procStatus(va.Pid) == nil }) {
		t.Errorf("qemu %d outlived its killed supervisor", va.Pid)
	}
	if !waitFor(10*time.Second, func() bool { return procStatus(vb.SupervisorPid) == nil }) {
		t.Errorf("supervisor %d outlived its killed qemu", vb.SupervisorPid)
	}
	a := u.inspect("a")
	if a.State != "stopped" || !strings.Contains(a.Reason, "supervisor died") {
		t.Errorf("after kill -9 of the supervisor: state %s reason %q", a.State, a.Reason)
	}
	b := u.inspect("b")
	if b.State != "stopped" || !strings.Contains(b.Reason, "signal SIGKILL") || b.ExitCode == nil || *b.ExitCode != 137 {
		t.Errorf("after kill -9 of qemu: %+v", b)
	}
	if vs := u.ps(false); len(vs) != 0 {
		t.Errorf("ps lists dead vms as running: %+v", vs)
	}
	u.ok("rm", "a", "b")
	if left := u.tree(); strings.Contains(left, "/vms/a") || strings.Contains(left, "/vms/b") {
		t.Errorf("files remain after rm:\n%s", left)
	}
}

// Two users, one name: no clash, and neither can reach the other's VM.
func TestUsersAreIsolated(t *testing.T) {
	t.Parallel()
	u1, u2 := newUser(t, "hutchtest1"), newUser(t, "hutchtest2")
	u1.runGuest("web")
	u2.runGuest("web")
	v1, v2 := u1.inspect("web"), u2.inspect("web")
	if v1.Pid == v2.Pid || v1.RuntimeDir == v2.RuntimeDir {
		t.Fatalf("the two users' vms share a process or runtime dir: %+v %+v", v1, v2)
	}
	if len(u2.ps(true)) != 1 {
		t.Errorf("user 2 sees vms that are not its own: %+v", u2.ps(true))
	}
	// user 2 against user 1's sockets and logs.
	probe := u2.cmd("x") // only for its credentials
	for _, target := range []string{v1.RuntimeDir + "/console.sock", v1.RuntimeDir + "/qmp.sock"} {
		c := testproc.Command("/usr/bin/env", "socat", "-", "UNIX-CONNECT:"+target)
		c.SysProcAttr = probe.SysProcAttr
		c.Env = u2.env
		out, err := c.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Permission denied") {
			t.Errorf("user 2 connecting to %s: err %v, output %q; want permission denied", target, err, out)
		}
	}
	c := testproc.Command("/bin/ls", v1.RuntimeDir)
	c.SysProcAttr = probe.SysProcAttr
	if out, err := c.CombinedOutput(); err == nil {
		t.Errorf("user 2 can list user 1's runtime dir: %s", out)
	}
	// Stopping "web" as user 2 stops user 2's own VM only.
	u2.ok("stop", "-t", "1", "web")
	if u1.inspect("web").State != "running" {
		t.Error("user 2's stop touched user 1's vm")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fileFacts is a file's checksum, owner and mode.
func fileFacts(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	st := fi.Sys().(*syscall.Stat_t)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]) + " " + strconv.Itoa(int(st.Uid)) + ":" + strconv.Itoa(int(st.Gid)) + " " + fi.Mode().String()
}
