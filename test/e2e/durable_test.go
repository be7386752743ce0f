package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
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
