package supervise

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hutch-vm/hutch/internal/launcher"
	"github.com/hutch-vm/hutch/internal/vm"
)

// passtTimeout bounds how long passt may take to open its socket.
const passtTimeout = 10 * time.Second

// startPasst runs the VM's passt as the VM's identity and waits until its
// socket exists, so QEMU can connect at once.
func (s *supervisor) startPasst(h *vm.Helper) (*launcher.Helper, error) {
	os.Remove(h.Socket)
	logf, err := os.OpenFile(s.paths.PasstLog(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open passt log: %w", err)
	}
	defer logf.Close()
	cmd, err := launcher.Command(&s.rec.Plan, append([]string{h.Binary}, h.Args...), nil, logf, s.cgroupProcs())
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start passt: %w", err)
	}
	p := launcher.Watch(cmd)
	deadline := time.Now().Add(passtTimeout)
	for {
		if _, err := os.Stat(h.Socket); err == nil {
			return p, nil
		}
		select {
		case <-p.Done():
			return nil, fmt.Errorf("passt exited before opening its socket (%v): %s", p.Err(), lastLine(s.paths.PasstLog()))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-p.Done()
			return nil, errors.New("passt did not open its socket within " + passtTimeout.String())
		}
	}
}
