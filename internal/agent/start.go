//go:build linux

package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/console"
)

// defaultPath is the PATH a process gets when its environment has none,
// as runc and Docker use.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// start runs p as process id in the container (see Stage) and relays its
// stdio.
func (a *guestAgent) start(id uint32, p Process) error {
	if len(p.Args) == 0 {
		return fmt.Errorf("process %d has no args", id)
	}
	if a.proc(id) != nil {
		return fmt.Errorf("process %d exists", id)
	}
	c := a.container(id)
	if c == nil {
		c = a.container(p.Container)
	}
	if c == nil {
		return fmt.Errorf("process %d: no container %d", id, p.Container)
	}
	if _, err := lookPathIn(c.root, p.Args[0], p.Env); err != nil {
		return err
	}
	pr := &proc{id: id, stdin: make(chan []byte, 64), container: p.Container}
	if a.container(id) == c {
		pr.container = id
	}
	var child []*os.File // closed here once the child has them
	defer func() {
		for _, f := range child {
			f.Close()
		}
	}()
	var stdio []*os.File
	if p.Terminal {
		master, slave, err := console.OpenPty(filepath.Join(c.root, "dev/ptmx")) // the container's devpts
		if err != nil {
			return fmt.Errorf("open a terminal for process %d: %w", id, err)
		}
		if p.Rows != 0 {
			unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: p.Rows, Col: p.Cols})
		}
		child = append(child, slave)
		stdio = []*os.File{slave, slave, slave}
		pr.tty = master
		a.relayOut(pr, master, TypeStdout)
		go a.relayIn(pr, master)
	} else {
		var files [3]*os.File
		for i, t := range []Type{0, TypeStdout, TypeStderr} {
			r, w, err := os.Pipe()
			if err != nil {
				return fmt.Errorf("stdio of process %d: %w", id, err)
			}
			if i == 0 {
				files[0] = r
				child = append(child, r)
				go a.relayIn(pr, w)
				continue
			}
			files[i] = w
			child = append(child, w)
			a.relayOut(pr, r, t)
		}
		stdio = files[:]
	}

	pid, err := a.spawn(id, p, stdio)
	if err != nil {
		pr.stdin <- nil
		return fmt.Errorf("start %s: %w", p.Args[0], err)
	}
	a.mu.Lock()
	pr.pid = pid
	a.procs[id] = pr
	a.byPid[pid] = pr
	ws, early := a.orphans[pid]
	delete(a.orphans, pid)
	a.mu.Unlock()
	if err := a.conn.SendJSON(TypeStarted, id, Started{Pid: pid}); err != nil {
		return err
	}
	if early {
		go a.exited(pr, ws)
	}
	return nil
}

// spawn hands p and its stdio to a stage, which execs p's command: the
// container's own stage, waiting since setup, for the first process, a
// new one in the container's PID namespace for an exec. It returns the
// process's pid once the command runs.
func (a *guestAgent) spawn(id uint32, p Process, stdio []*os.File) (int, error) {
	a.mu.Lock()
	own, first := a.containers[id], false
	c := own
	if c != nil && c.init != nil {
		first = true
	} else if c == nil {
		c = a.containers[p.Container]
	}
	var st *stageConn
	var initPid, shared int
	var ownPIDs bool
	if c != nil {
		st, initPid, ownPIDs, shared = c.init, c.initPid, c.ownPIDs, c.sharedWith
		if first {
			c.init = nil
		}
	}
	a.mu.Unlock()
	switch {
	case c == nil:
		return 0, errors.New("the container is not set up")
	case own != nil && !first:
		return 0, errors.New("the container's process started already")
	case !first && initPid == 0:
		return 0, errors.New("the container is not running")
	case !first:
		enter := 0
		switch {
		case shared != 0:
			enter = shared
		case ownPIDs:
			enter = initPid
		}
		var err error
		if st, err = a.forkStage(false, enter); err != nil {
			return 0, err
		}
	}
	defer st.close()
	if err := st.send(stageRequest{Root: c.root, Process: &p, Cgroup: c.cgroup}); err != nil {
		return 0, err
	}
	if err := unix.Sendmsg(int(st.sock.Fd()), []byte{0}, unix.UnixRights(int(stdio[0].Fd()), int(stdio[1].Fd()), int(stdio[2].Fd())), nil, 0); err != nil {
		return 0, fmt.Errorf("hand the stdio over: %w", err)
	}
	if err := st.result(); err != nil {
		return 0, err
	}
	return st.pid, nil
}

// stageConn is the agent's end of a stage.
type stageConn struct {
	pid      int
	requests *os.File
	sock     *os.File
	reports  *json.Decoder
}

// forkStage starts a stage: in a new PID namespace, or in the one of the
// process enter (0: the agent's). The fork happens on a thread of its
// own, which ends with its goroutine, so what it enters stays with it.
func (a *guestAgent) forkStage(newPIDs bool, enter int) (*stageConn, error) {
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer reqR.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		reqW.Close()
		return nil, err
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "stage"), os.NewFile(uintptr(fds[1]), "stage")
	defer theirs.Close()
	attr := &os.ProcAttr{Files: []*os.File{nil, nil, nil, reqR, theirs}, Sys: &syscall.SysProcAttr{Setsid: true}}
	if newPIDs {
		attr.Sys.Cloneflags = unix.CLONE_NEWPID
	}
	done := make(chan error, 1)
	var pid int
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if enter != 0 {
			if err := a.enterPIDs(enter); err != nil {
				done <- err
				return
			}
		}
		proc, err := os.StartProcess("/proc/self/exe", []string{"hutch-agent", Stage}, attr)
		if err != nil {
			done <- fmt.Errorf("start the container's stage: %w", err)
			return
		}
		pid = proc.Pid
		proc.Release() // reap collects it
		done <- nil
	}()
	if err := <-done; err != nil {
		reqW.Close()
		mine.Close()
		return nil, err
	}
	return &stageConn{pid: pid, requests: reqW, sock: mine, reports: json.NewDecoder(mine)}, nil
}

func (c *stageConn) send(r stageRequest) error {
	if err := json.NewEncoder(c.requests).Encode(r); err != nil {
		return fmt.Errorf("write to the container's stage: %w", err)
	}
	return nil
}

// result waits for the stage's report: nil for a setup it completed, or a
// process it exec-ed (the socket closes with no report).
func (c *stageConn) result() error {
	var r stageReport
	switch err := c.reports.Decode(&r); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return fmt.Errorf("read the container's stage: %w", err)
	case r.NotFound:
		return fmt.Errorf("%s: %w", strings.TrimSuffix(r.Error, ": "+errNotFound.Error()), errNotFound)
	case r.Error != "":
		return errors.New(r.Error)
	}
	return nil
}

// close releases the agent's ends; a stage still waiting for its process
// then exits.
func (c *stageConn) close() {
	c.requests.Close()
	c.sock.Close()
}

// enterPIDs makes the calling thread's children members of the PID
// namespace of the process pid.
func (a *guestAgent) enterPIDs(pid int) error {
	fd, err := unix.Openat(a.procFD, fmt.Sprintf("%d/ns/pid", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("find the container's PID namespace: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWPID); err != nil {
		return fmt.Errorf("enter the container's PID namespace: %w", err)
	}
	return nil
}

// capabilityNames are the capabilities by number.
var capabilityNames = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
	"CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND",
	"CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"}

// capabilityMask is the set of named capabilities as a bit mask. Names
// the agent does not know are left out, as runc ignores them.
func capabilityMask(names []string) uint64 {
	var m uint64
	for _, n := range names {
		if i := slices.Index(capabilityNames, n); i >= 0 {
			m |= 1 << i
		}
	}
	return m
}

// setCapabilities drops from the calling thread's bounding set what c's
// does not hold and sets its inheritable set to c's; it returns the
// ambient capabilities for the child to raise. As with runc, those are
// the ones of c's ambient set that are also inheritable and permitted
// (the kernel refuses the others; runc warns and goes on).
func setCapabilities(c Capabilities) ([]uintptr, error) {
	bounding := capabilityMask(c.Bounding)
	ambient := capabilityMask(c.Ambient) & capabilityMask(c.Inheritable) & capabilityMask(c.Permitted)
	var raise []uintptr
	for n := 0; n < 64; n++ {
		// PR_CAPBSET_READ fails past the kernel's last capability.
		if _, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(n), 0, 0, 0); err != nil {
			break
		}
		if bounding&(1<<n) == 0 {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(n), 0, 0, 0); err != nil {
				return nil, fmt.Errorf("drop %s from the bounding set: %w", capabilityName(n), err)
			}
		}
		if ambient&(1<<n) != 0 {
			raise = append(raise, uintptr(n))
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("read capabilities: %w", err)
	}
	inheritable := capabilityMask(c.Inheritable)
	data[0].Inheritable, data[1].Inheritable = uint32(inheritable), uint32(inheritable>>32)
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("set the inheritable capabilities: %w", err)
	}
	return raise, nil
}

func capabilityName(n int) string {
	if n < len(capabilityNames) {
		return capabilityNames[n]
	}
	return fmt.Sprintf("capability %d", n)
}

var rlimits = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

// errNotFound is runc's error for a command that is not there.
var errNotFound = errors.New("executable file not found in $PATH")

// lookPathIn resolves a command as the process's own PATH would, for a
// process whose root is root; it returns the path as the process sees it.
func lookPathIn(root, name string, env []string) (string, error) {
	if filepath.IsAbs(name) {
		// runc's words, which engines turn into 127 and 126.
		p, err := resolveIn(root, name)
		if err != nil {
			return "", fmt.Errorf("exec: %q: %w", name, err)
		}
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			return "", fmt.Errorf("exec: %q: %w", name, err)
		case fi.IsDir() || fi.Mode()&0o111 == 0:
			return "", fmt.Errorf("exec: %q: permission denied", name)
		}
		return name, nil
	}
	if strings.Contains(name, "/") {
		return name, nil // relative to the process's cwd, found at start
	}
	path := defaultPath
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		cand := filepath.Join(dir, name)
		p, err := resolveIn(root, cand)
		if err != nil {
			continue
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return cand, nil
		}
	}
	return "", fmt.Errorf("exec: %q: %w", name, errNotFound)
}

// relayOut sends what the process writes, as frames of type t.
func (a *guestAgent) relayOut(p *proc, r *os.File, t Type) {
	p.output.Add(1)
	go func() {
		defer p.output.Done()
		defer func() {
			if p.tty == nil {
				r.Close()
			}
		}()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if a.conn.Send(t, p.id, buf[:n]) != nil {
					return
				}
			}
			if err != nil {
				return // EOF, or EIO from a pty whose last holder left
			}
		}
	}()
}

// relayIn writes the host's stdin frames to the process; a nil chunk is
// EOF.
func (a *guestAgent) relayIn(p *proc, w io.WriteCloser) {
	for b := range p.stdin {
		if b == nil {
			if p.tty == nil {
				w.Close()
			}
			return
		}
		if _, err := w.Write(b); err != nil {
			if p.tty == nil {
				w.Close()
			}
			return
		}
	}
}
