//go:build linux

package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/guest"
)

// RootfsMount is where the container's root is assembled before it
// becomes the guest's root.
const RootfsMount = "/rootfs"

// Run is hutch-agent as the guest's PID 1. It never returns: when the
// host goes away or setup fails, the guest powers off.
func Run() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err := run(); err != nil {
		fmt.Fprintln(os.Stdout, "hutch-agent:", err)
	}
	unix.Sync()
	for {
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		time.Sleep(time.Second)
	}
}

func run() error {
	for _, m := range []struct{ fs, dir string }{{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}} {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.fs, m.dir, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
	}
	guest.LoadModules()
	guest.SetPageReportingOrder()
	port, err := openPort(PortName, 20*time.Second)
	if err != nil {
		return err
	}
	a := &guestAgent{conn: NewConn(port), procs: map[uint32]*proc{}, byPid: map[int]*proc{}, orphans: map[int]unix.WaitStatus{},
		containers: map[uint32]*container{}}
	return a.serve()
}

// openPort opens the virtio-serial port named name once udev-less devtmpfs
// shows it.
func openPort(name string, wait time.Duration) (*os.File, error) {
	deadline := time.Now().Add(wait)
	for {
		ents, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, e := range ents {
			if b, err := os.ReadFile(e); err == nil && strings.TrimSpace(string(b)) == name {
				return os.OpenFile("/dev/"+filepath.Base(filepath.Dir(e)), os.O_RDWR, 0)
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no virtio-serial port named %s after %s", name, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type guestAgent struct {
	conn *Conn
	// procFD is the guest's /proc, read by its fd: a container's
	// processes see another.
	procFD int

	mu      sync.Mutex
	procs   map[uint32]*proc
	byPid   map[int]*proc
	orphans map[int]unix.WaitStatus // reaped before their start was recorded
	// containers are the pod's containers by the id of their own process
	// (0 for the first, the sandbox when there are several).
	containers map[uint32]*container
	fsMounted  bool // the shared tree, mounted once for every container
	cgroups    bool // the guest's cgroup tree is mounted
}

// container is one container in the guest.
type container struct {
	root    string
	init    *stageConn // its stage, until start execs its process
	initPid int
	// ownPIDs says its process is the first of a PID namespace of its
	// own, which later processes join.
	ownPIDs bool
	// cgroup is its group in the guest's tree ("" without one).
	cgroup string
	// sharedWith is the pid of the pod's sandbox process whose PID
	// namespace this container joined (Kubernetes' shared process
	// namespace), 0 if it has none.
	sharedWith int
}

// ContainerRoot is where container id's root is assembled: RootfsMount
// for the first, a directory of its own for each later one.
func ContainerRoot(id uint32) string {
	if id == 0 {
		return RootfsMount
	}
	return fmt.Sprintf("/containers/%d", id)
}

// container is the container whose process id is, or that id was
// exec-ed in.
func (a *guestAgent) container(id uint32) *container {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.containers[id]; c != nil {
		return c
	}
	if p := a.procs[id]; p != nil {
		return a.containers[p.container]
	}
	return nil
}

type proc struct {
	container uint32 // the id of its container's own process
	id        uint32
	pid       int
	stdin     chan []byte // nil data closes
	tty       *os.File    // the pty master with a terminal
	output    sync.WaitGroup
}

func (a *guestAgent) serve() error {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD)
	go func() {
		for range sigs {
			a.reap()
		}
	}()
	if err := a.conn.Send(TypeReady, 0, nil); err != nil {
		return fmt.Errorf("say ready: %w", err)
	}
	for {
		f, err := a.conn.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return ErrClosed
			}
			return fmt.Errorf("read from host: %w", err)
		}
		if err := a.handle(f); err != nil {
			a.conn.SendJSON(TypeError, f.ID, Error{Message: err.Error()})
		}
	}
}

func (a *guestAgent) handle(f Frame) error {
	switch f.Type {
	case TypeSetup:
		var s Setup
		if err := f.Decode(&s); err != nil {
			return err
		}
		first := f.ID == 0
		if err := a.setup(f.ID, s); err != nil {
			if errors.Is(err, errNotFound) {
				return err // runc's words, which engines turn into exit status 127
			}
			return fmt.Errorf("set up the container: %w", err)
		}
		if first {
			go a.watchPorts()
		}
		return a.conn.Send(TypeSetUp, f.ID, nil)
	case TypeRemove:
		return a.remove(f.ID)
	case TypeStats:
		st, err := a.stats(f.ID)
		if err != nil {
			return err
		}
		return a.conn.SendJSON(TypeUsage, f.ID, st)
	case TypeUpdate:
		var r Resources
		if err := f.Decode(&r); err != nil {
			return err
		}
		if err := a.update(f.ID, r); err != nil {
			return err
		}
		return a.conn.Send(TypeUpdated, f.ID, nil)
	case TypeStart:
		var p Process
		if err := f.Decode(&p); err != nil {
			return err
		}
		return a.start(f.ID, p)
	case TypeStdin, TypeClose:
		if p := a.proc(f.ID); p != nil && p.stdin != nil {
			if f.Type == TypeClose {
				p.stdin <- nil
			} else {
				p.stdin <- f.Payload
			}
		}
	case TypeSignal:
		var s Signal
		if err := f.Decode(&s); err != nil {
			return err
		}
		return a.signal(f.ID, s)
	case TypeResize:
		var s Size
		if err := f.Decode(&s); err != nil {
			return err
		}
		if p := a.proc(f.ID); p != nil && p.tty != nil {
			return unix.IoctlSetWinsize(int(p.tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: s.Rows, Col: s.Cols})
		}
	default:
		return fmt.Errorf("unknown frame type %d", f.Type)
	}
	return nil
}

func (a *guestAgent) proc(id uint32) *proc {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.procs[id]
}

func (a *guestAgent) signal(id uint32, s Signal) error {
	if s.All {
		c := a.container(id)
		if c == nil {
			return fmt.Errorf("container %d is not running", id)
		}
		return a.signalAll(c, unix.Signal(s.Signal))
	}
	p := a.proc(id)
	if p == nil || p.pid == 0 {
		return fmt.Errorf("process %d is not running", id)
	}
	return unix.Kill(p.pid, unix.Signal(s.Signal))
}

// reap collects every exited child: as PID 1 the agent also inherits the
// container's orphans.
func (a *guestAgent) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		a.mu.Lock()
		p := a.byPid[pid]
		if p == nil {
			a.orphans[pid] = ws
		}
		a.mu.Unlock()
		if p != nil {
			go a.exited(p, ws)
		}
	}
}

// exited reports p's end once its output is all sent.
func (a *guestAgent) exited(p *proc, ws unix.WaitStatus) {
	if c := a.container(p.id); c != nil && p.pid == c.initPid {
		// The container ends with its process: nothing may outlive it, and
		// what is left would hold the output pipes open. The kernel ends a
		// PID namespace with its first process.
		a.signalAll(c, unix.SIGKILL)
		a.mu.Lock()
		c.initPid = 0 // the pid may be another process's from now on
		a.mu.Unlock()
	}
	drained := make(chan struct{})
	go func() { p.output.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
		// A background child still holds the output open.
	}
	e := Exit{Code: ws.ExitStatus()}
	if ws.Signaled() {
		e = Exit{Signal: int(ws.Signal())}
	}
	a.mu.Lock()
	delete(a.byPid, p.pid)
	delete(a.procs, p.id)
	a.mu.Unlock()
	if p.stdin != nil {
		select { // ends the stdin writer, unless it is stuck on a holder's pipe
		case p.stdin <- nil:
		default:
		}
	}
	a.conn.SendJSON(TypeExit, p.id, e)
}

// signalAll signals every process of the container. Without a PID
// namespace of its own that is everything in the guest but the agent:
// from PID 1, pid -1 is every process but this one.
func (a *guestAgent) signalAll(c *container, sig unix.Signal) error {
	a.mu.Lock()
	initPid, own, shared := c.initPid, c.ownPIDs, c.sharedWith
	a.mu.Unlock()
	if initPid == 0 {
		return nil
	}
	if shared != 0 {
		return unix.Kill(initPid, sig) // the namespace is the pod's
	}
	if !own {
		return unix.Kill(-1, sig)
	}
	for _, pid := range a.containerPids(initPid) {
		unix.Kill(pid, sig)
	}
	return nil
}

// containerPids are the guest pids of the processes in the PID namespace
// of the process initPid, initPid first.
func (a *guestAgent) containerPids(initPid int) []int {
	ns := func(pid string) string {
		buf := make([]byte, 64)
		n, err := unix.Readlinkat(a.procFD, pid+"/ns/pid", buf)
		if err != nil {
			return ""
		}
		return string(buf[:n])
	}
	want := ns(strconv.Itoa(initPid))
	if want == "" {
		return nil
	}
	pids := []int{initPid}
	fd, err := unix.Openat(a.procFD, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return pids
	}
	dir := os.NewFile(uintptr(fd), "/proc")
	defer dir.Close()
	names, _ := dir.Readdirnames(-1)
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid == initPid {
			continue
		}
		if ns(name) == want {
			pids = append(pids, pid)
		}
	}
	return pids
}
