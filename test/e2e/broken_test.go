package e2e

import (
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
