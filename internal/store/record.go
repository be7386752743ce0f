package store

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotFound is returned for a VM name with no record.
var ErrNotFound = errors.New("no such vm")

// ErrExists is returned when creating a VM whose name is taken.
var ErrExists = errors.New("name already in use")

// WriteJSON replaces path with v's JSON atomically: a reader sees the old
// or the new content, never a torn one, and a crash leaves one of the two.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			return overwrite(path, append(b, '\n'), err)
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}

// overwrite is WriteJSON's way out of a full filesystem: the new record
// goes over the old one's blocks, which are already allocated, so the
// record of how a VM ended is not lost to a full disk. It is not atomic;
// a crash in the middle leaves a record that ps shows as broken.
func overwrite(path string, b []byte, full error) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, full)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("write %s: %w", path, full)
	}
	if err := f.Truncate(int64(len(b))); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Sync()
}

// ReadJSON decodes path into v.
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// Lock is an exclusive flock on a file; it dies with the process that holds
// it, so a killed command never leaves a stale lock.
type Lock struct{ f *os.File }

// Acquire blocks until it holds the lock on path, creating the file.
func Acquire(path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// AcquireWithin is Acquire for a lock that commands hold only briefly:
// it writes the holder's pid into the file, and a waiter gives up after
// timeout, or at once when the holder is stopped (a Ctrl-Z'd command
// would otherwise block every other one forever), naming the holder.
func AcquireWithin(path string, timeout time.Duration) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			f.Truncate(0)
			f.WriteAt([]byte(strconv.Itoa(PidInProc())+"\n"), 0)
			return &Lock{f: f}, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		holder, stopped := lockHolder(f)
		if stopped || time.Now().After(deadline) {
			f.Close()
			why := fmt.Sprintf("has held it for over %s", timeout)
			if stopped {
				why = "is stopped (Ctrl-Z?); resume it with fg or kill it"
			}
			return nil, fmt.Errorf("another hutch command holds %s: %s %s", path, holder, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lockHolder describes the pid written in a lock file, and whether that
// process is stopped.
func lockHolder(f *os.File) (string, bool) {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 0 {
		return "(holder unknown)", false
	}
	stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	fields, ferr := statFields(stat)
	stopped := ferr == nil && (fields[0] == "T" || fields[0] == "t")
	cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	line := strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))
	if len(line) > 120 {
		line = line[:120] + "..."
	}
	return fmt.Sprintf("pid %d (%s)", pid, line), stopped
}

// Release drops the lock.
func (l *Lock) Release() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// Update reads the record at p under the VM's lock, lets fn change it and
// writes it back atomically. fn returning an error leaves the record as is.
func Update[T any](p Paths, fn func(*T) error) error {
	lk, err := Acquire(p.Lock())
	if err != nil {
		if os.IsNotExist(errors.Unwrap(err)) {
			return ErrNotFound
		}
		return err
	}
	defer lk.Release()
	var rec T
	if err := ReadJSON(p.Record(), &rec); err != nil {
		if os.IsNotExist(err) {
			return ErrNotFound
		}
		return err
	}
	if err := fn(&rec); err != nil {
		return err
	}
	return WriteJSON(p.Record(), &rec)
}

// Load reads the record at p.
func Load[T any](p Paths) (T, error) {
	var rec T
	err := ReadJSON(p.Record(), &rec)
	if os.IsNotExist(err) {
		return rec, ErrNotFound
	}
	return rec, err
}

// Create makes the data dir of a new VM. fill populates a private staging
// dir (paths as they will be once the VM exists, except Data); the staging
// dir is then renamed into place without replacing anything, so a name is
// taken atomically and a half-made VM is never visible. A creator killed
// midway leaves a staging dir that Sweep removes.
func Create(l Layout, name string, rec any, fill func(stagingData string) error) error {
	final := l.VM(name)
	self, err := Self()
	if err != nil {
		return err
	}
	staging := filepath.Join(l.VMsDir(), tempName(".new", self, name))
	if err := os.Mkdir(staging, 0o700); err != nil {
		return fmt.Errorf("create vm directory: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(staging)
		}
	}()
	if _, err := os.Stat(final.Data); err == nil {
		return ErrExists
	}
	if fill != nil {
		if err := fill(staging); err != nil {
			return err
		}
	}
	if err := WriteJSON(filepath.Join(staging, recordFile), rec); err != nil {
		return err
	}
	if err := unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, final.Data, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			return ErrExists
		}
		return fmt.Errorf("create vm directory %s: %w", final.Data, err)
	}
	ok = true
	return nil
}

// Remove deletes a VM's data and runtime dirs. The data dir is first
// renamed out of the way, so the name is free at once and a removal cut
// short is finished by the next Sweep.
func Remove(l Layout, name string) error {
	p := l.VM(name)
	self, err := Self()
	if err != nil {
		return err
	}
	trash := filepath.Join(l.VMsDir(), tempName(".rm", self, name))
	if err := os.Rename(p.Data, trash); err != nil {
		if os.IsNotExist(err) {
			return ErrNotFound
		}
		return fmt.Errorf("remove vm %q: %w", name, err)
	}
	if err := os.RemoveAll(p.Run); err != nil {
		return fmt.Errorf("remove runtime dir of vm %q: %w", name, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove vm %q: %w", name, err)
	}
	return nil
}

// Names lists the VMs that exist, skipping staging and trash entries.
func Names(l Layout) ([]string, error) {
	ents, err := os.ReadDir(l.VMsDir())
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// Sweep removes staging and trash dirs whose owning command is dead.
func Sweep(l Layout) {
	ents, err := os.ReadDir(l.VMsDir())
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, ".new-") && !strings.HasPrefix(n, ".rm-") {
			continue
		}
		f := strings.SplitN(n, "-", 5)
		if len(f) != 5 {
			continue
		}
		pid, err1 := strconv.Atoi(f[1])
		start, err2 := strconv.ParseUint(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		if (Proc{Pid: pid, Start: start}).Alive() {
			continue
		}
		// The runtime dir is the name's, not the trash's: a VM made under
		// the same name since the removal was cut short owns it now.
		if _, err := os.Stat(l.VM(f[4]).Data); strings.HasPrefix(n, ".rm-") && os.IsNotExist(err) {
			os.RemoveAll(l.VM(f[4]).Run)
		}
		os.RemoveAll(filepath.Join(l.VMsDir(), n))
	}
}

// tempName names a staging or trash dir after the command that owns it
// (so Sweep can tell when it is dead) plus a random part (so one command
// can own several).
func tempName(kind string, owner Proc, name string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s-%d-%d-%s-%s", kind, owner.Pid, owner.Start, hex.EncodeToString(b), name)
}
