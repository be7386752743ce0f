package identity

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/hutch-vm/hutch/internal/config"
	"github.com/hutch-vm/hutch/internal/store"
)

// Lease is one VM's hold on an id: its VMM runs as UID:GID (always equal)
// for as long as Holder lives. The id has no passwd or group entry; it
// exists only here, so nothing needs undoing on the host when it ends.
type Lease struct {
	VM     string     `json:"vm"`
	UID    uint32     `json:"uid"`
	GID    uint32     `json:"gid"`
	Holder store.Proc `json:"holder"`
}

// Taken reports ids the host already uses (passwd/group entries, subuid/subgid ranges).
type Taken interface {
	UIDTaken(id uint32) bool
	GIDTaken(id uint32) bool
}

// ErrLeaseHeld is returned by Acquire for a VM whose lease another live
// process holds: two supervisors for one VM would share its id.
var ErrLeaseHeld = errors.New("lease held by another live process")

// Ledger hands out ids from First .. First+Count-1 and records them in the
// JSON file at Path. Every change happens under an exclusive flock on
// Path+".lock", so separate hutch processes and goroutines of one can use
// the same ledger. A lease lives no longer than its holder: it is released
// on rm and reclaimed once its holder is dead, so a crashed VM never pins
// an id. Path belongs on a tmpfs (under /run): holders are named by start
// times counted from boot, which a ledger kept across a reboot could match
// by chance.
//
// Taken, when nil, is read from the host (HostTaken) at every Acquire, so a
// user added since the last VM started is never handed out.
type Ledger struct {
	Path         string
	First, Count uint32
	Taken        Taken
}

type ledgerFile struct {
	Leases []Lease `json:"leases"`
}

// Acquire leases an id to vm on behalf of holder. Leases of dead holders
// are reclaimed first, so a killed VM's id comes back. The id is the lowest
// in the range that is neither leased nor used by the host, as uid or gid.
//
// A vm that already has a lease gets it back when holder is the same
// process (a retried start); when another live process holds it, Acquire
// fails with ErrLeaseHeld.
func (l *Ledger) Acquire(vm string, holder store.Proc) (Lease, error) {
	if err := l.checkRange(); err != nil {
		return Lease{}, fmt.Errorf("lease an id for vm %q: %w", vm, err)
	}
	var got Lease
	err := l.update(func(f *ledgerFile) error {
		f.Leases, _ = splitDead(f.Leases)
		if i := find(f.Leases, vm); i >= 0 {
			if f.Leases[i].Holder != holder {
				return fmt.Errorf("%w: uid %d, pid %d", ErrLeaseHeld, f.Leases[i].UID, f.Leases[i].Holder.Pid)
			}
			got = f.Leases[i]
			return nil
		}
		taken := l.Taken
		if taken == nil {
			var err error
			if taken, err = HostTaken(); err != nil {
				return err
			}
		}
		used := make(map[uint32]bool, 2*len(f.Leases))
		for _, x := range f.Leases {
			used[x.UID], used[x.GID] = true, true
		}
		last := l.First + (l.Count - 1)
		for id := l.First; ; id++ {
			if !used[id] && !taken.UIDTaken(id) && !taken.GIDTaken(id) {
				got = Lease{VM: vm, UID: id, GID: id, Holder: holder}
				f.Leases = append(f.Leases, got)
				return nil
			}
			if id == last {
				break
			}
		}
		return fmt.Errorf("all %d ids in %d-%d are leased or used by the host; raise leases.count (or move leases.first) in %s",
			l.Count, l.First, last, config.SystemPath)
	})
	if err != nil {
		return Lease{}, fmt.Errorf("lease an id for vm %q: %w", vm, err)
	}
	return got, nil
}

// SetHolder hands vm's lease to holder: the CLI acquires it, then the
// supervisor that outlives the CLI takes it over, so the lease lives
// exactly as long as the VM does.
func (l *Ledger) SetHolder(vm string, holder store.Proc) error {
	return l.setHolder(vm, nil, holder)
}

// TakeOver is SetHolder for the supervisor: it succeeds only while vm
// still holds the lease of uid. A lease that was reclaimed (the CLI died
// before handing it over) may be another VM's id by now, and two VMMs
// must never share one.
func (l *Ledger) TakeOver(vm string, uid uint32, holder store.Proc) error {
	return l.setHolder(vm, &uid, holder)
}

func (l *Ledger) setHolder(vm string, uid *uint32, holder store.Proc) error {
	err := l.update(func(f *ledgerFile) error {
		i := find(f.Leases, vm)
		if i < 0 {
			return errors.New("no lease")
		}
		if uid != nil && f.Leases[i].UID != *uid {
			return fmt.Errorf("the lease is now uid %d, not %d", f.Leases[i].UID, *uid)
		}
		for _, o := range f.Leases {
			if uid != nil && o.VM != vm && o.UID == *uid {
				return fmt.Errorf("uid %d is leased to vm %q", *uid, o.VM)
			}
		}
		f.Leases[i].Holder = holder
		return nil
	})
	if err != nil {
		return fmt.Errorf("hand the lease of vm %q to pid %d: %w", vm, holder.Pid, err)
	}
	return nil
}

// Release frees vm's lease. Releasing a lease that does not exist is not an
// error, so rm can always call it.
func (l *Ledger) Release(vm string) error {
	err := l.update(func(f *ledgerFile) error {
		if i := find(f.Leases, vm); i >= 0 {
			f.Leases = slices.Delete(f.Leases, i, i+1)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("release the lease of vm %q: %w", vm, err)
	}
	return nil
}

// Reclaim frees every lease whose holder is dead and returns them, so the
// caller can remove what their VMs left behind (cgroups, runtime dirs)
// before the ids are handed out again.
func (l *Ledger) Reclaim() ([]Lease, error) {
	var dead []Lease
	err := l.update(func(f *ledgerFile) error {
		f.Leases, dead = splitDead(f.Leases)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reclaim leases: %w", err)
	}
	return dead, nil
}

// Get returns vm's lease as recorded, whether or not its holder still lives.
func (l *Ledger) Get(vm string) (Lease, bool, error) {
	f, err := l.read()
	if err != nil {
		return Lease{}, false, err
	}
	if i := find(f.Leases, vm); i >= 0 {
		return f.Leases[i], true, nil
	}
	return Lease{}, false, nil
}

// List returns every recorded lease, lowest id first.
func (l *Ledger) List() ([]Lease, error) {
	f, err := l.read()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(f.Leases, func(a, b Lease) int { return cmp.Compare(a.UID, b.UID) })
	return f.Leases, nil
}

// checkRange refuses a range that config.Load would refuse, for a Ledger
// built by hand: leasing root's id, or (uid_t)-1, must not be possible.
func (l *Ledger) checkRange() error {
	if l.First == 0 || l.Count == 0 || uint64(l.First)+uint64(l.Count)-1 > math.MaxUint32-1 {
		return fmt.Errorf("invalid lease range first=%d count=%d", l.First, l.Count)
	}
	return nil
}

// update runs fn on the ledger under its lock and writes the result back;
// an error from fn leaves the file as it was.
func (l *Ledger) update(fn func(*ledgerFile) error) error {
	lk, err := store.Acquire(l.Path + ".lock")
	if err != nil {
		return err
	}
	defer lk.Release()
	f, err := l.read()
	if err != nil {
		return err
	}
	before := slices.Clone(f.Leases)
	if err := fn(&f); err != nil {
		return err
	}
	if slices.Equal(before, f.Leases) {
		return nil
	}
	if f.Leases == nil {
		f.Leases = []Lease{}
	}
	return store.WriteJSON(l.Path, &f)
}

// read loads the ledger; it needs no lock because WriteJSON replaces the
// file atomically. A missing file is an empty ledger, but a corrupt one is
// an error: guessing could lease one id twice.
func (l *Ledger) read() (ledgerFile, error) {
	var f ledgerFile
	err := store.ReadJSON(l.Path, &f)
	if errors.Is(err, os.ErrNotExist) {
		return ledgerFile{}, nil
	}
	if err != nil {
		return ledgerFile{}, fmt.Errorf("read lease ledger: %w", err)
	}
	return f, nil
}

func find(leases []Lease, vm string) int {
	return slices.IndexFunc(leases, func(x Lease) bool { return x.VM == vm })
}

// splitDead separates leases whose holder is gone from those still held.
func splitDead(leases []Lease) (live, dead []Lease) {
	for _, x := range leases {
		if x.Holder.Alive() {
			live = append(live, x)
		} else {
			dead = append(dead, x)
		}
	}
	return live, dead
}

// HostTaken reads the ids the host already gives out: /etc/passwd,
// /etc/group, /etc/subuid and /etc/subgid (a missing file uses none), plus
// 0 and 65534 (nobody), which are never to be leased whatever the files say.
// Only the files are read: ids that exist only through NSS (LDAP, sssd,
// systemd's dynamic users) are not seen, which is why the default range
// sits where those services do not allocate.
func HostTaken() (Taken, error) {
	h, err := systemFiles.load()
	if err != nil {
		return nil, err
	}
	return h, nil
}

type hostFiles struct {
	passwd, group, subuid, subgid string
}

var systemFiles = hostFiles{
	passwd: "/etc/passwd",
	group:  "/etc/group",
	subuid: "/etc/subuid",
	subgid: "/etc/subgid",
}

// idRange is the ids first .. first+count-1.
type idRange struct{ first, count uint64 }

type hostIDs struct {
	uids, gids     map[uint32]bool
	subuid, subgid []idRange
}

func (h *hostIDs) UIDTaken(id uint32) bool { return h.uids[id] || inRanges(h.subuid, id) }
func (h *hostIDs) GIDTaken(id uint32) bool { return h.gids[id] || inRanges(h.subgid, id) }

func inRanges(rs []idRange, id uint32) bool {
	for _, r := range rs {
		if uint64(id) >= r.first && uint64(id)-r.first < r.count {
			return true
		}
	}
	return false
}

func (hf hostFiles) load() (*hostIDs, error) {
	h := &hostIDs{
		uids: map[uint32]bool{0: true, 65534: true},
		gids: map[uint32]bool{0: true, 65534: true},
	}
	// passwd: name:pw:uid:gid:...; the primary gid counts even when no group
	// line names it.
	err := eachLine(hf.passwd, func(f []string) {
		if len(f) < 4 {
			return
		}
		if id, ok := parseID(f[2]); ok {
			h.uids[id] = true
		}
		if id, ok := parseID(f[3]); ok {
			h.gids[id] = true
		}
	})
	if err != nil {
		return nil, err
	}
	// group: name:pw:gid:members
	err = eachLine(hf.group, func(f []string) {
		if len(f) < 3 {
			return
		}
		if id, ok := parseID(f[2]); ok {
			h.gids[id] = true
		}
	})
	if err != nil {
		return nil, err
	}
	// subuid, subgid: name:start:count
	for _, sub := range []struct {
		path string
		to   *[]idRange
	}{{hf.subuid, &h.subuid}, {hf.subgid, &h.subgid}} {
		err := eachLine(sub.path, func(f []string) {
			if len(f) < 3 {
				return
			}
			first, err1 := strconv.ParseUint(f[1], 10, 32)
			count, err2 := strconv.ParseUint(f[2], 10, 32)
			if err1 == nil && err2 == nil && count > 0 {
				*sub.to = append(*sub.to, idRange{first, count})
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return h, nil
}

// eachLine calls fn with the colon-separated fields of every line of path
// that is not blank or a comment. Lines it cannot parse are skipped, as
// the shadow tools skip them; a missing file has no lines.
func eachLine(path string, fn func([]string)) error {
	file, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read host ids: %w", err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fn(strings.Split(line, ":"))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read host ids from %s: %w", path, err)
	}
	return nil
}

func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}
