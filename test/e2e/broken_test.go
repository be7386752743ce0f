package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// One VM's record emptied (a full disk, a crash mid-write by something
// other than hutch): ps still lists every VM and shows that one broken,
// stop names the way out, and rm -f stops what runs for it and removes it.
func TestBrokenRecord(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	u.ok(cheapRun("good", 0)...)
	u.ok(cheapRun("bad", 0)...)
	bad := u.inspect("bad")
	if err := os.WriteFile(filepath.Join(vmDataDir(u, "bad"), "vm.json"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	vs := psAll(t, u)
	if vs["good"].State != "running" || vs["bad"].State != "broken" || !strings.Contains(vs["bad"].Reason, "hutch rm -f bad") {
		t.Fatalf("ps -a with one empty record = %+v; want good running and bad broken", vs)
	}
	if r := u.run("ps"); r.code != 0 || !strings.Contains(r.out, "good") {
		t.Errorf("ps: %v", r)
	}
	for _, verb := range []string{"stop", "kill", "rm"} {
		if r := u.run(verb, "bad"); r.code != 1 || !strings.Contains(r.err, "unreadable record") || !strings.Contains(r.err, "hutch rm -f bad") {
			t.Errorf("%s of a broken vm: %v; want exit 1 naming rm -f", verb, r)
		}
	}
	u.ok("rm", "-f", "bad")
	if !waitFor(10*time.Second, func() bool { return procStatus(bad.Pid) == nil && procStatus(bad.SupervisorPid) == nil }) {
		t.Errorf("rm -f left the broken vm's QEMU %d or supervisor %d running", bad.Pid, bad.SupervisorPid)
	}
	if _, err := os.Stat(vmDataDir(u, "bad")); !os.IsNotExist(err) {
		t.Errorf("rm -f left %s: %v", vmDataDir(u, "bad"), err)
	}
	if vs := psAll(t, u); len(vs) != 1 || vs["good"].State != "running" {
		t.Errorf("ps -a after rm -f bad = %+v", vs)
	}
}

// console and stop reach a VM through the runtime dir it was started
// with, whatever $XDG_RUNTIME_DIR the caller has now (a new login, or
// none at all).
func TestRecordedRuntimeDir(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	u.ok("run", "-d", "--name", "rd", "--memory", "256M", "--kernel", guest.Kernel, "--initrd", guest.Initrd,
		"--append", "console=ttyS0", "--network", "none")
	other := *u
	other.env = nil
	for _, e := range u.env {
		if !strings.HasPrefix(e, "XDG_RUNTIME_DIR=") {
			other.env = append(other.env, e)
		}
	}
	guestRun(t, &other, "rd", "echo via-$((40+2))", "via-42", time.Minute)
	if r := other.run("stop", "-t", "1", "rd"); r.code != 0 {
		t.Errorf("stop without XDG_RUNTIME_DIR: %v", r)
	}
	if v := u.inspect("rd"); v.State != "stopped" {
		t.Errorf("after stop: %+v", v)
	}
}

// An IPv4-mapped IPv6 host address is the IPv4 address it maps.
func TestMappedIPv4Publish(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	port := freePort(t)
	u.ok("run", "-d", "--name", "mapped", "--memory", "256M", "--kernel", guest.Kernel, "--initrd", guest.Initrd,
		"--append", "console=ttyS0", "-p", fmt.Sprintf("[::ffff:127.0.0.1]:%d:80", port))
	if body := waitPage(t, port); !strings.Contains(body, "hutch test guest") {
		t.Fatalf("page = %q", body)
	}
}

// A cached image a VM boots from, and a VM's disk another VM attaches,
// are not removed from under them: image rm and rm refuse, naming the user.
func TestInUseRefused(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	u.ok("image", "import", "--name", "base", guest.DiskImage)
	u.ok("run", "-d", "--name", "a", "--memory", "128M", "--network", "none", "base")
	if r := u.run("image", "rm", "base"); r.code != 1 || !strings.Contains(r.err, "image base is used by vm a") {
		t.Errorf("image rm of an image a vm boots from: %v", r)
	}
	u.ok("kill", "a")
	overlay := filepath.Join(vmDataDir(u, "a"), "disk0.qcow2")
	u.ok("run", "-d", "--name", "b", "--memory", "128M", "--network", "none", "--kernel", guest.Kernel,
		"--initrd", guest.Initrd, "--disk", overlay+",format=qcow2,ro")
	for _, args := range [][]string{{"rm", "a"}, {"rm", "-f", "a"}} {
		if r := u.run(args...); r.code != 1 || !strings.Contains(r.err, `vm "a" holds a disk that vm b uses`) {
			t.Errorf("%v while b uses a's overlay: %v", args, r)
		}
	}
	if _, err := os.Stat(overlay); err != nil {
		t.Fatalf("a's overlay is gone: %v", err)
	}
	u.ok("rm", "-f", "b")
	u.ok("rm", "a")
	u.ok("image", "rm", "base")
}
