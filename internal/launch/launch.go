//go:build linux && !386 && !arm

// Package launch starts a process as another identity with nothing it does
// not need: no capabilities in any set, no_new_privs, exactly the groups,
// environment, rlimits and cgroups asked for. It is the only package that
// changes credentials.
//
// Go cannot run code between fork and exec, so the dropping happens in a
// short stage: the hutch binary re-executes itself as `hutch _exec SPEC`
// (as `runc init` does), applies the Spec to itself and then execs the target.
//
// Not built for 386 and arm, where SYS_SETRESUID and friends are the
// 16-bit-id calls.
package launch

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// StageCommand is the hidden verb of the hutch binary that runs Stage.
const StageCommand = "_exec"

// Spec is who the target runs as and what it keeps.
type Spec struct {
	UID, GID uint32
	Groups   []uint32 // exact supplementary groups; empty means none
	Argv     []string // Argv[0] is an absolute path
	Env      []string // the target's whole environment
	Rlimits  []Rlimit
	// CgroupProcs are cgroup.procs files joined before privilege is dropped.
	CgroupProcs []string
	// NumExtraFiles is len(cmd.ExtraFiles): descriptors 3 to 2+NumExtraFiles
	// reach the target, every other one above 2 is closed at exec.
	NumExtraFiles int
	// ParentPid is set by Command: the target must die with this process.
	ParentPid int
}

// Rlimit is one resource limit, e.g. {unix.RLIMIT_CORE, 0, 0}.
type Rlimit struct {
	Resource int
	Cur, Max uint64
}

func (s *Spec) validate() error {
	// A VMM never runs as root, and neither does anything it spawns. Root
	// of a user namespace that maps it to an ordinary user (where rootless
	// Podman runs its runtime) is that user on the host.
	if (s.UID == 0 || s.GID == 0) && !RootIsUser() {
		return fmt.Errorf("refusing uid %d gid %d: targets never run as root", s.UID, s.GID)
	}
	if len(s.Argv) == 0 || !filepath.IsAbs(s.Argv[0]) {
		return fmt.Errorf("argv %q: need an absolute path first", s.Argv)
	}
	return nil
}

// RootIsUser reports whether uid and gid 0 of this process's user
// namespace are non-zero ids on the host side.
func RootIsUser() bool {
	return mapsZeroToUser("/proc/self/uid_map") && mapsZeroToUser("/proc/self/gid_map")
}

func mapsZeroToUser(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "0" {
			return f[1] != "0"
		}
	}
	return false
}

// Command returns a Cmd that runs self (the hutch binary) as
// `self _exec SPEC_JSON`, which applies s and execs s.Argv. The caller sets
// Stdout, Stderr and ExtraFiles (with s.NumExtraFiles to match); they reach
// the target at the same numbers, and nothing else does.
// The target gets SIGKILL when the thread that starts it exits, so start it
// from a goroutine that is not locked to a thread that may end (go.dev/issue/27505).
func Command(self string, s Spec) (*exec.Cmd, error) {
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("launch %s: %w", s.Argv, err)
	}
	s.ParentPid = os.Getpid()
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("launch %s: %w", s.Argv, err)
	}
	cmd := exec.Command(self, StageCommand, string(b))
	cmd.Env = []string{} // the stage needs nothing from ours, and must leak nothing
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// Stage is the body of `hutch _exec`. On success it never returns: the
// process becomes s.Argv. On failure the caller prints the error (one line)
// and exits 1, which its parent reports as the target exiting before it started.
func Stage(specJSON string) error {
	var s Spec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		return fmt.Errorf("hutch _exec: parse spec: %w", err)
	}
	if err := stage(&s); err != nil {
		return fmt.Errorf("hutch _exec %q: %w", s.Argv, err)
	}
	return nil
}

func stage(s *Spec) error {
	if err := s.validate(); err != nil {
		return err
	}
	if err := closeOthers(3 + s.NumExtraFiles); err != nil {
		return err
	}
	// Joining needs write access to cgroup files the target's identity does
	// not have, and joining before exec charges everything the target does.
	for _, p := range s.CgroupProcs {
		if err := join(p); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	// Raising a hard limit needs CAP_SYS_RESOURCE, gone once uid changes.
	// unix.Setrlimit also stops Go restoring its own RLIMIT_NOFILE at exec.
	for _, r := range s.Rlimits {
		if err := unix.Setrlimit(r.Resource, &unix.Rlimit{Cur: r.Cur, Max: r.Max}); err != nil {
			return fmt.Errorf("setrlimit %d to %d/%d: %w", r.Resource, r.Cur, r.Max, err)
		}
	}

	// The bounding and ambient sets, credentials and no_new_privs below are
	// per thread; the new image gets those of the thread that calls execve,
	// so everything happens on this one. It is never unlocked: exec or exit.
	runtime.LockOSThread()

	// Dropping uid leaves the bounding set full: a setuid or file-capability
	// binary could get it all back. Dropping needs CAP_SETPCAP, so do it first.
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return fmt.Errorf("read last capability: %w", err)
	}
	last, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("read last capability: %w", err)
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d from bounding set: %w", c, err)
		}
	}
	// Ambient capabilities survive execve of an ordinary binary.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}

	// Raw syscalls change this thread only. syscall.Setresuid would repeat
	// them on every thread; that buys nothing here, since the other threads
	// do not survive execve and the sets above are per thread anyway.
	// Groups and gid first: changing them needs the CAP_SETGID that the uid
	// change takes away.
	groups := make([]uint32, len(s.Groups)+1) // never empty: &groups[0] is valid
	copy(groups, s.Groups)
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(s.Groups)), uintptr(unsafe.Pointer(&groups[0])), 0); e != 0 {
		return fmt.Errorf("setgroups %v: %w", s.Groups, e)
	}
	g, u := uintptr(s.GID), uintptr(s.UID)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, g, g, g); e != 0 {
		return fmt.Errorf("setresgid %d: %w", s.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, u, u, u); e != 0 {
		return fmt.Errorf("setresuid %d: %w", s.UID, e)
	}
	if err := verifyIDs(s); err != nil {
		return err
	}
	// From uid 0 to non-zero the kernel clears permitted and effective, but
	// not inheritable, and not at all if securebits were set by an ancestor.
	// Lowering is always allowed, so empty every set explicitly.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var none [2]unix.CapUserData
	if err := unix.Capset(&hdr, &none[0]); err != nil {
		return fmt.Errorf("clear capabilities: %w", err)
	}
	// Nothing the target execs may gain privilege (setuid bits, file caps).
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	// Changing credentials cleared the parent-death signal Command set. Set
	// it again, then check the parent did not die before it was set.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set parent-death signal: %w", err)
	}
	if ppid := os.Getppid(); ppid != s.ParentPid {
		return fmt.Errorf("parent %d is gone (parent now %d)", s.ParentPid, ppid)
	}
	if err := unix.Exec(s.Argv[0], s.Argv, s.Env); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	return errors.New("exec returned")
}

// closeOthers marks every descriptor from first on close-on-exec. Go sets
// the flag on what it opens, but not on what this process inherited, and
// os/exec passes those on: they would reach the target unasked.
func closeOthers(first int) error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list descriptors: %w", err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < first {
			continue
		}
		// EBADF: the descriptor ReadDir used, already closed.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && err != unix.EBADF {
			return fmt.Errorf("mark descriptor %d close-on-exec: %w", fd, err)
		}
	}
	return nil
}

// join moves this whole process into the cgroup whose cgroup.procs is p.
// "0" names the writer in any pid namespace. No O_CREATE: a wrong path must
// fail, not leave a file behind.
func join(p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("0")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// verifyIDs reads this thread's credentials back rather than trusting the
// calls. (unix.Getresuid would turn ids above 2^31 negative.)
func verifyIDs(s *Spec) error {
	var ids [6]uint32
	unix.RawSyscall(unix.SYS_GETRESUID, uintptr(unsafe.Pointer(&ids[0])), uintptr(unsafe.Pointer(&ids[1])), uintptr(unsafe.Pointer(&ids[2])))
	unix.RawSyscall(unix.SYS_GETRESGID, uintptr(unsafe.Pointer(&ids[3])), uintptr(unsafe.Pointer(&ids[4])), uintptr(unsafe.Pointer(&ids[5])))
	want := [6]uint32{s.UID, s.UID, s.UID, s.GID, s.GID, s.GID}
	if ids != want {
		return fmt.Errorf("uids/gids are %v, want %v", ids, want)
	}
	list, err := unix.Getgroups()
	if err != nil {
		return fmt.Errorf("getgroups: %w", err)
	}
	var got []uint32
	for _, g := range list {
		got = append(got, uint32(g))
	}
	// The kernel keeps groups sorted.
	if wantGroups := slices.Sorted(slices.Values(s.Groups)); !slices.Equal(got, wantGroups) {
		return fmt.Errorf("groups are %v, want %v", got, wantGroups)
	}
	return nil
}
