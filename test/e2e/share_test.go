package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/test/hostproc"
)

// userDir is a directory user u owns, holding one file.
func userDir(t *testing.T, u *tUser, file, content string) string {
	t.Helper()
	dir := filepath.Join(openDir(t), "share")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, file)} {
		if err := os.Chown(p, u.uid, u.gid); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// assertNoHostPrivilege: no process of the VM runs as root, and none has a
// capability in the host's user namespace (virtiofsd's count only in its
// own).
func assertNoHostPrivilege(t *testing.T, u *tUser, name string) {
	t.Helper()
	v := u.inspect(name)
	hostNS, _ := os.Readlink("/proc/1/ns/user")
	var names []string
	fs := 0
	for _, p := range append([]int{v.SupervisorPid}, hostproc.Descendants(v.SupervisorPid)...) {
		st := procStatus(p)
		if st == nil {
			continue
		}
		names = append(names, st["Name"])
		if st["Name"] == "virtiofsd" {
			fs++
		}
		for _, field := range []string{"Uid", "Gid"} {
			for _, id := range strings.Fields(st[field]) {
				if id == "0" {
					t.Errorf("%s (%d) of vm %s has %s %q", st["Name"], p, name, field, st[field])
				}
			}
		}
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", p))
		if ns == hostNS && st["CapEff"] != "0000000000000000" {
			t.Errorf("%s (%d) of vm %s has capabilities %s in the host's user namespace", st["Name"], p, name, st["CapEff"])
		}
	}
	if fs == 0 {
		t.Errorf("vm %s has no virtiofsd among its processes %v", name, names)
	}
}

// TestShareMicroVM: -v in the micro VM, which hutch's own init mounts.
func TestShareMicroVM(t *testing.T) {
	u := newUser(t, "hutchtest1")
	rw := userDir(t, u, "in.txt", "from-the-host\n")
	ro := userDir(t, u, "ro.txt", "read-only\n")
	u.ok("run", "-d", "--name", "share", "--memory", "256M", "-v", rw+":/data", "--volume", ro+":/srv/ro:ro")
	u.waitLog("share", "exit the shell to power off")

	var shares []struct {
		Source   string `json:"source"`
		Target   string `json:"target"`
		ReadOnly bool   `json:"readOnly"`
	}
	var raw map[string]json.RawMessage
	json.Unmarshal([]byte(u.ok("inspect", "share")), &raw)
	json.Unmarshal(raw["shares"], &shares)
	if len(shares) != 2 || shares[0].Source != rw || shares[0].Target != "/data" || shares[0].ReadOnly ||
		shares[1].Target != "/srv/ro" || !shares[1].ReadOnly {
		t.Errorf("inspect shares = %s", raw["shares"])
	}
	assertNoHostPrivilege(t, u, "share")

	guestRun(t, u, "share", "cat /data/in.txt /srv/ro/ro.txt", "read-only", 60*time.Second)
	guestRun(t, u, "share", "echo guest-$((6*7)) > /data/out.txt && mkdir /data/made && echo wrote-ok", "wrote-ok", 30*time.Second)
	guestRun(t, u, "share", "echo x > /srv/ro/new.txt; echo status=$?", "status=1", 30*time.Second)
	if b, err := os.ReadFile(filepath.Join(rw, "out.txt")); err != nil || string(b) != "guest-42\n" {
		t.Fatalf("the guest's write did not reach the host: %q, %v", b, err)
	}
	for _, p := range []string{"out.txt", "made"} {
		fi, err := os.Stat(filepath.Join(rw, p))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != u.uid || int(st.Gid) != u.gid {
			t.Errorf("%s written by the guest is owned by %d:%d, want the user %d:%d", p, st.Uid, st.Gid, u.uid, u.gid)
		}
	}
	if _, err := os.Stat(filepath.Join(ro, "new.txt")); err == nil {
		t.Errorf("a write to a :ro share reached the host")
	}
	u.ok("rm", "-f", "share")
}

// TestShareBadInput: each mistake is one line, exit 2, and nothing made.
func TestShareBadInput(t *testing.T) {
	u := newUser(t, "hutchtest1")
	dir := userDir(t, u, "f", "x")
	cases := []struct {
		volume, want string
	}{
		{filepath.Join(dir, "missing") + ":/data", "does not exist"},
		{filepath.Join(dir, "f") + ":/data", "is not a directory"},
		{dir + ":data", "is relative"},
		{dir + ":/", "cannot cover the guest's /"},
		{"/:/host", "whole filesystem"},
		{filepath.Join(u.dataDir, "hutch") + ":/state:ro", "inside hutch's own state"},
		{u.dataDir + ":/state", "holds hutch's own state"},
		{dir + ":/data:rx", "unknown option"},
		{dir + ":/da ta", "space"},
	}
	for _, c := range cases {
		r := u.run("run", "-d", "--name", "bad", "-v", c.volume)
		if r.code != 2 || !strings.Contains(r.err, c.want) || strings.Count(strings.TrimSpace(r.err), "\n") != 0 {
			t.Errorf("-v %s: %v; want exit 2 and one line with %q", c.volume, r, c.want)
		}
	}
	r := u.run("run", "-d", "--name", "bad", "-v", dir+":/data", "-v", dir+":/data/")
	if r.code != 2 || !strings.Contains(r.err, "already the guest path") {
		t.Errorf("two shares at one guest path: %v", r)
	}
	if vs := u.ps(true); len(vs) != 0 {
		t.Errorf("bad -v left vms behind: %+v", vs)
	}
}

// TestShareKilledSupervisor: a supervisor killed with SIGKILL takes the
// VM's file server with it, and rm -f clears the record.
func TestShareKilledSupervisor(t *testing.T) {
	u := newUser(t, "hutchtest1")
	dir := userDir(t, u, "in.txt", "x\n")
	u.ok("run", "-d", "--name", "killfs", "--memory", "256M", "-v", dir+":/data")
	v := u.inspect("killfs")
	procs := append([]int{v.SupervisorPid}, hostproc.Descendants(v.SupervisorPid)...)
	if err := syscall.Kill(v.SupervisorPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool {
		for _, p := range procs {
			if procStatus(p) != nil {
				return false
			}
		}
		return true
	}) {
		var left []string
		for _, p := range procs {
			if st := procStatus(p); st != nil {
				left = append(left, fmt.Sprintf("%s (%d)", st["Name"], p))
			}
		}
		t.Fatalf("after the supervisor's SIGKILL these still run: %v", left)
	}
	u.ok("rm", "-f", "killfs")
}
