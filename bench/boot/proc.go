package main

import (
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// procUID is the real uid of pid.
func procUID(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				uid, err := strconv.Atoi(f[0])
				return uid, err == nil
			}
		}
	}
	return 0, false
}

// userProcs are the pids and command names of every live process of uid.
// Zombies are left out: they hold no memory, port or file, and an exited
// supervisor, reparented to the host's init, is one until init reaps it.
func userProcs(uid int) map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if u, ok := procUID(pid); !ok || u != uid {
			continue
		}
		if f := statFields(pid); len(f) == 0 || f[0] == "Z" {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		out[pid] = strings.TrimSpace(string(comm))
	}
	return out
}

// processTree is root and every process descended from it.
func processTree(root int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(pid); len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// treeRSS is the summed VmRSS (KiB) of root and its descendants. Pages
// shared between them (the hutch binary, libc) count once per process, as
// RSS does.
func treeRSS(root int) int {
	sum := 0
	for _, pid := range processTree(root) {
		m, _ := readMemory(pid)
		sum += m.rss
	}
	return sum
}

// treeCPU is the CPU time root and its descendants have used.
func treeCPU(root int) time.Duration {
	var t time.Duration
	for _, pid := range processTree(root) {
		t += procCPU(pid)
	}
	return t
}

// watchExit starts watching pid and returns a function that waits, up to
// limit, for the moment it exited. A pidfd becomes readable when its
// process exits, for any process, not only a child: this times an exit to
// the scheduler's precision without polling /proc.
func watchExit(pid int) func(limit time.Duration) (time.Time, bool) {
	done := make(chan time.Time, 1)
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		done <- time.Now() // already gone
	} else {
		go func() {
			defer unix.Close(fd)
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			for {
				if _, err := unix.Poll(fds, -1); err != unix.EINTR {
					done <- time.Now()
					return
				}
			}
		}()
	}
	return func(limit time.Duration) (time.Time, bool) {
		select {
		case t := <-done:
			return t, true
		case <-time.After(limit):
			return time.Time{}, false
		}
	}
}
