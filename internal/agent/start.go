//go:build linux

package agent

import (
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

// start runs p as process id inside the container's root (the agent's
// own root by then) and relays its stdio.
func (a *guestAgent) start(id uint32, p Process) error {
	if len(p.Args) == 0 {
		return fmt.Errorf("process %d has no args", id)
	}
	if a.proc(id) != nil {
		return fmt.Errorf("process %d exists", id)
	}
	path, err := lookPath(p.Args[0], p.Env)
	if err != nil {
		return err
	}
	pr := &proc{id: id, stdin: make(chan []byte, 64)}
	var child []*os.File // closed here once the child has them
	defer func() {
		for _, f := range child {
			f.Close()
		}
	}()
	attr := &os.ProcAttr{Dir: p.Cwd, Env: p.Env, Sys: &syscall.SysProcAttr{
		Setsid:     true,
		Credential: &syscall.Credential{Uid: p.UID, Gid: p.GID, Groups: p.AdditionalGids},
	}}
	if p.Terminal {
		master, slave, err := console.OpenPty("/dev/ptmx")
		if err != nil {
			return fmt.Errorf("open a terminal for process %d: %w", id, err)
		}
		if p.Rows != 0 {
			unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: p.Rows, Col: p.Cols})
		}
		child = append(child, slave)
		attr.Files = []*os.File{slave, slave, slave}
		attr.Sys.Setctty, attr.Sys.Ctty = true, 0
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
		attr.Files = files[:]
	}

	pid, err := a.spawn(path, p, attr)
	if err != nil {
		pr.stdin <- nil
		return fmt.Errorf("start %s: %w", p.Args[0], err)
	}
	a.mu.Lock()
	pr.pid = pid
	if a.initPid == 0 {
		a.initPid = pid
	}
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

// spawn starts the process with p's rlimits, umask, capabilities and
// no_new_privs. Rlimits and the umask are per process: they are set on the
// agent around the fork, one start at a time. Capabilities and
// no_new_privs are per thread and cannot all be undone: a thread of its
// own takes them, forks, and ends with its goroutine.
func (a *guestAgent) spawn(path string, p Process, attr *os.ProcAttr) (int, error) {
	a.startMu.Lock()
	defer a.startMu.Unlock()
	for _, r := range p.Rlimits {
		res, ok := rlimits[r.Type]
		if !ok {
			return 0, fmt.Errorf("unknown rlimit %q", r.Type)
		}
		var old unix.Rlimit
		unix.Getrlimit(res, &old)
		if err := unix.Setrlimit(res, &unix.Rlimit{Cur: r.Soft, Max: r.Hard}); err != nil {
			return 0, fmt.Errorf("set %s to %d/%d: %w", r.Type, r.Soft, r.Hard, err)
		}
		defer unix.Setrlimit(res, &old)
	}
	if p.Umask != nil {
		old := unix.Umask(int(*p.Umask))
		defer unix.Umask(old)
	}
	type result struct {
		pid int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		pid, err := forkAs(path, p, attr)
		done <- result{pid, err}
	}()
	r := <-done
	return r.pid, r.err
}

// forkAs starts the process from the calling thread, which it first gives
// p's no_new_privs, bounding and inheritable sets; the ambient set is
// raised in the child after it changes uid. The kernel then gives a
// process of uid 0 the bounding set as permitted and effective, and any
// other uid its ambient set, as with runc.
func forkAs(path string, p Process, attr *os.ProcAttr) (int, error) {
	if p.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return 0, fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	if c := p.Capabilities; c != nil {
		ambient, err := setCapabilities(*c)
		if err != nil {
			return 0, err
		}
		attr.Sys.AmbientCaps = ambient
	}
	proc, err := os.StartProcess(path, p.Args, attr)
	if err != nil {
		return 0, err
	}
	pid := proc.Pid
	proc.Release() // reap collects it
	return pid, nil
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

// lookPath resolves a command as the process's own PATH would.
func lookPath(name string, env []string) (string, error) {
	if filepath.IsAbs(name) {
		// runc's words, which engines turn into 127 and 126.
		fi, err := os.Stat(name)
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
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
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
