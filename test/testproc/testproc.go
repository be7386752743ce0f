// Package testproc starts the tests' external processes so that none can
// hang a test run or outlive it: every command has a deadline well inside
// go test's -timeout, daemons die with the test binary, and a reaper
// outside the test binary kills what the tests started if the binary dies
// without cleaning up (a panic, or go test's own timeout).
package testproc

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Deadline bounds one external command: the slowest a test runs (a cloud
// image's first boot under TCG, a debootstrap) fits, and a hung one is
// killed long before go test's 40 minutes.
const Deadline = 10 * time.Minute

// Command is exec.Command under Deadline.
func Command(name string, args ...string) *exec.Cmd {
	return CommandTimeout(Deadline, name, args...)
}

// CommandTimeout is exec.Command killed after d. Its output pipes are
// given up WaitDelay after the kill, so a grandchild that holds them (a
// daemonised supervisor) cannot stall Wait.
func CommandTimeout(d time.Duration, name string, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	c := exec.CommandContext(ctx, name, args...)
	c.WaitDelay = 10 * time.Second
	// The timer's resources go when it fires; a command that finishes
	// early leaves a timer that costs nothing until then.
	_ = cancel
	return c
}

// StartDaemon starts c (a server the test talks to) in a process group of
// its own that gets SIGKILL when the test binary dies, and tells the
// reaper about it, in case the kernel's parent-death signal is missed
// (it follows the thread that forked, not the process).
func StartDaemon(c *exec.Cmd) error {
	if c.SysProcAttr == nil {
		c.SysProcAttr = &syscall.SysProcAttr{}
	}
	c.SysProcAttr.Setpgid = true
	c.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := c.Start(); err != nil {
		return err
	}
	if reaperIn != nil {
		fmt.Fprintf(reaperIn, "pgid %d\n", c.Process.Pid)
	}
	return nil
}

// Targets are what the reaper kills once the test binary is gone.
type Targets struct {
	// UIDs are users nothing but the tests runs as.
	UIDs []int
	// FirstUID, CountUID is a range of ids only the tests' VMMs use (the
	// lease range).
	FirstUID, CountUID int
	// ExeDirs hold binaries the tests built; any process running one is
	// theirs. An entry is a path prefix: "/tmp/x-" covers /tmp/x-123/bin.
	ExeDirs []string
}

const reaperEnv = "HUTCH_TEST_REAPER"

var reaperIn *os.File

// Main is the first call of a TestMain: in the reaper process it runs the
// reaper and exits; in the test binary it returns.
func Main() {
	if os.Getenv(reaperEnv) == "" {
		return
	}
	reap()
	os.Exit(0)
}

// StartReaper starts the reaper: this test binary again, in a session of
// its own, holding the read end of a pipe whose write end only this
// process has. When this process dies, for any reason, the pipe closes
// and the reaper kills every process t names and every daemon group.
func StartReaper(t Targets) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("start the reaper: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start the reaper: %w", err)
	}
	defer r.Close()
	var args []string
	for _, u := range t.UIDs {
		args = append(args, "uid", strconv.Itoa(u))
	}
	if t.CountUID > 0 {
		args = append(args, "range", fmt.Sprintf("%d:%d", t.FirstUID, t.CountUID))
	}
	for _, d := range t.ExeDirs {
		args = append(args, "exe", d)
	}
	c := exec.Command(self, args...)
	c.Env = append(os.Environ(), reaperEnv+"=1")
	c.Stdin = r
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start the reaper: %w", err)
	}
	c.Process.Release()
	reaperIn = w
	return nil
}

// reap waits for stdin to close, then kills.
func reap() {
	t := Targets{}
	var pgids []int
	a := os.Args[1:]
	for i := 0; i+1 < len(a); i += 2 {
		switch a[i] {
		case "uid":
			n, _ := strconv.Atoi(a[i+1])
			t.UIDs = append(t.UIDs, n)
		case "range":
			f, c, _ := strings.Cut(a[i+1], ":")
			t.FirstUID, _ = strconv.Atoi(f)
			t.CountUID, _ = strconv.Atoi(c)
		case "exe":
			t.ExeDirs = append(t.ExeDirs, a[i+1])
		}
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if f := strings.Fields(in.Text()); len(f) == 2 && f[0] == "pgid" {
			if n, err := strconv.Atoi(f[1]); err == nil && n > 1 {
				pgids = append(pgids, n)
			}
		}
	}
	for _, g := range pgids {
		syscall.Kill(-g, syscall.SIGKILL)
	}
	// Twice: a supervisor killed in the first pass may have started a
	// child after the scan saw it.
	for pass := 0; pass < 2; pass++ {
		for _, pid := range t.Match() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Match lists the live processes t names, never this one.
func (t Targets) Match() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if t.matches(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (t Targets) matches(pid int) bool {
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); err == nil {
		for _, d := range t.ExeDirs {
			if strings.HasPrefix(exe, d) {
				return true
			}
		}
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "Uid:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return false
		}
		uid, _ := strconv.Atoi(f[0])
		for _, u := range t.UIDs {
			if uid == u {
				return true
			}
		}
		return t.CountUID > 0 && uid >= t.FirstUID && uid < t.FirstUID+t.CountUID
	}
	return false
}
