package store

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type rec struct{ N int }

func testLayout(t *testing.T) Layout {
	d := t.TempDir()
	l := Layout{RunRoot: filepath.Join(d, "run"), DataRoot: filepath.Join(d, "data")}
	for _, p := range []string{filepath.Join(l.RunRoot, vmsDir), l.VMsDir()} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func TestCreateTakesANameOnce(t *testing.T) {
	l := testLayout(t)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- Create(l, "web", rec{i}, nil)
		}(i)
	}
	wg.Wait()
	close(errs)
	won := 0
	for err := range errs {
		switch err {
		case nil:
			won++
		case ErrExists:
		default:
			t.Errorf("Create: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d creators got the name, want 1", won)
	}
	names, _ := Names(l)
	if len(names) != 1 || names[0] != "web" {
		t.Errorf("Names = %v (staging dirs must not show)", names)
	}
}

func TestUpdateIsSerialised(t *testing.T) {
	l := testLayout(t)
	if err := Create(l, "web", rec{}, nil); err != nil {
		t.Fatal(err)
	}
	p := l.VM("web")
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := Update(p, func(r *rec) error { r.N++; return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	r, err := Load[rec](p)
	if err != nil || r.N != 50 {
		t.Fatalf("after 50 updates: %+v, %v", r, err)
	}
	if err := Remove(l, "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := Load[rec](p); err != ErrNotFound {
		t.Errorf("Load after Remove: %v", err)
	}
	if err := Update(p, func(r *rec) error { return nil }); err != ErrNotFound {
		t.Errorf("Update after Remove: %v", err)
	}
}

func TestSweepRemovesLeftoversOfDeadCommands(t *testing.T) {
	l := testLayout(t)
	self, _ := Self()
	dead := filepath.Join(l.VMsDir(), ".new-999999-1-abcd-web")
	live := filepath.Join(l.VMsDir(), fmt.Sprintf(".rm-%d-%d-abcd-db", self.Pid, self.Start))
	for _, d := range []string{dead, live} {
		os.Mkdir(d, 0o700)
	}
	Sweep(l)
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("staging dir of a dead command survives Sweep")
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("Sweep removed the dir of a live command: %v", err)
	}
}

// A removal killed after moving the data dir away leaves trash; a new VM
// of the same name made since then keeps its runtime dir (its sockets)
// when the trash is swept, and with no new VM the old one's goes.
func TestSweepSparesANewVMOfTheSameName(t *testing.T) {
	l := testLayout(t)
	for _, n := range []string{"web", "db"} {
		os.Mkdir(filepath.Join(l.VMsDir(), ".rm-999999-1-abcd-"+n), 0o700)
		os.MkdirAll(l.VM(n).Run, 0o700)
		os.WriteFile(filepath.Join(l.VM(n).Run, "qmp.sock"), nil, 0o600)
	}
	os.MkdirAll(l.VM("web").Data, 0o700) // web was made again
	Sweep(l)
	if _, err := os.Stat(filepath.Join(l.VM("web").Run, "qmp.sock")); err != nil {
		t.Errorf("Sweep of old trash removed the new web's socket: %v", err)
	}
	if _, err := os.Stat(l.VM("db").Run); !os.IsNotExist(err) {
		t.Errorf("Sweep left the runtime dir of removed db: %v", err)
	}
}

func TestEnsurePrivateDirRefusesLooseDirs(t *testing.T) {
	d := t.TempDir()
	uid := os.Getuid()
	loose := filepath.Join(d, "loose")
	os.Mkdir(loose, 0o755)
	if err := ensurePrivateDir(loose, uid, true); err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Errorf("0755 dir: %v", err)
	}
	link := filepath.Join(d, "link")
	os.Symlink(loose, link)
	if err := ensurePrivateDir(link, uid, true); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("symlink: %v", err)
	}
	if err := ensurePrivateDir(filepath.Join(d, "fresh"), uid, true); err != nil {
		t.Errorf("fresh dir: %v", err)
	}
	if err := ensurePrivateDir(filepath.Join(d, "fresh"), uid+1, false); err == nil || !strings.Contains(err.Error(), "owned by uid") {
		t.Errorf("foreign owner: %v", err)
	}
}

func TestWriteJSONLeavesNoTemporaries(t *testing.T) {
	d := t.TempDir()
	p := filepath.Join(d, "x.json")
	for i := 0; i < 3; i++ {
		if err := WriteJSON(p, rec{i}); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(d)
	if len(ents) != 1 {
		t.Errorf("dir holds %d entries, want only x.json", len(ents))
	}
}

func TestProcAlive(t *testing.T) {
	self, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	if !self.Alive() {
		t.Error("self is not alive")
	}
	if (Proc{Pid: self.Pid, Start: self.Start + 1}).Alive() {
		t.Error("a pid with another start time counts as alive")
	}
	if (Proc{}).Alive() {
		t.Error("the zero Proc is alive")
	}
}

// A lock holder that is stopped (Ctrl-Z) is named at once instead of
// blocking the waiter forever; a busy one is waited for up to the bound.
func TestAcquireWithinNamesAStoppedHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ports.lock")
	// The holder: a shell holding the lock, then stopping itself.
	holder := exec.Command("sh", "-c", "exec 9>>"+path+"; flock 9; echo $$ > "+path+"; echo held; kill -STOP $$; exec sleep 60")
	out, _ := holder.StdoutPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(out, buf); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", holder.Process.Pid)); strings.Contains(string(st), ") T ") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	_, err := AcquireWithin(path, time.Minute)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", holder.Process.Pid)) || !strings.Contains(err.Error(), "is stopped") {
		t.Fatalf("AcquireWithin with a stopped holder: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("gave up after %s, want at once", took)
	}
	holder.Process.Kill() // SIGKILL ends a stopped process too
	holder.Wait()
	lk, err := AcquireWithin(path, 5*time.Second)
	if err != nil {
		t.Fatalf("after the holder died: %v", err)
	}
	lk.Release()
}

// On a full filesystem a record is still updated, over its own blocks:
// how a VM ended must not be lost to a full disk.
func TestWriteJSONOnAFullFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a small tmpfs: run it as root (make test does)")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	path := filepath.Join(dir, "vm.json")
	if err := WriteJSON(path, rec{N: 1}); err != nil {
		t.Fatal(err)
	}
	filler, _ := os.Create(filepath.Join(dir, "filler"))
	for {
		if _, err := filler.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	filler.Close()
	if err := WriteJSON(path, rec{N: 2}); err != nil {
		t.Fatalf("WriteJSON on a full filesystem: %v", err)
	}
	var got rec
	if err := ReadJSON(path, &got); err != nil || got.N != 2 {
		t.Fatalf("after the write: %+v, %v", got, err)
	}
}
