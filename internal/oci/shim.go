package oci

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/hutch-vm/hutch/internal/agent"
	"github.com/hutch-vm/hutch/internal/config"
	"github.com/hutch-vm/hutch/internal/console"
	"github.com/hutch-vm/hutch/internal/launcher"
	"github.com/hutch-vm/hutch/internal/qemu"
	"github.com/hutch-vm/hutch/internal/store"
	"github.com/hutch-vm/hutch/internal/virtiofs"
)

// ShimCommand is hutch-runtime's hidden verb for a container's shim.
const ShimCommand = "_shim"

// shim is the host process of one container: engines see its pid as the
// container's. It owns the VMM, relays the container's stdio and signals
// through the agent, and exits with the container's status.
type shim struct {
	rt     Runtime
	id     string
	paths  store.Container
	bundle *Bundle
	log    *os.File
	conn   *agent.Conn
	vm     *vm
	net    GuestNet
	// noNIC says the container has no network (a namespace with only
	// loopback: --network none), so its VM gets no NIC either.
	noNIC bool
	// shares is the container's file server, nil when its files are
	// copied instead; shareNames names each shared bind mount's entry.
	shares     *virtiofs.Server
	shareNames map[int]string
	// fs is the running virtiofsd, fsConn the VMM's end of its socket
	// until the VMM has it.
	fs     *launcher.Helper
	fsConn *os.File
	// hostRoot says create gave the shim a mount namespace of its own and
	// the host's root at hostRootFD.
	hostRoot bool
	// cfg is hutch-runtime's configuration, read from cfgPath.
	cfg     config.Config
	cfgPath string

	mu     sync.Mutex
	procs  map[uint32]*hostProc
	nextID uint32
	ports  map[string]bool
	// refused are ports QEMU would not forward, each logged once.
	refused map[string]bool
	started bool
	exit    chan agent.Exit // the container's process ended
	// members are the processes of the pod's later containers, created
	// and not yet started, by id.
	members map[uint32]agent.Process
	// answers hears the agent's answer to a stats or update request, one
	// at a time (askMu).
	askMu   sync.Mutex
	answers chan agent.Frame
	asked   uint32
}

// hostProc is the host side of one container process: where its output
// goes, and who waits for it to start and end.
type hostProc struct {
	in           *os.File // nil: no stdin
	out, errw    *os.File
	tty          bool
	started      chan error
	exited       chan agent.Exit
	startedOnce  sync.Once
	exitedReport sync.Once
	// setUp hears a pod member's setup, until it is done.
	setUp chan error
}

// RunShim is the shim's main. ready receives "ok" once the container is
// created, or the error that stopped it. The returned code is the
// container's exit status.
func RunShim(root, id, consoleSocket string, hostRoot bool, ready *os.File) int {
	rt := Runtime{Root: root}
	s := &shim{rt: rt, id: id, hostRoot: hostRoot, paths: rt.paths(id), procs: map[uint32]*hostProc{}, nextID: 1,
		members: map[uint32]agent.Process{},
		ports:   map[string]bool{}, refused: map[string]bool{}, exit: make(chan agent.Exit, 1)}
	log, err := os.OpenFile(s.paths.ShimLog(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintf(ready, "open shim log: %v\n", err)
		return 1
	}
	s.log = log
	slog.SetDefault(slog.New(slog.NewTextHandler(log, nil)))
	code, err := s.run(consoleSocket, ready)
	if err != nil {
		slog.Error("shim", "err", err)
		if ready != nil {
			fmt.Fprintln(ready, err)
		}
	}
	return code
}

// ignored are signals the shim keeps for itself.
var ignored = map[os.Signal]bool{unix.SIGCHLD: true, unix.SIGURG: true, unix.SIGPIPE: true, unix.SIGWINCH: true}

func (s *shim) run(consoleSocket string, ready *os.File) (int, error) {
	rec, err := s.rt.load(s.id)
	if err != nil {
		return 1, err
	}
	if s.bundle, err = LoadBundle(rec.Bundle); err != nil {
		return 1, err
	}

	if s.cfg, s.cfgPath, err = runtimeConfig(); err != nil {
		return 1, err
	}
	spec := s.bundle.Spec
	// Before anything else runs, create puts the shim in the container's
	// cgroup (what it starts stays there) and runs the create-time hooks,
	// which may set up the network namespace the VM then looks at
	// (Docker's bridge network is its prestart hook).
	if err := awaitPlacement(ready); err != nil {
		return 1, err
	}
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs)

	init := &hostProc{in: os.Stdin, out: os.Stdout, errw: os.Stderr, started: make(chan error, 1), exited: make(chan agent.Exit, 1)}
	if spec.Process.Terminal {
		if init, err = ttyProc(consoleSocket); err != nil {
			return 1, err
		}
	}
	s.procs[0] = init

	g, err := BuildGuest(store.RuntimeCache(s.rt.Root), "/boot", "/lib/modules")
	if err != nil {
		return 1, err
	}
	if why := sharingUnavailable(g); why != nil {
		// The block-image fallback: the container runs, but its writes
		// stay in the VM and its bind-mounted directories are empty.
		fmt.Fprintln(ready, readyNotice+"hutch-runtime cannot share files with the VM ("+why.Error()+"): the rootfs is copied into a disk image, writes stay in the VM and bind-mounted directories are empty")
		if err := BuildRootfs(s.bundle.Rootfs, s.paths.Rootfs()); err != nil {
			return 1, err
		}
	} else if s.shares, s.shareNames, err = fileShares(s.bundle); err != nil {
		return 1, err
	} else {
		if sandbox, _ := podRole(spec); sandbox {
			// The pod's later containers' files arrive here, each a mount
			// of its own with its own flags. The directory itself is
			// read-only to the guest: a guest that could rename or link in
			// it could turn the host's next bind there toward a host path.
			s.shares.Entries = append(s.shares.Entries, virtiofs.Entry{Name: podEntry, Source: filepath.Join(s.paths.Dir, podEntry), ReadOnly: true})
		}
		if err := s.startFS(); err != nil {
			return 1, err
		}
		defer s.stopFS()
	}
	if s.hostRoot {
		if err := enterContainerRoot(s.bundle.Rootfs, os.NewFile(hostRootFD, "/"), newPIDNamespace(spec)); err != nil {
			return 1, err
		}
	}
	if hasNetNamespace(spec) && os.Geteuid() == 0 {
		if restore := openLowPorts(); restore != nil {
			defer restore()
		}
	}
	if hasNetNamespace(spec) {
		if s.noNIC, err = isolatedNet(); err != nil {
			return 1, err
		}
	}
	if !s.noNIC {
		used, err := namespaceNets()
		if err != nil {
			return 1, err
		}
		if s.net, err = ChooseGuestNet(used); err != nil {
			return 1, err
		}
	}
	if s.vm, err = s.bootVM(g); err != nil {
		return 1, err
	}
	slog.Info("the VMM runs", "pid", s.vm.cmd.Process.Pid, "as", s.vm.user.Kind)
	defer s.vm.kill()
	slog.Info("accelerator", "accel", s.vm.accel.Accel, "reason", s.vm.accel.Reason)
	if n := s.vm.accel.Notice(); n != "" {
		fmt.Fprintln(ready, readyNotice+n)
	}
	go s.copyConsole()
	if err := s.rt.update(s.id, func(r *Record) {
		r.VMM, r.VMMPid, r.Lease = s.vm.user, s.vm.cmd.Process.Pid, s.vm.lease
	}); err != nil {
		return 1, err
	}
	s.conn = agent.NewConn(s.vm.agent)
	frames := make(chan agent.Frame, 64)
	recvErr := make(chan error, 1)
	go func() {
		for {
			f, err := s.conn.Recv()
			if err != nil {
				recvErr <- err
				close(frames)
				return
			}
			frames <- f
		}
	}()
	if err := s.handshake(frames, recvErr); err != nil {
		return 1, err
	}
	l, err := s.listen()
	if err != nil {
		return 1, err
	}
	defer l.Close()
	go s.serve(l)
	go s.dispatch(frames)

	slog.Info("created")
	fmt.Fprintln(ready, "ok")
	ready.Close()
	// From here the shim mostly waits, for as long as the container runs,
	// with a live heap of well under a MiB: give back what setting up left,
	// and collect before the heap doubles the runtime's 4 MiB floor, which
	// alone would be more than the shim's working set.
	debug.SetGCPercent(25)
	debug.FreeOSMemory()

	vmmDone := s.vm.exited
	for {
		select {
		case e := <-s.exit:
			slog.Info("the container's process exited", "status", e.Status())
			return s.finish(e.Status()), nil
		case <-vmmDone:
			// The guest went away; an exit it reported on its way out may
			// still be in flight, so give that a moment.
			slog.Error("the VMM exited", "err", s.vm.exitErr)
			vmmDone = nil
			go func() {
				time.Sleep(time.Second)
				select {
				case s.exit <- agent.Exit{Code: 255}:
				default:
				}
			}()
		case sig := <-sigs:
			if sig == unix.SIGWINCH && init.tty {
				s.sendSize(0, init.in)
				continue
			}
			if ignored[sig] {
				continue
			}
			s.mu.Lock()
			started := s.started
			s.mu.Unlock()
			n := int(sig.(syscall.Signal))
			if !started {
				// Nothing runs yet: the container ends as its process would.
				return s.finish(128 + n), nil
			}
			s.conn.SendJSON(agent.TypeSignal, 0, agent.Signal{Signal: n})
		}
	}
}

// unprivilegedPortStart is the sysctl of the network namespace this
// process is in.
const unprivilegedPortStart = "/proc/sys/net/ipv4/ip_unprivileged_port_start"

// openLowPorts lets the unprivileged VMM bind low ports in the container's
// network namespace, where published ports reach the guest, and returns
// what puts the old value back. Never in the host's own namespace (a
// bundle can name it): there it would open low ports to every user.
func openLowPorts() (restore func()) {
	if shared, err := sharesCallersNet(); err != nil || shared {
		slog.Warn("low ports stay privileged: the container shares the host's or its engine's network namespace, or that cannot be told", "err", err)
		return nil
	}
	old, err := os.ReadFile(unprivilegedPortStart)
	if err != nil {
		slog.Warn("low ports stay privileged in the container's namespace", "err", err)
		return nil
	}
	if err := os.WriteFile(unprivilegedPortStart, []byte("0"), 0); err != nil {
		slog.Warn("low ports stay privileged in the container's namespace", "err", err)
		return nil
	}
	return func() {
		if err := os.WriteFile(unprivilegedPortStart, old, 0); err != nil {
			slog.Warn("restore ip_unprivileged_port_start", "err", err)
		}
	}
}

// sharesCallersNet reports whether this process's network namespace is
// that of init or of whoever ran it (create, in the engine's namespace):
// either is the host's as far as the container is concerned. Init's may
// be out of reach (a sandbox); the caller's is always ours to see.
func sharesCallersNet() (bool, error) {
	self, err := os.Stat("/proc/self/ns/net")
	if err != nil {
		return false, err
	}
	caller, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", store.ParentInProc()))
	if err != nil {
		return false, err
	}
	if os.SameFile(self, caller) {
		return true, nil
	}
	if init, err := os.Stat("/proc/1/ns/net"); err == nil && os.SameFile(self, init) {
		return true, nil
	}
	return false, nil
}

// handshake waits for the agent and sets the container up.
func (s *shim) handshake(frames <-chan agent.Frame, recvErr <-chan error) error {
	timeout := time.After(s.cfg.BootTimeout)
	wait := func(want agent.Type) error {
		for {
			select {
			case f, ok := <-frames:
				if !ok {
					return fmt.Errorf("the guest closed its channel while booting: %v (see %s)", <-recvErr, s.paths.Console())
				}
				switch f.Type {
				case want:
					return nil
				case agent.TypeError:
					var e agent.Error
					f.Decode(&e)
					return errors.New(e.Message)
				}
			case <-s.vm.exited:
				return fmt.Errorf("the VMM exited while booting: %v (see %s)", s.vm.exitErr, s.paths.ShimLog())
			case <-timeout:
				return fmt.Errorf("the guest did not start its agent within %s (see %s; boot_timeout in %s sets the limit)", s.cfg.BootTimeout, s.paths.Console(), s.cfgPath)
			}
		}
	}
	if err := wait(agent.TypeReady); err != nil {
		return err
	}
	slog.Info("the guest agent is up")
	setup, err := s.setup()
	if err != nil {
		return err
	}
	if err := s.conn.SendJSON(agent.TypeSetup, 0, setup); err != nil {
		return fmt.Errorf("send setup: %w", err)
	}
	return wait(agent.TypeSetUp)
}

// dispatch routes the agent's frames to the processes they concern.
func (s *shim) dispatch(frames <-chan agent.Frame) {
	for f := range frames {
		s.mu.Lock()
		p := s.procs[f.ID]
		s.mu.Unlock()
		switch f.Type {
		case agent.TypePorts:
			var ports agent.Ports
			if f.Decode(&ports) == nil {
				s.forward(ports)
			}
			continue
		case agent.TypeUsage, agent.TypeUpdated:
			s.answer(f)
			continue
		case agent.TypeError:
			if s.answer(f) {
				continue
			}
		}
		if p == nil {
			continue
		}
		switch f.Type {
		case agent.TypeSetUp:
			s.setUpDone(p, nil)
		case agent.TypeStarted:
			p.startedOnce.Do(func() { p.started <- nil })
		case agent.TypeError:
			var e agent.Error
			f.Decode(&e)
			if s.setUpDone(p, errors.New(e.Message)) {
				continue
			}
			p.startedOnce.Do(func() { p.started <- errors.New(e.Message) })
		case agent.TypeStdout:
			p.out.Write(f.Payload)
		case agent.TypeStderr:
			p.errw.Write(f.Payload)
		case agent.TypeExit:
			var e agent.Exit
			f.Decode(&e)
			p.exitedReport.Do(func() { p.exited <- e })
			if f.ID == 0 {
				s.exit <- e
			} else {
				s.mu.Lock()
				delete(s.procs, f.ID)
				s.mu.Unlock()
			}
		}
	}
}

// startProc asks the agent to run proc as id and relays its stdin.
func (s *shim) startProc(id uint32, p *hostProc, proc agent.Process) error {
	if p.tty && p.in != nil {
		if ws, err := unix.IoctlGetWinsize(int(p.in.Fd()), unix.TIOCGWINSZ); err == nil {
			proc.Rows, proc.Cols = ws.Row, ws.Col
		}
	}
	if err := s.conn.SendJSON(agent.TypeStart, id, proc); err != nil {
		return fmt.Errorf("ask the guest to start the process: %w", err)
	}
	if err := <-p.started; err != nil {
		return err
	}
	if p.in != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := p.in.Read(buf)
				if n > 0 {
					s.conn.Send(agent.TypeStdin, id, buf[:n])
				}
				if err != nil {
					if !p.tty {
						s.conn.Send(agent.TypeClose, id, nil)
					}
					return
				}
			}
		}()
	}
	return nil
}

func (s *shim) sendSize(id uint32, tty *os.File) {
	if ws, err := unix.IoctlGetWinsize(int(tty.Fd()), unix.TIOCGWINSZ); err == nil {
		s.conn.SendJSON(agent.TypeResize, id, agent.Size{Rows: ws.Row, Cols: ws.Col})
	}
}

// forward makes the ports the container listens on reachable in the
// network namespace the VM lives in, where the engine publishes them: TCP
// and UDP alike, each keyed "proto/port".
func (s *shim) forward(ports agent.Ports) {
	if s.noNIC {
		return
	}
	want := map[string]bool{}
	for _, proto := range []struct {
		name  string
		ports []int
	}{{"tcp", ports.TCP}, {"udp", ports.UDP}} {
		for _, p := range validPorts(proto.ports) {
			want[proto.name+"/"+strconv.Itoa(p)] = true
		}
	}
	c, err := dialUnix("unix", s.vm.qmpPath)
	if err != nil {
		slog.Warn("forward ports", "err", err)
		return
	}
	q, err := qemu.NewQMP(c, 5*time.Second)
	if err != nil {
		slog.Warn("forward ports", "err", err)
		return
	}
	defer q.Close()
	for key := range want {
		if s.ports[key] || s.refused[key] {
			continue // a refusal is said once; a guest repeating it must not grow the log
		}
		proto, port, _ := strings.Cut(key, "/")
		out, err := q.HumanCommand(fmt.Sprintf("hostfwd_add n0 %s::%s-:%s", proto, port, port))
		if err != nil || out != "" {
			s.refused[key] = true
			slog.Warn("forward port", "port", key, "err", err, "qemu", truncate(out, 200))
			continue
		}
		s.ports[key] = true
		slog.Info("forwarding", "port", key)
	}
	for key := range s.ports {
		if !want[key] {
			proto, port, _ := strings.Cut(key, "/")
			q.HumanCommand(fmt.Sprintf("hostfwd_remove n0 %s::%s", proto, port))
			delete(s.ports, key)
		}
	}
}

// maxForwards bounds the ports of each protocol one guest can have
// forwarded: each is a listening socket in the container's namespace.
const maxForwards = 256

// validPorts is what the shim takes of a guest's port report: real port
// numbers, each once, at most maxForwards. The report is the guest's
// word, and a hostile guest's is not to be trusted.
func validPorts(ports []int) []int {
	seen := map[int]bool{}
	var out []int
	for _, p := range ports {
		if p < 1 || p > 65535 || seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
		if len(out) == maxForwards {
			break
		}
	}
	return out
}

// truncate bounds text from QEMU or a guest in a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// copyConsole keeps the guest's serial console, for when it fails to boot.
func (s *shim) copyConsole() {
	f, err := os.OpenFile(s.paths.Console(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		io.Copy(io.Discard, s.vm.serial)
		return
	}
	defer f.Close()
	// A guest that floods its console must not fill the disk.
	io.Copy(f, io.LimitReader(s.vm.serial, 1<<20))
	io.Copy(io.Discard, s.vm.serial)
}

// finish records the container's end; its status becomes the shim's.
func (s *shim) finish(status int) int {
	s.rt.update(s.id, func(r *Record) { r.Exit = &status })
	return status
}

// ttyProc opens the container's terminal: the master goes to the engine
// through the console socket, the shim keeps the slave as its controlling
// terminal (so it hears SIGWINCH) and relays it raw: the line discipline
// that matters is the guest's.
func ttyProc(consoleSocket string) (*hostProc, error) {
	if consoleSocket == "" {
		return nil, errors.New("process.terminal is set but no --console-socket was given")
	}
	master, slave, err := console.OpenPty("/dev/ptmx")
	if err != nil {
		return nil, fmt.Errorf("open a terminal: %w", err)
	}
	defer master.Close()
	if err := sendFD(consoleSocket, master); err != nil {
		slave.Close()
		return nil, err
	}
	unix.IoctlSetInt(int(slave.Fd()), unix.TIOCSCTTY, 0)
	term.MakeRaw(int(slave.Fd()))
	return &hostProc{in: slave, out: slave, errw: slave, tty: true, started: make(chan error, 1), exited: make(chan agent.Exit, 1)}, nil
}

// sendFD passes f over the unix socket at path, as runc passes a
// terminal's master to --console-socket.
func sendFD(path string, f *os.File) error {
	c, err := dialUnix("unix", path)
	if err != nil {
		return fmt.Errorf("connect to console socket %s: %w", path, err)
	}
	defer c.Close()
	if _, _, err := c.WriteMsgUnix([]byte(f.Name()), unix.UnixRights(int(f.Fd())), nil); err != nil {
		return fmt.Errorf("send the terminal to %s: %w", path, err)
	}
	return nil
}

// request is one message on the shim's socket.
type request struct {
	Op      string         `json:"op"` // start, exec, kill, signal, resize, member, remove
	Process *agent.Process `json:"process,omitempty"`
	Signal  int            `json:"signal,omitempty"`
	All     bool           `json:"all,omitempty"`
	// Setup is a pod member's, with Op member; Member names one in start,
	// kill and remove (0: the shim's own container).
	Setup  *agent.Setup `json:"setup,omitempty"`
	Member uint32       `json:"member,omitempty"`
	// Resources are update's.
	Resources *agent.Resources `json:"resources,omitempty"`
}

// reply answers a request; an exec gets a second one when its process ends.
type reply struct {
	Error  string       `json:"error,omitempty"`
	Member uint32       `json:"member,omitempty"` // the id a new pod member got
	Stats  *agent.Stats `json:"stats,omitempty"`
	Pid    int          `json:"pid,omitempty"`
	Exit   *int         `json:"exit,omitempty"`
	Status string       `json:"status,omitempty"`
}

func (s *shim) listen() (*net.UnixListener, error) {
	return listenUnix("unixpacket", s.paths.Shim())
}

func (s *shim) serve(l *net.UnixListener) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		go s.handle(c)
	}
}

func (s *shim) handle(c *net.UnixConn) {
	defer c.Close()
	buf, oob := make([]byte, 1<<16), make([]byte, unix.CmsgSpace(3*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return
	}
	files := receivedFiles(oob[:oobn])
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var req request
	if err := json.Unmarshal(buf[:n], &req); err != nil {
		send(c, reply{Error: "bad request: " + err.Error()})
		return
	}
	switch req.Op {
	case "start":
		if req.Member != 0 {
			send(c, s.startMember(req.Member))
			return
		}
		send(c, s.start())
	case "kill":
		if err := s.conn.SendJSON(agent.TypeSignal, req.Member, agent.Signal{Signal: req.Signal, All: req.All}); err != nil {
			send(c, reply{Error: err.Error()})
			return
		}
		send(c, reply{})
	case "exec":
		s.exec(c, req, files)
		files = nil
	case "member":
		s.member(c, req, files)
		files = nil
	case "stats", "update":
		send(c, s.ask(req))
	case "remove":
		s.mu.Lock()
		delete(s.members, req.Member)
		s.mu.Unlock()
		if err := s.conn.Send(agent.TypeRemove, req.Member, nil); err != nil {
			send(c, reply{Error: err.Error()})
			return
		}
		send(c, reply{})
	default:
		send(c, reply{Error: "unknown request " + req.Op})
	}
}

func (s *shim) start() reply {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return reply{Error: "cannot start an already running container"}
	}
	s.started = true
	s.mu.Unlock()
	if err := s.startProc(0, s.procs[0], ProcessOf(s.bundle.Spec.Process)); err != nil {
		return reply{Error: err.Error()}
	}
	if err := s.rt.update(s.id, func(r *Record) { r.Started = true }); err != nil {
		return reply{Error: err.Error()}
	}
	return reply{}
}

// exec runs one more process in the container with the stdio it was
// handed, and answers twice: started, then its exit status.
func (s *shim) exec(c *net.UnixConn, req request, files []*os.File) {
	if req.Process == nil || (len(files) != 3 && len(files) != 1) {
		send(c, reply{Error: "exec needs a process and its stdio"})
		closeFiles(files)
		return
	}
	p := &hostProc{started: make(chan error, 1), exited: make(chan agent.Exit, 1)}
	if len(files) == 1 {
		p.in, p.out, p.errw, p.tty = files[0], files[0], files[0], true
	} else {
		p.in, p.out, p.errw = files[0], files[1], files[2]
	}
	s.mu.Lock()
	if !s.started {
		s.mu.Unlock()
		send(c, reply{Error: "cannot exec in a stopped container"})
		closeFiles(files)
		return
	}
	id := s.nextID
	s.nextID++
	s.procs[id] = p
	s.mu.Unlock()
	if err := s.startProc(id, p, *req.Process); err != nil {
		s.mu.Lock()
		delete(s.procs, id)
		s.mu.Unlock()
		send(c, reply{Error: err.Error()})
		closeFiles(files)
		return
	}
	send(c, reply{Status: "started"})
	// The requester may forward signals and sizes until the process ends.
	s.relayRequests(c, id, p, func(sig int) { s.conn.SendJSON(agent.TypeSignal, id, agent.Signal{Signal: sig}) })
	e := <-p.exited
	closeFiles(files)
	status := e.Status()
	send(c, reply{Exit: &status})
}

func send(c *net.UnixConn, r reply) {
	b, _ := json.Marshal(r)
	c.Write(b)
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

func receivedFiles(oob []byte) []*os.File {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "stdio"))
		}
	}
	return files
}

// awaitPlacement asks create to place the shim and run the create-time
// hooks, now that the shim (the state's pid) and its namespaces exist, and
// waits until it has.
func awaitPlacement(ready *os.File) error {
	if _, err := fmt.Fprintln(ready, shimHooks); err != nil {
		return fmt.Errorf("ask for the hooks: %w", err)
	}
	line, err := bufio.NewReader(ready).ReadString('\n')
	if strings.TrimSpace(line) != shimGo {
		return fmt.Errorf("create did not place the shim: %q, %v", line, err)
	}
	return nil
}

// setUpDone delivers a pod member's setup outcome, if p waits for one.
func (s *shim) setUpDone(p *hostProc, err error) bool {
	s.mu.Lock()
	ch := p.setUp
	p.setUp = nil
	s.mu.Unlock()
	if ch == nil {
		return false
	}
	ch <- err
	return true
}

// member creates a later container of the pod in the VM, with the stdio
// its relay handed over, and answers twice, as exec does: created (with
// the member's id, which start names), then its exit status. A relay gone
// before its container ended takes the container's processes with it.
func (s *shim) member(c *net.UnixConn, req request, files []*os.File) {
	if req.Setup == nil || req.Process == nil || (len(files) != 3 && len(files) != 1) {
		send(c, reply{Error: "a pod member needs its setup, its process and its stdio"})
		closeFiles(files)
		return
	}
	p := &hostProc{started: make(chan error, 1), exited: make(chan agent.Exit, 1), setUp: make(chan error, 1)}
	if len(files) == 1 {
		p.in, p.out, p.errw, p.tty = files[0], files[0], files[0], true
	} else {
		p.in, p.out, p.errw = files[0], files[1], files[2]
	}
	s.mu.Lock()
	id := s.nextID
	s.nextID++
	s.procs[id] = p
	s.mu.Unlock()
	fail := func(err error) {
		s.mu.Lock()
		delete(s.procs, id)
		s.mu.Unlock()
		s.conn.Send(agent.TypeRemove, id, nil)
		send(c, reply{Error: err.Error()})
		closeFiles(files)
	}
	setUp := p.setUp
	if err := s.conn.SendJSON(agent.TypeSetup, id, *req.Setup); err != nil {
		fail(fmt.Errorf("send the member's setup: %w", err))
		return
	}
	select {
	case err := <-setUp:
		if err != nil {
			fail(err)
			return
		}
	case <-time.After(shimSetupTimeout):
		fail(fmt.Errorf("the guest did not set the container up within %s", shimSetupTimeout))
		return
	}
	s.mu.Lock()
	s.members[id] = *req.Process
	s.mu.Unlock()
	send(c, reply{Status: "created", Member: id})
	gone := s.relayRequests(c, id, p, func(sig int) {
		s.mu.Lock()
		_, created := s.members[id]
		delete(s.members, id)
		s.mu.Unlock()
		if created {
			// Nothing runs yet: the container ends as its process would.
			p.exitedReport.Do(func() { p.exited <- agent.Exit{Signal: sig} })
			return
		}
		s.conn.SendJSON(agent.TypeSignal, id, agent.Signal{Signal: sig})
	})
	select {
	case e := <-p.exited:
		closeFiles(files)
		status := e.Status()
		send(c, reply{Exit: &status})
	case <-gone:
		// The relay, which engines know as the container, was killed.
		s.conn.SendJSON(agent.TypeSignal, id, agent.Signal{Signal: int(unix.SIGKILL), All: true})
		closeFiles(files)
	}
}

// startMember runs a created pod member's process.
func (s *shim) startMember(id uint32) reply {
	s.mu.Lock()
	proc, ok := s.members[id]
	delete(s.members, id)
	p := s.procs[id]
	s.mu.Unlock()
	if !ok || p == nil {
		return reply{Error: "cannot start a container that has stopped or is running"}
	}
	proc.Container = 0
	if err := s.startProc(id, p, proc); err != nil {
		return reply{Error: err.Error()}
	}
	return reply{}
}

// ask sends the agent a stats or update request for a container of the
// pod (0: the shim's own) and waits for its answer.
func (s *shim) ask(req request) reply {
	s.askMu.Lock()
	defer s.askMu.Unlock()
	ch := make(chan agent.Frame, 1)
	s.mu.Lock()
	s.answers, s.asked = ch, req.Member
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.answers = nil
		s.mu.Unlock()
	}()
	var err error
	if req.Op == "stats" {
		err = s.conn.Send(agent.TypeStats, req.Member, nil)
	} else if req.Resources != nil {
		err = s.conn.SendJSON(agent.TypeUpdate, req.Member, *req.Resources)
	} else {
		return reply{Error: "update names no resource"}
	}
	if err != nil {
		return reply{Error: err.Error()}
	}
	select {
	case f := <-ch:
		switch f.Type {
		case agent.TypeUsage:
			var st agent.Stats
			if err := f.Decode(&st); err != nil {
				return reply{Error: err.Error()}
			}
			return reply{Stats: &st}
		case agent.TypeUpdated:
			return reply{}
		}
		var e agent.Error
		f.Decode(&e)
		return reply{Error: e.Message}
	case <-time.After(10 * time.Second):
		return reply{Error: "the guest did not answer within 10 s"}
	}
}

// answer hands a frame to a waiting ask; false if none waits.
func (s *shim) answer(f agent.Frame) bool {
	s.mu.Lock()
	ch := s.answers
	if f.ID != s.asked {
		ch = nil
	}
	s.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case ch <- f:
	default:
	}
	return true
}

// relayRequests serves what the requester of process id sends while it
// runs: signals, handed to signal, and terminal size changes. The
// returned channel closes when the requester goes away.
func (s *shim) relayRequests(c *net.UnixConn, id uint32, p *hostProc, signal func(int)) <-chan struct{} {
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			var r request
			if json.Unmarshal(buf[:n], &r) != nil {
				continue
			}
			switch r.Op {
			case "signal":
				signal(r.Signal)
			case "resize":
				if p.tty {
					s.sendSize(id, p.in)
				}
			}
		}
	}()
	return gone
}
