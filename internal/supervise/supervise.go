// Package supervise is the one process that lives beside each VM: it owns
// QEMU, carries the serial console to a bounded log and to attached
// clients, records how the VM ended, and cleans up after it.
package supervise

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/cgroup"
	"github.com/hutch-vm/hutch/internal/identity"
	"github.com/hutch-vm/hutch/internal/launcher"
	"github.com/hutch-vm/hutch/internal/qemu"
	"github.com/hutch-vm/hutch/internal/store"
	"github.com/hutch-vm/hutch/internal/vm"
)

// qmpTimeout bounds QEMU's start-up: from exec to a QMP greeting, which
// QEMU sends only once every device (and every port forward) is set up.
const qmpTimeout = 45 * time.Second

// Run supervises VM name until QEMU exits. ready gets one line (vm.Ready or
// vm.NotReady) once QEMU is up or has failed; attach, if not nil, is a
// console client connected from the start.
func Run(l store.Layout, name string, ready *os.File, attach *os.File) error {
	// QEMU gets SIGKILL when the thread that started it dies; pinning this
	// goroutine to its thread makes that thread live as long as we do.
	runtime.LockOSThread()
	p := l.VM(name)
	rec, err := store.Load[vm.Record](p)
	if err != nil {
		fail(ready, fmt.Errorf("read vm record: %w", err))
		return err
	}
	s := &supervisor{paths: p, rec: rec}
	if rec.Plan.System {
		if err := s.takeLease(l); err != nil {
			s.finish(-1, err.Error())
			fail(ready, err)
			return err
		}
	} else if err := limitSelf(); err != nil {
		slog.Warn("running without rlimits", "err", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	signal.Ignore(syscall.SIGPIPE)

	var code int
	var reason, noQMP string
	for restarts := 0; ; restarts++ {
		cmd, err := s.start(attach)
		attach = nil // the first client only; later ones attach through the socket
		if err != nil && restarts == 0 {
			s.finish(-1, err.Error())
			fail(ready, err)
			s.cleanup(l)
			return err
		}
		if err != nil {
			code, reason = -1, "restart failed: "+err.Error()
			break
		}
		var signalled bool
		code, reason, noQMP, signalled = s.watch(cmd, &ready, sigs)
		s.passt.Stop()
		s.fs.Stop()
		s.console.close()
		// The install phase of a --cdrom VM ends with its first QEMU: an
		// installer's reboot ends QEMU (-no-reboot), and the next start
		// boots the disk.
		store.Update(p, func(r *vm.Record) error {
			if r.Plan.EndInstall() {
				s.rec = *r
			}
			return nil
		})
		if signalled || ready != nil || !s.restartWanted(code) {
			break
		}
		// Back off, doubling up to half a minute, so a VM that dies at once
		// does not spin; a signal meanwhile ends the supervisor.
		wait := min(time.Second<<min(restarts, 5), 30*time.Second)
		slog.Info("restarting the vm", "policy", s.rec.Spec.Restart, "after", reason, "in", wait)
		store.Update(p, func(r *vm.Record) error {
			r.Status.Restarts++
			r.Status.Reason = "restarting after: " + reason
			return nil
		})
		select {
		case <-time.After(wait):
			continue
		case <-sigs:
		}
		break
	}
	if ready != nil {
		fail(ready, s.startError(noQMP, reason))
	}
	s.finish(code, reason)
	s.cleanup(l)
	return nil
}

// watch waits for QEMU's end: it reports the VM ready once QMP answers,
// notes passt's death, and passes a signal on to QEMU. signalled says
// the supervisor itself was asked to end, which no restart policy undoes.
func (s *supervisor) watch(cmd *exec.Cmd, ready **os.File, sigs <-chan os.Signal) (code int, reason, noQMP string, signalled bool) {
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	up := make(chan error, 1)
	go func() {
		q, err := qemu.DialQMP(s.paths.QMP(), qmpTimeout)
		if err == nil {
			q.Close()
		}
		up <- err
	}()
	var werr error
	for waiting := true; waiting; {
		select {
		case <-s.passt.Done():
			err := s.passt.Err()
			s.passt = nil // reaped: nothing left to stop
			why := fmt.Sprintf("passt exited (%v): the vm has no network", err)
			slog.Error(why)
			store.Update(s.paths, func(r *vm.Record) error { r.Status.NetworkError = why; return nil })
		case err := <-up:
			if err != nil {
				// A QEMU that died closed its QMP socket too: its exit is
				// the cause, not QMP.
				select {
				case werr = <-exited:
					waiting = false
					continue
				case <-time.After(time.Second):
				}
				slog.Error("qemu did not answer on qmp", "err", err)
				noQMP = fmt.Sprintf("qemu did not answer on QMP within %s", qmpTimeout)
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					noQMP = fmt.Sprintf("qemu's QMP socket failed (%v)", err)
				}
				cmd.Process.Kill()
				continue
			}
			if *ready != nil {
				(*ready).WriteString(vm.Ready())
				(*ready).Close()
				*ready = nil
			}
		case sig := <-sigs:
			// Someone ends the supervisor: end the VM first, gracefully.
			slog.Info("signal, terminating qemu", "signal", sig)
			signalled = true
			cmd.Process.Signal(syscall.SIGTERM)
		case werr = <-exited:
			waiting = false
		}
	}
	code, reason = s.exitOf(cmd, werr)
	return code, reason, noQMP, signalled
}

// stopAsked reports whether hutch stop, kill or rm -f ended the VM.
func (s *supervisor) stopAsked() bool {
	rec, err := store.Load[vm.Record](s.paths)
	return err != nil || rec.Status.StopRequested || rec.Status.StopForced || rec.Status.KillRequested
}

// restartWanted applies the VM's restart policy to how QEMU ended: never
// after hutch stop, always for "always", on a non-zero end for
// "on-failure". A guest that reboots stays in the same QEMU and needs none.
func (s *supervisor) restartWanted(code int) bool {
	if s.stopAsked() {
		return false
	}
	switch s.rec.Spec.Restart {
	case vm.RestartAlways:
		return true
	case vm.RestartOnFailure:
		return code != 0
	}
	return false
}

type supervisor struct {
	paths   store.Paths
	rec     vm.Record
	console *mux

	// passt and fs are the VM's helpers, nil when it has none.
	passt  *launcher.Helper
	fs     *launcher.Helper
	cgroup *cgroup.Group
	ledger *identity.Ledger // the lease of a system VM
}

// makeRunDir makes the VM's private runtime dir, owned by the identity
// its processes run as (passt makes its socket there).
func (s *supervisor) makeRunDir() error {
	run := s.paths.Run
	if err := os.Mkdir(run, 0o700); err != nil && !os.IsExist(err) {
		return fmt.Errorf("create runtime dir: %w", err)
	}
	if s.rec.Plan.System {
		id := s.rec.Plan.Identity
		if err := os.Chown(run, id.UID, id.GID); err != nil {
			return fmt.Errorf("give runtime dir to uid %d: %w", id.UID, err)
		}
	}
	return nil
}

func fail(ready *os.File, err error) {
	if ready != nil {
		ready.WriteString(vm.NotReady(err))
		ready.Close()
	}
}

// start prepares the runtime dir, the console and QMP sockets, and execs
// QEMU with them as inherited descriptors.
func (s *supervisor) start(attach *os.File) (*exec.Cmd, error) {
	if err := s.makeRunDir(); err != nil {
		return nil, err
	}
	os.Remove(s.paths.QMP())
	os.Remove(s.paths.Console())
	old := unix.Umask(0o077) // sockets: owner only, from the moment they exist
	qmpL, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.paths.QMP(), Net: "unix"})
	if err != nil {
		unix.Umask(old)
		return nil, fmt.Errorf("listen on qmp socket: %w", err)
	}
	conL, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.paths.Console(), Net: "unix"})
	unix.Umask(old)
	if err != nil {
		qmpL.Close()
		return nil, fmt.Errorf("listen on console socket: %w", err)
	}
	qmpL.SetUnlinkOnClose(false)
	qmpFile, err := qmpL.File()
	qmpL.Close()
	if err != nil {
		conL.Close()
		return nil, fmt.Errorf("qmp socket: %w", err)
	}
	defer qmpFile.Close()

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		conL.Close()
		return nil, fmt.Errorf("console socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "serial")
	theirs := os.NewFile(uintptr(fds[1]), "serial-vmm")
	defer theirs.Close()
	serial, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		conL.Close()
		return nil, fmt.Errorf("console socket: %w", err)
	}
	logw, err := openRing(s.paths.ConsoleLog(), consoleLogMax)
	if err != nil {
		conL.Close()
		serial.Close()
		return nil, err
	}
	s.console = newMux(serial, logw, conL)
	if attach != nil {
		if c, err := net.FileConn(attach); err == nil {
			s.console.add(c)
		}
		attach.Close()
	}
	go s.console.run()

	var passtProc, fsProc store.Proc
	if h := s.rec.Plan.Passt; h != nil {
		if s.passt, err = s.startPasst(h); err != nil {
			return nil, err
		}
		passtProc, _ = store.ProcOf(s.passt.Cmd.Process.Pid)
	}
	stopHelpers := func() {
		s.passt.Stop()
		s.fs.Stop()
	}
	ch := launcher.Channels{Serial: theirs, QMP: qmpFile, Tap: s.openTap}
	if srv := s.rec.Plan.Shares; srv != nil {
		logf, err := os.OpenFile(s.paths.FSLog(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			stopHelpers()
			return nil, fmt.Errorf("open virtiofsd log: %w", err)
		}
		s.fs, ch.FS, err = launcher.StartFS(srv, logf, s.cgroupProcs())
		logf.Close()
		if err != nil {
			stopHelpers()
			return nil, err
		}
		defer ch.FS.Close()
		fsProc, _ = store.ProcOf(s.fs.Cmd.Process.Pid)
	}
	vmmLog, err := os.OpenFile(s.paths.VMMLog(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		stopHelpers()
		return nil, fmt.Errorf("open qemu log: %w", err)
	}
	defer vmmLog.Close()
	// fd 3+i is the plan's i-th descriptor.
	cmd, err := launcher.StartVMM(&s.rec.Plan, ch, vmmLog, s.cgroupProcs())
	if err != nil {
		stopHelpers()
		return nil, err
	}
	self, _ := store.Self()
	vmm, _ := store.ProcOf(cmd.Process.Pid) // a QEMU already gone is seen at Wait
	err = store.Update(s.paths, func(r *vm.Record) error {
		r.Status = vm.Status{State: vm.StateRunning, Supervisor: self, VMM: vmm, Passt: passtProc, FS: fsProc, Started: time.Now().UTC(),
			Restarts: r.Status.Restarts, Defined: r.Status.Defined}
		return nil
	})
	if err != nil {
		cmd.Process.Kill()
		return nil, fmt.Errorf("record vm start: %w", err)
	}
	slog.Info("qemu started", "pid", cmd.Process.Pid, "argv", strings.Join(cmd.Args, " "))
	return cmd, nil
}

// exitOf turns QEMU's end into an exit code (128+N for signal N, as shells
// report it) and a reason a user can act on.
func (s *supervisor) exitOf(cmd *exec.Cmd, werr error) (int, string) {
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return -1, fmt.Sprintf("qemu: %v", werr)
	}
	stopRequested, forced := false, false
	if rec, err := store.Load[vm.Record](s.paths); err == nil {
		stopRequested, forced = rec.Status.StopRequested, rec.Status.StopForced
	}
	switch {
	case forced:
		// QEMU exits 0 on SIGTERM; the guest did not choose to stop.
		return 128 + int(syscall.SIGTERM), "terminated by hutch stop: the guest did not power off in time"
	case ws.Signaled():
		code := 128 + int(ws.Signal())
		if stopRequested {
			return code, "stopped by hutch stop (qemu ended by " + unix.SignalName(ws.Signal()) + ")"
		}
		return code, "qemu killed by signal " + unix.SignalName(ws.Signal())
	case stopRequested:
		return ws.ExitStatus(), "stopped by hutch stop"
	case ws.ExitStatus() == 0:
		return 0, "guest powered off"
	default:
		return ws.ExitStatus(), fmt.Sprintf("qemu exited with code %d", ws.ExitStatus())
	}
}

// startError is why QEMU failed to start: what the supervisor saw, QEMU's
// own last words, and where its whole log is.
func (s *supervisor) startError(noQMP, reason string) error {
	what := "qemu exited at start (" + reason + ")"
	if noQMP != "" {
		what = noQMP
	}
	if last := lastLine(s.paths.VMMLog()); last != "" {
		what += ": " + s.rec.Plan.NameDescriptors(last)
	}
	return fmt.Errorf("%s; see %s", what, s.paths.VMMLog())
}

// lastLine is the last non-empty line of a log file.
func lastLine(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// finish records how the VM ended.
func (s *supervisor) finish(code int, reason string) {
	err := store.Update(s.paths, func(r *vm.Record) error {
		r.Status.State = vm.StateStopped
		r.Status.ExitCode = &code
		r.Status.Reason = reason
		r.Status.Finished = time.Now().UTC()
		return nil
	})
	if err != nil {
		slog.Error("record vm exit", "err", err)
	}
	slog.Info("vm stopped", "code", code, "reason", reason)
}

// takeLease makes this supervisor the holder of the VM's identity and puts
// the VM in a cgroup of its own where the host offers one.
func (s *supervisor) takeLease(l store.Layout) error {
	self, _ := store.Self()
	ledger := &identity.Ledger{Path: l.Leases()}
	if err := ledger.TakeOver(s.rec.Name, uint32(s.rec.Plan.Identity.UID), self); err != nil {
		// Not ours to release either: the id may be another VM's now.
		return fmt.Errorf("vm %q lost its leased id before it started (%w); run it again", s.rec.Name, err)
	}
	s.ledger = ledger
	mem := int64(s.rec.Spec.MemoryMiB+vmmOverheadMiB) << 20
	g, err := cgroup.Create(cgroup.Host(), s.rec.Name, cgroup.Limits{MemoryBytes: mem, Pids: vmPids, CPUs: float64(s.rec.Spec.CPUs)})
	if err != nil {
		slog.Warn("running without a cgroup", "reason", err)
		return nil
	}
	s.cgroup = g
	return nil
}

// Cgroup limits beyond the guest's own memory and CPUs: QEMU's own heap,
// TCG's code cache and passt, and the threads QEMU and passt start.
const (
	vmmOverheadMiB = 384
	vmPids         = 512
)

// cleanup removes the sockets, and the whole VM when it was run with --rm;
// for a system VM also its cgroup and its lease, last, once nothing of
// the VM runs as that identity any more.
func (s *supervisor) cleanup(l store.Layout) {
	if err := os.RemoveAll(s.paths.Run); err != nil {
		slog.Error("remove runtime dir", "err", err)
	}
	if s.cgroup != nil {
		if err := s.cgroup.Remove(); err != nil {
			slog.Error("remove cgroup", "err", err)
		}
	}
	if s.ledger != nil {
		if err := s.ledger.Release(s.rec.Name); err != nil {
			slog.Error("release lease", "err", err)
		}
	}
	if s.rec.Spec.Remove {
		if err := store.Remove(l, s.rec.Name); err != nil && !errors.Is(err, store.ErrNotFound) {
			slog.Error("remove vm", "err", err)
		}
	}
}
