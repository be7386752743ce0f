package identity

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hutch-vm/hutch/internal/store"
)

// The helper-process half of TestAcquireAcrossProcesses: when the test
// binary is re-executed with helperEnv set, it leases ids for the VMs named
// in the environment, prints them, and exits without running any test.
const helperEnv = "HUTCH_TEST_LEASE_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		if err := leaseHelper(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func leaseHelper() error {
	first, _ := strconv.ParseUint(os.Getenv("LEASE_FIRST"), 10, 32)
	count, _ := strconv.ParseUint(os.Getenv("LEASE_COUNT"), 10, 32)
	pid, _ := strconv.Atoi(os.Getenv("LEASE_HOLDER_PID"))
	start, _ := strconv.ParseUint(os.Getenv("LEASE_HOLDER_START"), 10, 64)
	l := &Ledger{Path: os.Getenv("LEASE_PATH"), First: uint32(first), Count: uint32(count), Taken: noneTaken{}}
	for _, vm := range strings.Fields(os.Getenv("LEASE_VMS")) {
		lease, err := l.Acquire(vm, store.Proc{Pid: pid, Start: start})
		if err != nil {
			return err
		}
		fmt.Printf("%s %d\n", vm, lease.UID)
	}
	return nil
}

type noneTaken struct{}

func (noneTaken) UIDTaken(uint32) bool { return false }
func (noneTaken) GIDTaken(uint32) bool { return false }

// fakeTaken marks single uids and gids as used by the host.
type fakeTaken struct{ uids, gids map[uint32]bool }

func (f fakeTaken) UIDTaken(id uint32) bool { return f.uids[id] }
func (f fakeTaken) GIDTaken(id uint32) bool { return f.gids[id] }

func self(t *testing.T) store.Proc {
	t.Helper()
	p, err := store.Self()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// deadProc is a process that existed and has been reaped.
func deadProc(t *testing.T) store.Proc {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p, err := store.ProcOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Fatal("reaped process still alive")
	}
	return p
}

func newLedger(t *testing.T, first, count uint32) *Ledger {
	return &Ledger{Path: filepath.Join(t.TempDir(), "leases.json"), First: first, Count: count, Taken: noneTaken{}}
}

func TestAcquireConcurrent(t *testing.T) {
	const n = 50
	l := newLedger(t, 5000, n)
	me := self(t)
	var wg sync.WaitGroup
	leases := make([]Lease, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			leases[i], errs[i] = l.Acquire(fmt.Sprintf("vm%d", i), me)
		})
	}
	wg.Wait()
	seen := map[uint32]string{}
	for i, lease := range leases {
		if errs[i] != nil {
			t.Fatalf("vm%d: %v", i, errs[i])
		}
		if lease.UID != lease.GID {
			t.Errorf("%s: uid %d != gid %d", lease.VM, lease.UID, lease.GID)
		}
		if lease.UID < 5000 || lease.UID >= 5000+n {
			t.Errorf("%s: uid %d outside the range", lease.VM, lease.UID)
		}
		if other, dup := seen[lease.UID]; dup {
			t.Errorf("uid %d leased to both %s and %s", lease.UID, other, lease.VM)
		}
		seen[lease.UID] = lease.VM
	}
	list, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != n {
		t.Fatalf("ledger holds %d leases, want %d", len(list), n)
	}
	for i, lease := range list {
		if lease.UID != 5000+uint32(i) {
			t.Fatalf("List()[%d].UID = %d, want the range filled in order", i, lease.UID)
		}
	}

	_, err = l.Acquire("one-too-many", me)
	if err == nil {
		t.Fatal("Acquire on a full range succeeded")
	}
	for _, want := range []string{`vm "one-too-many"`, "all 50 ids in 5000-5049", "leases.count", "/etc/hutch/hutch.toml"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("exhaustion error %q lacks %q", err, want)
		}
	}
}

func TestAcquireAcrossProcesses(t *testing.T) {
	const procs, perProc = 4, 10
	l := newLedger(t, 7000, procs*perProc)
	me := self(t)
	cmds := make([]*exec.Cmd, procs)
	outs := make([]strings.Builder, procs)
	for p := range procs {
		var vms []string
		for i := range perProc {
			vms = append(vms, fmt.Sprintf("p%d-vm%d", p, i))
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		// The holder is this test process, which outlives the helpers:
		// a helper's own Proc would die with it and its leases be reclaimed.
		cmd.Env = append(os.Environ(),
			helperEnv+"=1",
			"LEASE_PATH="+l.Path,
			fmt.Sprintf("LEASE_FIRST=%d", l.First),
			fmt.Sprintf("LEASE_COUNT=%d", l.Count),
			fmt.Sprintf("LEASE_HOLDER_PID=%d", me.Pid),
			fmt.Sprintf("LEASE_HOLDER_START=%d", me.Start),
			"LEASE_VMS="+strings.Join(vms, " "),
		)
		cmd.Stdout = &outs[p]
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[p] = cmd
	}
	for p, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper %d: %v", p, err)
		}
	}
	seen := map[string]string{}
	for p := range procs {
		lines := strings.Split(strings.TrimSpace(outs[p].String()), "\n")
		if len(lines) != perProc {
			t.Fatalf("helper %d printed %q", p, outs[p].String())
		}
		for _, line := range lines {
			vm, uid, _ := strings.Cut(line, " ")
			if other, dup := seen[uid]; dup {
				t.Errorf("uid %s leased to both %s and %s", uid, other, vm)
			}
			seen[uid] = vm
		}
	}
	list, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != procs*perProc {
		t.Fatalf("ledger holds %d leases, want %d", len(list), procs*perProc)
	}
	for _, lease := range list {
		if seen[strconv.Itoa(int(lease.UID))] != lease.VM {
			t.Errorf("ledger has %+v, helpers reported %q for that uid", lease, seen[strconv.Itoa(int(lease.UID))])
		}
	}
}

func TestAcquireSkipsTaken(t *testing.T) {
	l := newLedger(t, 100, 6)
	l.Taken = fakeTaken{
		uids: map[uint32]bool{100: true, 102: true},
		gids: map[uint32]bool{101: true, 104: true},
	}
	me := self(t)
	var got []uint32
	for _, vm := range []string{"a", "b"} {
		lease, err := l.Acquire(vm, me)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, lease.UID)
	}
	if got[0] != 103 || got[1] != 105 {
		t.Fatalf("leased %v, want [103 105]: an id taken as uid or as gid is skipped", got)
	}
	if _, err := l.Acquire("c", me); err == nil {
		t.Fatal("Acquire succeeded with every free id leased")
	}
}

func TestAcquireSameVM(t *testing.T) {
	l := newLedger(t, 100, 10)
	me := self(t)
	first, err := l.Acquire("web", me)
	if err != nil {
		t.Fatal(err)
	}

	// The same holder asking again (a retried start) gets the same lease.
	again, err := l.Acquire("web", me)
	if err != nil || again != first {
		t.Fatalf("second Acquire by the same holder = %+v, %v; want %+v", again, err, first)
	}

	// Another live process may not take it.
	parent, err := store.ProcOf(os.Getppid())
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Acquire("web", parent)
	if !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("Acquire by another live holder: err = %v, want ErrLeaseHeld", err)
	}

	// Once its holder is dead, the vm gets a lease again.
	if err := l.SetHolder("web", deadProc(t)); err != nil {
		t.Fatal(err)
	}
	back, err := l.Acquire("web", parent)
	if err != nil {
		t.Fatal(err)
	}
	if back.UID != first.UID || back.Holder != parent {
		t.Fatalf("Acquire after the holder died = %+v", back)
	}
}

func TestReclaim(t *testing.T) {
	l := newLedger(t, 100, 10)
	me := self(t)
	dead := deadProc(t)
	wrongStart := me
	wrongStart.Start++ // same pid, another process: pid reuse must not keep a lease

	mustAcquire := func(vm string, holder store.Proc) Lease {
		t.Helper()
		lease, err := l.Acquire(vm, holder)
		if err != nil {
			t.Fatal(err)
		}
		return lease
	}
	// Acquire reclaims too, so every lease is taken while its holder is
	// this live process, then handed to the holder under test.
	live := mustAcquire("live", me)
	mustAcquire("dead", me)
	mustAcquire("reused", me)
	if err := l.SetHolder("dead", dead); err != nil {
		t.Fatal(err)
	}
	if err := l.SetHolder("reused", wrongStart); err != nil {
		t.Fatal(err)
	}

	freed, err := l.Reclaim()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, x := range freed {
		names = append(names, x.VM)
	}
	if strings.Join(names, ",") != "dead,reused" {
		t.Fatalf("Reclaim freed %v, want [dead reused]", names)
	}
	list, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0] != live {
		t.Fatalf("after Reclaim the ledger holds %+v, want only %+v", list, live)
	}
	if freed, err := l.Reclaim(); err != nil || len(freed) != 0 {
		t.Fatalf("second Reclaim = %v, %v", freed, err)
	}

	// A killed VM's id comes back: Acquire reclaims before it allocates.
	if err := l.SetHolder("live", dead); err != nil {
		t.Fatal(err)
	}
	next := mustAcquire("next", me)
	if next.UID != 100 {
		t.Fatalf("Acquire after the holder of uid 100 died leased %d", next.UID)
	}
	if _, ok, _ := l.Get("live"); ok {
		t.Fatal("the dead holder's lease survived Acquire")
	}
}

func TestSetHolderGetRelease(t *testing.T) {
	l := newLedger(t, 100, 10)
	me := self(t)

	if _, ok, err := l.Get("web"); ok || err != nil {
		t.Fatalf("Get on a missing ledger = %v, %v", ok, err)
	}
	if err := l.Release("web"); err != nil {
		t.Fatalf("Release on a missing ledger: %v", err)
	}
	if err := l.SetHolder("web", me); err == nil {
		t.Fatal("SetHolder of a vm without a lease succeeded")
	}

	lease, err := l.Acquire("web", me)
	if err != nil {
		t.Fatal(err)
	}
	parent, err := store.ProcOf(os.Getppid())
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetHolder("web", parent); err != nil {
		t.Fatal(err)
	}
	got, ok, err := l.Get("web")
	if err != nil || !ok {
		t.Fatalf("Get = %v, %v", ok, err)
	}
	want := lease
	want.Holder = parent
	if got != want {
		t.Fatalf("Get after SetHolder = %+v, want %+v", got, want)
	}

	for range 2 {
		if err := l.Release("web"); err != nil {
			t.Fatalf("Release: %v", err)
		}
	}
	if _, ok, _ := l.Get("web"); ok {
		t.Fatal("lease survived Release")
	}
	again, err := l.Acquire("other", me)
	if err != nil || again.UID != lease.UID {
		t.Fatalf("Acquire after Release = %+v, %v; want uid %d back", again, err, lease.UID)
	}
}

func TestLedgerRefusesCorruptFile(t *testing.T) {
	l := newLedger(t, 100, 10)
	if err := os.WriteFile(l.Path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire("web", self(t)); err == nil {
		t.Fatal("Acquire over a corrupt ledger succeeded")
	}
	if b, _ := os.ReadFile(l.Path); string(b) != "{not json" {
		t.Fatalf("corrupt ledger was rewritten: %q", b)
	}
}

func TestLedgerRefusesBadRange(t *testing.T) {
	for _, r := range []struct{ first, count uint32 }{{0, 10}, {100, 0}, {4294967290, 6}} {
		l := newLedger(t, r.first, r.count)
		if lease, err := l.Acquire("web", self(t)); err == nil {
			t.Errorf("Acquire with first=%d count=%d leased %+v", r.first, r.count, lease)
		}
	}
	l := newLedger(t, 4294967290, 5) // ends at 4294967294, the last usable id
	for i := range 5 {
		if _, err := l.Acquire(fmt.Sprint("vm", i), self(t)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Acquire("vm5", self(t)); err == nil {
		t.Fatal("Acquire past the last usable id succeeded")
	}
}

func TestHostTaken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	files := hostFiles{
		passwd: write("passwd", "root:x:0:0:root:/root:/bin/bash\n"+
			"# a comment\n"+
			"\n"+
			"alice:x:1000:1000::/home/alice:/bin/sh\n"+
			"svc:x:999:4242::/:/usr/sbin/nologin\n"+
			"+nis\n"+
			"broken:x:notanumber:7::/:/bin/sh\n"),
		group:  write("group", "root:x:0:\nkvm:x:107:\nalice:x:1000:\nbig:x:3000000000:\n"),
		subuid: write("subuid", "alice:100000:65536\nbob:2000000:10\nbad:line\n"),
		subgid: write("subgid", "alice:300000:5\n"),
	}
	taken, err := files.load()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id       uint32
		uid, gid bool
	}{
		{0, true, true},
		{65534, true, true},
		{1000, true, true},
		{999, true, false},
		{4242, false, true}, // a primary gid with no group line
		{107, false, true},
		{3000000000, false, true},
		{7, false, true}, // a bad uid field does not hide the gid beside it
		{99999, false, false},
		{100000, true, false},
		{165535, true, false},
		{165536, false, false},
		{2000009, true, false},
		{2000010, false, false},
		{300004, false, true},
		{300005, false, false},
		{1001, false, false},
	}
	for _, tt := range tests {
		if got := taken.UIDTaken(tt.id); got != tt.uid {
			t.Errorf("UIDTaken(%d) = %v, want %v", tt.id, got, tt.uid)
		}
		if got := taken.GIDTaken(tt.id); got != tt.gid {
			t.Errorf("GIDTaken(%d) = %v, want %v", tt.id, got, tt.gid)
		}
	}

	// No files at all: only root and nobody are taken.
	empty := hostFiles{
		passwd: filepath.Join(dir, "none-passwd"), group: filepath.Join(dir, "none-group"),
		subuid: filepath.Join(dir, "none-subuid"), subgid: filepath.Join(dir, "none-subgid"),
	}
	taken, err = empty.load()
	if err != nil {
		t.Fatal(err)
	}
	if !taken.UIDTaken(0) || !taken.GIDTaken(65534) || taken.UIDTaken(1000) {
		t.Fatal("missing files: want only 0 and 65534 taken")
	}

	// A file that exists but cannot be read is an error, not "nothing taken".
	unreadable := files
	unreadable.group = dir
	if _, err := unreadable.load(); err == nil {
		t.Fatal("load with a directory for /etc/group succeeded")
	}
}

func TestHostTakenOnThisHost(t *testing.T) {
	taken, err := HostTaken()
	if err != nil {
		t.Fatal(err)
	}
	if !taken.UIDTaken(0) || !taken.GIDTaken(0) {
		t.Fatal("root is not taken")
	}
	// The default range must not collide with this host's accounts.
	l := &Ledger{Path: filepath.Join(t.TempDir(), "leases.json"), First: 0x70000000, Count: 65536}
	lease, err := l.Acquire("web", self(t))
	if err != nil {
		t.Fatal(err)
	}
	if lease.UID != 0x70000000 {
		t.Fatalf("first lease in the default range on this host = %d", lease.UID)
	}
}

// A supervisor takes over only the lease its record names: once the lease
// was reclaimed and its id given to another VM, it must refuse to run.
func TestTakeOverRefusesALostLease(t *testing.T) {
	l := newLedger(t, 100, 10)
	me := self(t)
	a, err := l.Acquire("a", me)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.TakeOver("a", a.UID, me); err != nil {
		t.Fatalf("TakeOver of its own lease: %v", err)
	}
	if err := l.TakeOver("a", a.UID+1, me); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("now uid %d", a.UID)) {
		t.Errorf("TakeOver with another uid: %v", err)
	}
	// The CLI died, the lease was reclaimed, and b got the same id.
	if err := l.Release("a"); err != nil {
		t.Fatal(err)
	}
	b, err := l.Acquire("b", me)
	if err != nil || b.UID != a.UID {
		t.Fatalf("b leased %+v, %v; want uid %d", b, err, a.UID)
	}
	if err := l.TakeOver("a", a.UID, me); err == nil || !strings.Contains(err.Error(), "no lease") {
		t.Errorf("TakeOver of a reclaimed lease: %v", err)
	}
}
