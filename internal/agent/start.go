//go:build linux

package agent

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
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

// spawn starts the process with p's rlimits, umask and no_new_privs. The
// first two are per process and the last per thread, so they are set on
// the agent around the fork, one start at a time.
func (a *guestAgent) spawn(path string, p Process, attr *os.ProcAttr) (int, error) {
	a.startMu.Lock()
	defer a.startMu.Unlock()
	runtime.LockOSThread()
	// no_new_privs cannot be undone: the thread must not run anything else.
	if !p.NoNewPrivs {
		defer runtime.UnlockOSThread()
	} else if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return 0, fmt.Errorf("set no_new_privs: %w", err)
	}
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
	proc, err := os.StartProcess(path, p.Args, attr)
	if err != nil {
		return 0, err
	}
	pid := proc.Pid
	proc.Release() // reap collects it
	return pid, nil
}

var rlimits = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

// lookPath resolves a command as the process's own PATH would.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
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
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", name)
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
