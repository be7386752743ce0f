package supervise

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/hutch-vm/hutch/internal/virtiofs"
	"github.com/hutch-vm/hutch/internal/vm"
)

// passtTimeout bounds how long passt may take to open its socket.
const passtTimeout = 10 * time.Second

// startPasst runs the VM's passt and waits until its socket exists, so
// QEMU can connect at once. exited receives passt's end.
func (s *supervisor) startPasst(h *vm.Helper) (cmd *exec.Cmd, exited chan error, err error) {
	os.Remove(h.Socket)
	logf, err := os.OpenFile(s.paths.PasstLog(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open passt log: %w", err)
	}
	defer logf.Close()
	if cmd, err = s.spawn(append([]string{h.Binary}, h.Args...), nil, logf); err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start passt: %w", err)
	}
	exited = make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(passtTimeout)
	for {
		if _, err := os.Stat(h.Socket); err == nil {
			return cmd, exited, nil
		}
		select {
		case err := <-exited:
			return nil, nil, fmt.Errorf("passt exited before opening its socket (%v): %s", err, lastLine(s.paths.PasstLog()))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return nil, nil, errors.New("passt did not open its socket within " + passtTimeout.String())
		}
	}
}

// stopPasst ends passt if QEMU's exit did not (it quits on its own when
// its one client goes away).
func stopPasst(cmd *exec.Cmd, exited chan error) {
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	case <-time.After(500 * time.Millisecond):
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(2 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// startFS runs the VM's virtiofsd on an empty directory of the runtime dir.
// It runs from the supervisor, not the VM's identity: it drops what it
// does not need by itself (virtiofs.Server), and in system mode the
// supervisor's cgroup charge is the VM's.
func (s *supervisor) startFS(srv *virtiofs.Server) error {
	if err := os.Mkdir(srv.Root, 0o700); err != nil && !os.IsExist(err) {
		return fmt.Errorf("create %s: %w", srv.Root, err)
	}
	logf, err := os.OpenFile(s.paths.FSLog(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("open virtiofsd log: %w", err)
	}
	defer logf.Close()
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the hutch executable: %w", err)
	}
	cmd, conn, err := srv.Start(self, logf)
	if err != nil {
		return err
	}
	if s.cgroup != nil {
		for _, p := range s.cgroup.Procs() {
			os.WriteFile(p, []byte(strconv.Itoa(cmd.Process.Pid)), 0)
		}
	}
	s.fs, s.fsConn = cmd, conn
	s.fsExited = make(chan error, 1)
	go func() { s.fsExited <- cmd.Wait() }()
	return nil
}
