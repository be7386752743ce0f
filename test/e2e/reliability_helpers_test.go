package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vmRunDir and vmDataDir are where hutch keeps a session VM of u: its
// sockets, and its record, logs and overlays.
func vmRunDir(u *tUser, name string) string {
	return filepath.Join(u.runDir, "hutch", "vms", name)
}

func vmDataDir(u *tUser, name string) string {
	return filepath.Join(u.dataDir, "hutch", "vms", name)
}

// tryHutch runs hutch as u without touching the test: safe from any
// goroutine. A hutch that cannot be started at all reports code -1; one
// that hangs is killed after hutchTimeout and reports code -2.
func tryHutch(u *tUser, args ...string) result {
	c := u.cmd(args...)
	var o, e bytes.Buffer
	c.Stdout, c.Stderr = &o, &e
	if err := c.Start(); err != nil {
		return result{code: -1, err: err.Error()}
	}
	hung := time.AfterFunc(hutchTimeout, func() { c.Process.Kill() })
	err := c.Wait()
	r := result{out: o.String(), err: e.String()}
	if !hung.Stop() {
		r.code, r.err = -2, fmt.Sprintf("hung for %s and killed; stderr %q", hutchTimeout, r.err)
		return r
	}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		r.code, r.err = -1, err.Error()
	}
	return r
}

// hutchTimeout is far longer than any command takes (run -d waits at most
// 60 s for QEMU): one that runs longer hangs.
const hutchTimeout = 3 * time.Minute

// hostProc is one live process as the fault checks see it.
type hostProc struct {
	pid     int
	comm    string
	cmdline string
	files   []string // targets of its open descriptors and its cwd
}

func (p hostProc) String() string {
	return fmt.Sprintf("pid %d (%s): %s; files %v", p.pid, p.comm, p.cmdline, p.files)
}

// hostProcs lists the live processes except this test binary; zombies
// hold nothing and are left out.
func hostProcs() []hostProc {
	var out []hostProc
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || procStatus(pid) == nil {
			continue
		}
		dir := "/proc/" + e.Name()
		cmd, _ := os.ReadFile(dir + "/cmdline")
		comm, _ := os.ReadFile(dir + "/comm")
		p := hostProc{pid: pid, comm: strings.TrimSpace(string(comm)), cmdline: strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))}
		if cwd, err := os.Readlink(dir + "/cwd"); err == nil {
			p.files = append(p.files, cwd)
		}
		fds, _ := os.ReadDir(dir + "/fd")
		for _, fd := range fds {
			if target, err := os.Readlink(dir + "/fd/" + fd.Name()); err == nil {
				p.files = append(p.files, target)
			}
		}
		out = append(out, p)
	}
	return out
}

// touches reports whether p names a path under root on its command line
// or holds a file there open (also one already deleted or renamed into a
// trash dir below root).
func (p hostProc) touches(root string) bool {
	if strings.Contains(p.cmdline, root+"/") || strings.HasSuffix(p.cmdline, root) {
		return true
	}
	for _, f := range p.files {
		if f == root || strings.HasPrefix(f, root+"/") {
			return true
		}
	}
	return false
}

// procsUnder lists the processes that touch any of roots: everything
// hutch started for a user's VMs keeps its logs in the data dir and names
// the runtime dir, so this finds supervisors, QEMUs, passts and
// qemu-imgs alike.
func procsUnder(roots ...string) []hostProc {
	var out []hostProc
	for _, p := range hostProcs() {
		for _, r := range roots {
			if p.touches(r) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// userProcs lists what runs for any VM of u.
func userProcs(u *tUser) []hostProc { return procsUnder(u.runDir, u.dataDir) }

// waitNoUserProcs waits for every process of u's VMs to end and reports
// any that stays.
func waitNoUserProcs(t *testing.T, u *tUser, timeout time.Duration, why string) {
	t.Helper()
	var left []hostProc
	if !waitFor(timeout, func() bool { left = userProcs(u); return len(left) == 0 }) {
		t.Errorf("%s: processes of the vms remain after %s:\n%s", why, timeout, procList(left))
	}
}

func procList(ps []hostProc) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "  %s\n", p)
	}
	return b.String()
}

// findVMProc waits for a process of u's VMs for which match holds.
func findVMProc(u *tUser, timeout time.Duration, match func(hostProc) bool) (hostProc, bool) {
	var found hostProc
	ok := waitFor(timeout, func() bool {
		for _, p := range userProcs(u) {
			if match(p) {
				found = p
				return true
			}
		}
		return false
	})
	return found, ok
}

// findSupervisor finds VM name's supervisor of user u by command line
// alone, polling without pause.
func findSupervisor(u *tUser, name string, timeout time.Duration) (int, bool) {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil {
				continue
			}
			args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
			if len(args) > 2 && args[1] == "_supervise" && args[len(args)-1] == name && strings.Contains(string(b), u.dataDir) {
				return pid, true
			}
		}
	}
	return 0, false
}

func isQEMU(p hostProc) bool  { return strings.HasPrefix(p.comm, "qemu-system") }
func isPasst(p hostProc) bool { return strings.HasPrefix(p.comm, "passt") }
func isSupervisor(p hostProc) bool {
	return strings.Contains(p.cmdline, " _supervise ") && strings.HasPrefix(p.comm, "hutch")
}

// supervisorOf is the VM name a supervisor serves: its last argument.
func supervisorOf(p hostProc) string {
	f := strings.Fields(p.cmdline)
	return f[len(f)-1]
}

// vmOfProc is the VM whose data or runtime dir a process touches, "" if
// none: for QEMU and passt, whose command lines do not name the VM. A
// process holding files of a VM's staging or trash dir is named after the
// VM with that dir.
func vmOfProc(u *tUser, p hostProc) string {
	for _, root := range []string{filepath.Join(u.dataDir, "hutch", "vms"), filepath.Join(u.runDir, "hutch", "vms")} {
		for _, f := range append(append([]string{}, p.files...), strings.Fields(p.cmdline)...) {
			rest, ok := strings.CutPrefix(f, root+"/")
			if !ok {
				if i := strings.Index(f, root+"/"); i >= 0 {
					rest, ok = f[i+len(root)+1:], true
				}
			}
			if !ok {
				continue
			}
			n, _, _ := strings.Cut(rest, "/")
			// Staging and trash dirs end in the VM's name.
			if f := strings.SplitN(n, "-", 5); len(f) == 5 && (f[0] == ".new" || f[0] == ".rm") {
				return f[4] + " (in " + f[0] + " dir " + n + ")"
			}
			if n != "" {
				return n
			}
		}
	}
	return ""
}

// dirNames lists a directory's entries; none for a missing directory.
func dirNames(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// stagingLeftovers lists staging and trash dirs in u's data dir.
func stagingLeftovers(u *tUser) []string {
	var left []string
	for _, n := range dirNames(filepath.Join(u.dataDir, "hutch", "vms")) {
		if strings.HasPrefix(n, ".new-") || strings.HasPrefix(n, ".rm-") || strings.HasPrefix(n, ".tmp-") {
			left = append(left, n)
		}
	}
	return left
}

// psAll is `hutch ps -a --format json` as a map by name, failing the test
// on a duplicate name or output that does not parse.
func psAll(t *testing.T, u *tUser) map[string]view {
	t.Helper()
	r := tryHutch(u, "ps", "-a", "--format", "json")
	if r.code != 0 {
		t.Fatalf("hutch ps -a: %v", r)
	}
	var vs []view
	if err := json.Unmarshal([]byte(r.out), &vs); err != nil {
		t.Fatalf("hutch ps -a printed no JSON list: %v: %s", err, r.out)
	}
	m := map[string]view{}
	for _, v := range vs {
		if _, dup := m[v.Name]; dup {
			t.Errorf("hutch ps -a lists %q twice: %s", v.Name, r.out)
		}
		m[v.Name] = v
	}
	return m
}

// checkTruthful checks what `ps -a` and `inspect` say about name against
// the process table and the disk, and returns whether the VM exists. A VM
// may be between two states when the check starts (its `run` was killed
// after the supervisor started and it goes on starting; its QEMU just died
// and the supervisor is recording it), so the check looks again until
// both sides agree, and reports only what stays wrong for 10 s.
func checkTruthful(t *testing.T, u *tUser, name string) bool {
	t.Helper()
	var present bool
	var problems []string
	waitFor(10*time.Second, func() bool {
		present, problems = judgeVM(t, u, name)
		return len(problems) == 0
	})
	for _, p := range problems {
		t.Error(p)
	}
	return present
}

// judgeVM compares one look of ps -a and inspect at name with the
// processes and files of the VM.
func judgeVM(t *testing.T, u *tUser, name string) (present bool, problems []string) {
	t.Helper()
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	v, present := psAll(t, u)[name]
	ins := tryHutch(u, "inspect", name)
	running := procsUnder(vmRunDir(u, name), vmDataDir(u, name))
	if !present {
		if ins.code != 1 || !strings.Contains(ins.err, "no such vm: "+name) {
			bad("ps -a does not list %s, but inspect says: %v", name, ins)
		}
		if _, err := os.Stat(vmDataDir(u, name)); !os.IsNotExist(err) {
			bad("ps -a does not list %s, but its data dir is there (%v): %v", name, err, dirNames(vmDataDir(u, name)))
		}
		if _, err := os.Stat(vmRunDir(u, name)); !os.IsNotExist(err) {
			bad("ps -a does not list %s, but its runtime dir is there (%v): %v", name, err, dirNames(vmRunDir(u, name)))
		}
		if len(running) != 0 {
			bad("ps -a does not list %s, but processes of it run:\n%s", name, procList(running))
		}
		return false, problems
	}
	var iv view
	if ins.code != 0 || json.Unmarshal([]byte(ins.out), &iv) != nil || iv.Name != name {
		bad("ps -a lists %s (%s) but inspect says: %v", name, v.State, ins)
	}
	switch v.State {
	case "running":
		if v.SupervisorPid == 0 || procStatus(v.SupervisorPid) == nil {
			bad("%s is listed running, but its supervisor (pid %d) is not alive", name, v.SupervisorPid)
		}
		if v.Pid == 0 || procStatus(v.Pid) == nil {
			bad("%s is listed running, but its qemu (pid %d) is not alive", name, v.Pid)
		}
		if v.PasstPid != 0 && procStatus(v.PasstPid) == nil {
			bad("%s is listed running with passt pid %d, which is not alive", name, v.PasstPid)
		}
		if _, err := os.Stat(vmRunDir(u, name) + "/qmp.sock"); err != nil {
			bad("%s is listed running, but its qmp socket is gone: %v", name, err)
		}
	case "stopped":
		if v.Pid != 0 || v.SupervisorPid != 0 || v.PasstPid != 0 || v.ExitCode == nil || v.Reason == "" {
			bad("%s is listed stopped as %+v: want no pids, an exit code and a reason", name, v)
		}
		// Nothing of a stopped VM runs, and its sockets are gone once a
		// command has looked (ps tidies after dead supervisors).
		if len(running) != 0 {
			bad("%s is listed stopped (%s), but processes of it run:\n%s", name, v.Reason, procList(running))
		}
		if _, err := os.Stat(vmRunDir(u, name)); !os.IsNotExist(err) {
			bad("%s is listed stopped, but its runtime dir remains: %v", name, dirNames(vmRunDir(u, name)))
		}
	default:
		what := "no process of it runs"
		if len(running) != 0 {
			what = "these processes of it run:\n" + procList(running)
		}
		bad("%s is listed in state %q (reason %q, exit code %v) while no hutch command works on it and %s; want running or stopped",
			name, v.State, v.Reason, v.ExitCode, what)
	}
	return true, problems
}

// checkGoneClean asserts that u has no VM left at all: no record, no
// runtime dir, no staging or trash, no process, and ps -a says so.
func checkGoneClean(t *testing.T, u *tUser, why string) {
	t.Helper()
	waitNoUserProcs(t, u, 10*time.Second, why)
	// Reported; now ended, since no hutch command can: the failure stays
	// with this test rather than with the suite's final check.
	for _, p := range userProcs(u) {
		sigkill(t, p.pid)
	}
	if vs := psAll(t, u); len(vs) != 0 {
		t.Errorf("%s: ps -a still lists %v", why, vs)
	}
	if left := dirNames(filepath.Join(u.dataDir, "hutch", "vms")); len(left) != 0 {
		t.Errorf("%s: the data dir holds %v", why, left)
	}
	if left := dirNames(filepath.Join(u.runDir, "hutch", "vms")); len(left) != 0 {
		t.Errorf("%s: the runtime dir holds %v", why, left)
	}
}

// rmForce removes name with `rm -f`, which must succeed when ps -a lists
// it and say "no such vm" when it does not.
func rmForce(t *testing.T, u *tUser, name string, listed bool) {
	t.Helper()
	r := tryHutch(u, "rm", "-f", name)
	switch {
	case listed && r.code != 0:
		t.Errorf("rm -f %s of a listed vm: %v", name, r)
	case !listed && (r.code != 1 || !strings.Contains(r.err, "no such vm: "+name)):
		t.Errorf("rm -f %s of an unlisted vm: %v; want exit 1 and no such vm", name, r)
	}
}

// tcpPortFree reports whether a TCP port on 127.0.0.1 can be bound.
func tcpPortFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// sigkill sends SIGKILL to pid.
func sigkill(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Logf("kill -9 %d: %v", pid, err)
	}
}

// startHutch starts hutch as u and returns the command with a channel
// that gets its result.
func startHutch(t *testing.T, u *tUser, args ...string) (*exec.Cmd, <-chan result) {
	t.Helper()
	c := u.cmd(args...)
	var o, e bytes.Buffer
	c.Stdout, c.Stderr = &o, &e
	if err := c.Start(); err != nil {
		t.Fatalf("start hutch %v: %v", args, err)
	}
	done := make(chan result, 1)
	go func() {
		err := c.Wait()
		r := result{out: o.String(), err: e.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				r.code = 128 + int(ws.Signal())
			}
		}
		done <- r
	}()
	return c, done
}

// killWhen kills the command with SIGKILL as soon as cond holds, and says
// whether it did so while the command still ran.
func killWhen(c *exec.Cmd, done <-chan result, timeout time.Duration, cond func() bool) (result, bool) {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case r := <-done:
			return r, false
		default:
		}
		if cond() || time.Now().After(deadline) {
			c.Process.Kill()
			r := <-done
			return r, r.code == 128+int(syscall.SIGKILL)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// isOneHutchLine checks stderr is one line starting "hutch: ".
func isOneHutchLine(stderr string) bool {
	s := strings.TrimSuffix(stderr, "\n")
	return strings.HasPrefix(s, "hutch: ") && !strings.Contains(s, "\n")
}

// dirWatch reports entries created in, or renamed into, one directory
// (inotify): fast enough to act between two steps of a command.
type dirWatch struct{ fd int }

func watchDir(t *testing.T, dir string) *dirWatch {
	t.Helper()
	return watchDirFor(t, dir, unix.IN_CREATE|unix.IN_MOVED_TO)
}

// watchDirFor reports the events of mask on a directory's entries, e.g.
// IN_OPEN: a file in it was opened.
func watchDirFor(t *testing.T, dir string, mask uint32) *dirWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		t.Fatalf("watch %s: %v", dir, err)
	}
	return &dirWatch{fd: fd}
}

// wait returns once an entry for which match holds appears, or false
// after timeout.
func (w *dirWatch) wait(match func(name string) bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 64<<10)
	for time.Now().Before(deadline) {
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(fds, 100); n <= 0 {
			continue
		}
		n, err := unix.Read(w.fd, buf)
		if err != nil {
			continue
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			if match(name) {
				return true
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
	return false
}

func (w *dirWatch) close() { unix.Close(w.fd) }
