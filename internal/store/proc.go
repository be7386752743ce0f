package store

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Proc names a process by pid and kernel start time. Pids are reused; the
// pair is not, so a Proc recorded yesterday never matches today's stranger.
type Proc struct {
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"` // clock ticks since boot, /proc/<pid>/stat field 22
}

// ProcOf returns the Proc of a live pid.
func ProcOf(pid int) (Proc, error) {
	st, err := startTime(pid)
	if err != nil {
		return Proc{}, err
	}
	return Proc{Pid: pid, Start: st}, nil
}

// Self is the calling process.
func Self() (Proc, error) { return ProcOf(PidInProc()) }

// PidInProc is this process's pid as /proc numbers it. A container's shim
// is pid 1 of a namespace of its own, but /proc is still the host's.
func PidInProc() int {
	if l, err := os.Readlink("/proc/self"); err == nil {
		if pid, err := strconv.Atoi(l); err == nil {
			return pid
		}
	}
	return os.Getpid()
}

// Alive reports whether the very process recorded still exists (and is not
// a zombie waiting to be reaped).
func (p Proc) Alive() bool {
	if p.Pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/stat")
	if err != nil {
		return false
	}
	f, err := statFields(b)
	if err != nil {
		return false
	}
	if f[0] == "Z" || f[0] == "X" {
		return false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return err == nil && st == p.Start
}

// Signal sends sig to the process only if it is still the recorded one.
func (p Proc) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return os.ErrProcessDone
	}
	return syscall.Kill(p.Pid, sig)
}

func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	f, err := statFields(b)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// ParentInProc is this process's parent's pid as /proc numbers it, or 0.
func ParentInProc() int {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	f, err := statFields(b)
	if err != nil {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// statFields splits /proc/<pid>/stat after the command name, which may
// itself hold spaces and parentheses; f[0] is the state (field 3).
func statFields(b []byte) ([]string, error) {
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return nil, fmt.Errorf("malformed stat")
	}
	return f, nil
}

// Descendants lists the live processes below pid (zombies left out),
// nearest first, as /proc numbers them.
func Descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f, err := statFields(b)
		if err != nil || f[0] == "Z" {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		children[pp] = append(children[pp], p)
	}
	var out []int
	for queue := []int{pid}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}
