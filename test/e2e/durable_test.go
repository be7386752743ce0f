package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/test/testproc"
)

// A VM is kept: create makes it without starting it, start boots it from
// its record, stop keeps it with its disks, and start again finds what
// the guest wrote on its disk; restart does both.
func TestCreateStartKeepsDisk(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	port := freePort(t)
	if out := strings.TrimSpace(u.ok("create", "--name", "keep", "--memory", "256M", "-p", fmt.Sprintf("127.0.0.1:%d:80", port), guest.DiskImage)); out != "keep" {
		t.Fatalf("create printed %q", out)
	}
	if v := u.inspect("keep"); v.State != "created" || v.Pid != 0 {
		t.Fatalf("after create: %+v", v)
	}
	if vs := u.ps(false); len(vs) != 0 {
		t.Errorf("ps lists a created vm as running: %+v", vs)
	}
	u.ok("start", "keep")
	waitPage(t, port)
	last := "$(( $(cat /sys/block/vda/size) - 1 ))"
	guestRun(t, u, "keep", "echo keep-$((2+3)) | dd of=/dev/vda bs=512 seek="+last+" conv=notrunc 2>/dev/null; sync; echo wrote-$((3*3))", "wrote-9", time.Minute)
	u.ok("stop", "-t", "1", "keep")
	if v := psAll(t, u)["keep"]; v.State != "stopped" {
		t.Fatalf("after stop: %+v", v)
	}
	if r := u.run("start", "keep"); r.code != 0 {
		t.Fatalf("start of a stopped vm: %v", r)
	}
	waitPage(t, port)
	guestRun(t, u, "keep", "dd if=/dev/vda bs=512 skip="+last+" count=1 2>/dev/null | head -c 6; echo", "keep-5", time.Minute)
	if r := u.run("start", "keep"); r.code != 1 || !strings.Contains(r.err, "already running") {
		t.Errorf("start of a running vm: %v", r)
	}
	before := u.inspect("keep").Pid
	u.ok("restart", "-t", "1", "keep")
	if v := u.inspect("keep"); v.State != "running" || v.Pid == before {
		t.Errorf("after restart: %+v (pid was %d)", v, before)
	}
	waitPage(t, port)
}

// --disk size= gives the guest a blank disk of that size, --disk-size a
// bigger root disk; set changes a stopped VM's memory and grows its root
// disk for the next start.
func TestDisksAndSet(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	port := freePort(t)
	u.ok("create", "--name", "d", "--memory", "256M", "--disk", "size=1G", "--disk-size", "256M",
		"-p", fmt.Sprintf("127.0.0.1:%d:80", port), guest.DiskImage)
	u.ok("start", "d")
	waitPage(t, port)
	guestRun(t, u, "d", "echo sizes-$(cat /sys/block/vda/size)-$(cat /sys/block/vdb/size)-$(dd if=/dev/vdb bs=4096 count=1 2>/dev/null | tr -d '\\000' | wc -c)",
		"sizes-524288-2097152-0", time.Minute)
	if r := u.run("set", "d", "--memory", "384M"); r.code != 1 || !strings.Contains(r.err, "stop it first") {
		t.Errorf("set of a running vm: %v", r)
	}
	u.ok("stop", "-t", "1", "d")
	if r := u.run("set", "d", "--disk-size", "128M"); r.code != 2 || !strings.Contains(r.err, "a disk only grows") {
		t.Errorf("set --disk-size smaller: %v", r)
	}
	u.ok("set", "d", "--memory", "384M", "--disk-size", "512M")
	u.ok("start", "d")
	waitPage(t, port)
	v := u.inspect("d")
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", v.Pid)); !strings.Contains(string(cmdline), "\x00-m\x00384M\x00") ||
		!strings.Contains(string(cmdline), "\x00-name\x00guest=d\x00") {
		t.Errorf("QEMU after set --memory 384M: %q", cmdline)
	}
	guestRun(t, u, "d", "echo root-$(cat /sys/block/vda/size)", "root-1048576", time.Minute)
}

// A snapshot taken before a change brings the old disk back.
func TestSnapshotRestore(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	u.ok("create", "--name", "s", "--memory", "256M", "--network", "none", "--disk", "size=16M", guest.DiskImage)
	last := "$(( $(cat /sys/block/vda/size) - 1 ))"
	write := func(word string) {
		u.ok("start", "s")
		guestRun(t, u, "s", "echo "+word+" | dd of=/dev/vda bs=512 seek="+last+" conv=notrunc 2>/dev/null; echo "+word+" | dd of=/dev/vdb conv=notrunc 2>/dev/null; sync; echo done-$((4*4))", "done-16", time.Minute)
		u.ok("stop", "-t", "1", "s")
	}
	write("before")
	if r := u.run("snapshot", "create", "s", "snap1"); r.code != 0 {
		t.Fatalf("snapshot create: %v", r)
	}
	if r := u.run("snapshot", "create", "s", "snap1"); r.code != 2 || !strings.Contains(r.err, "already has a snapshot") {
		t.Errorf("second snapshot of the same name: %v", r)
	}
	write("after-")
	u.ok("snapshot", "restore", "s", "snap1")
	u.ok("start", "s")
	if r := u.run("snapshot", "create", "s", "x"); r.code != 1 || !strings.Contains(r.err, "stop it first") {
		t.Errorf("snapshot of a running vm: %v", r)
	}
	guestRun(t, u, "s", "echo got-$(dd if=/dev/vda bs=512 skip="+last+" count=1 2>/dev/null | head -c 6)-$(head -c 6 /dev/vdb)", "got-before-before", time.Minute)
	u.ok("stop", "-t", "1", "s")
	if out := u.ok("snapshot", "ls", "s"); strings.TrimSpace(out) != "snap1" {
		t.Errorf("snapshot ls = %q", out)
	}
	u.ok("snapshot", "rm", "s", "snap1")
	if out := u.ok("snapshot", "ls", "s"); strings.TrimSpace(out) != "" {
		t.Errorf("snapshot ls after rm = %q", out)
	}
}

// --restart on-failure brings a VM whose QEMU was killed back up, and
// stop still stops it for good.
func TestRestartPolicy(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	u.runGuest("rp", "--restart", "on-failure")
	v := u.inspect("rp")
	syscall.Kill(v.Pid, syscall.SIGKILL)
	var again view
	if !waitFor(30*time.Second, func() bool {
		again = u.inspect("rp")
		return again.State == "running" && again.Pid != 0 && again.Pid != v.Pid
	}) {
		t.Fatalf("after kill -9 of QEMU with --restart on-failure: %+v", again)
	}
	if again.Restarts != 1 || again.Restart != "on-failure" {
		t.Errorf("restart count %d, policy %q", again.Restarts, again.Restart)
	}
	u.ok("stop", "-t", "1", "rp")
	time.Sleep(3 * time.Second)
	if got := u.inspect("rp"); got.State != "stopped" {
		t.Errorf("stop of a --restart on-failure vm: %+v", got)
	}
	if r := u.run("run", "--rm", "--restart", "always", "--kernel", guest.Kernel); r.code != 2 || !strings.Contains(r.err, "--restart always and --rm conflict") {
		t.Errorf("--rm with --restart: %v", r)
	}
}

// More CPUs or memory than the host has is allowed, with a word each.
func TestOversizeWarns(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	r := u.run("create", "--name", "big", "--cpus", "200", "--memory", "4T", "--kernel", guest.Kernel, "--network", "none")
	if r.code != 0 || !strings.Contains(r.err, "--cpus 200 is more than this host's") || !strings.Contains(r.err, "--memory 4194304M is more than this host's") {
		t.Errorf("create with 200 CPUs and 4T: %v; want it made, with two warnings", r)
	}
}

// stop of several VMs stops them at once: each waits out its own -t.
func TestStopAtOnce(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	u.ok(cheapRun("a", 0)...)
	u.ok(cheapRun("b", 0)...)
	start := time.Now()
	r := u.run("stop", "-t", "4", "a", "b")
	if took := time.Since(start); r.code != 0 || r.out != "a\nb\n" || took > 7*time.Second {
		t.Errorf("stop -t 4 a b: %v in %s; want both, in order, in about 4 s", r, took)
	}
}

// --display vnc serves the guest's screen on a socket in the VM's private
// runtime dir; hutch vnc relays it to a 127.0.0.1 port that only the
// VM's owner may use.
func TestDisplayVNC(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	u.ok("run", "-d", "--name", "screen", "--display", "vnc", "--memory", "256M", "--network", "none", guest.DiskImage)
	sock := filepath.Join(vmRunDir(u, "screen"), "vnc.sock")
	rfb := func(c net.Conn) string {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 12)
		n, _ := io.ReadFull(c, b)
		return string(b[:n])
	}
	var c net.Conn
	if !waitFor(30*time.Second, func() bool { var err error; c, err = net.Dial("unix", sock); return err == nil }) {
		t.Fatalf("no VNC socket at %s", sock)
	}
	if got := rfb(c); got != "RFB 003.008\n" {
		t.Errorf("VNC socket greets with %q", got)
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the socket's dir: %v, %v; want 0700", fi, err)
	}
	relay := u.cmd("vnc", "screen")
	out, _ := relay.StdoutPipe()
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { relay.Process.Kill(); relay.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, _, _ := strings.Cut(line, " ")
	if err != nil || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("hutch vnc printed %q, %v", line, err)
	}
	// The owner's viewer gets the display; anyone else's connection is closed.
	viewer := u.cmd()
	viewer.Path, viewer.Args = "/bin/sh", []string{"sh", "-c", "timeout 5 socat -u TCP:" + addr + " - | head -c 12"}
	if got, _ := viewer.Output(); string(got) != "RFB 003.008\n" {
		t.Errorf("the owner through hutch vnc got %q", got)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		if got := rfb(c); got != "" {
			t.Errorf("another user (root here) through hutch vnc got %q", got)
		}
	}

	// A real VNC client's picture of the screen, kept as an artifact.
	shotDir := openDir(t)
	shot := filepath.Join(shotDir, "screen.jpg")
	os.Chown(shotDir, u.uid, u.gid)
	_, port, _ := strings.Cut(addr, ":")
	snap := u.cmd()
	snap.Path, snap.Args = "/usr/bin/timeout", []string{"timeout", "60", "vncsnapshot", "-quiet", "127.0.0.1::" + port, shot}
	if out, err := snap.CombinedOutput(); err != nil {
		t.Fatalf("vncsnapshot through hutch vnc: %v: %s", err, out)
	}
	b, err := os.ReadFile(shot)
	if err != nil || len(b) < 2048 || b[0] != 0xff || b[1] != 0xd8 {
		t.Fatalf("the screenshot is not a picture: %d bytes, %v", len(b), err)
	}
	artifacts := os.Getenv("HUTCH_TEST_ARTIFACTS")
	if artifacts == "" {
		artifacts = "/var/tmp/hutch-test-artifacts"
	}
	os.MkdirAll(artifacts, 0o755)
	keep := filepath.Join(artifacts, "vnc-screen.jpg")
	if err := os.WriteFile(keep, b, 0o644); err != nil {
		t.Errorf("keep the screenshot: %v", err)
	}
	t.Logf("screenshot of the guest's screen through hutch vnc: %s (%d bytes)", keep, len(b))
}

// generate systemd writes a unit systemd accepts, that starts and stops
// the VM with hutch itself.
func TestGenerateSystemd(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	u.ok("create", "--name", "unit", "--kernel", guest.Kernel, "--network", "none")
	unit := u.ok("generate", "systemd", "unit")
	for _, w := range []string{"ExecStart=\"" + hutchBin + "\" start \"unit\"", "ExecStop=\"" + hutchBin + "\" stop -t 30 \"unit\"", "loginctl enable-linger", "WantedBy=default.target"} {
		if !strings.Contains(unit, w) {
			t.Errorf("unit lacks %q:\n%s", w, unit)
		}
	}
	path := filepath.Join(t.TempDir(), "hutch-unit.service")
	os.WriteFile(path, []byte(unit), 0o644)
	if out, err := testproc.Command("systemd-analyze", "verify", path).CombinedOutput(); err != nil || len(out) != 0 {
		t.Errorf("systemd-analyze verify: %v: %s", err, out)
	}
	if r := u.run("generate", "systemd", "ghost"); r.code != 1 || !strings.Contains(r.err, "no such vm: ghost") {
		t.Errorf("generate systemd ghost: %v", r)
	}
}

// run --help names every network backend; --wait that gives up says the
// VM it made keeps running, and how to remove it.
func TestRunHelpAndWaitTimeout(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	if out := u.ok("run", "--help"); !strings.Contains(out, "slirp, passt, none or bridge=BR") {
		t.Errorf("run --help does not list the networks:\n%s", out)
	}
	// The test disk has no ssh server: the wait can only time out.
	r := u.run("run", "--name", "nossh", "--memory", "256M", "--ssh", "--wait", "--wait-timeout", "5s", guest.DiskImage)
	if r.code != 1 || !strings.Contains(r.err, "no ssh login within 5s") || !strings.Contains(r.err, "vm nossh keeps running (hutch rm -f nossh removes it)") {
		t.Errorf("run --wait timing out: %v", r)
	}
	if v := u.inspect("nossh"); v.State != "running" {
		t.Errorf("after the wait gave up: %+v", v)
	}
}

var guestAddrRE = regexp.MustCompile(`hutch-guest: eth0 ([0-9.]+)/\d+\r?\n`)

// inspect's guestIP is the address the guest's DHCP client was given, on
// slirp and on passt alike.
func TestGuestIP(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	for _, network := range []string{"slirp", "passt"} {
		name := "ip-" + network
		u.runGuest(name, "--network", network)
		var got string
		if !waitFor(2*time.Minute, func() bool {
			// The prefix length ends the line: a log read while the guest
			// is still printing may hold only part of the address.
			if m := guestAddrRE.FindStringSubmatch(u.run("logs", name).out); m != nil {
				got = m[1]
				return true
			}
			return false
		}) {
			t.Fatalf("%s: the guest never reported its address:\n%s", network, tail(u.run("logs", name).out, 1000))
		}
		if v := u.inspect(name); v.GuestIP != got || got == "" {
			t.Errorf("%s: inspect guestIP %q, the guest has %q", network, v.GuestIP, got)
		}
	}
}
