package oci

import (
	"fmt"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hutch-vm/hutch/internal/qemu"
)

// qmpWait bounds waiting for the VM's QMP socket, which serves one client
// at a time (the shim's port forwards are the other).
const qmpWait = 10 * time.Second

// Pause freezes a running container: its whole VM stops (QMP stop), as
// runc's freezer stops every process of the container.
func (r Runtime) Pause(id string) error {
	return r.freeze(id, true)
}

// Resume thaws a paused container (QMP cont).
func (r Runtime) Resume(id string) error {
	return r.freeze(id, false)
}

func (r Runtime) freeze(id string, pause bool) error {
	rec, err := r.load(id)
	if err != nil {
		return err
	}
	want, cmd := specs.StateRunning, "cont"
	if pause {
		cmd = "stop"
	} else {
		want = StatePaused
	}
	if st := rec.Status(); st != want {
		// runc's words.
		if pause {
			return fmt.Errorf("container not running")
		}
		return fmt.Errorf("container not paused")
	}
	// The path may be past sun_path's length: dialUnix goes through the
	// directory's descriptor.
	c, err := dialUnix("unix", r.paths(id).QMP())
	if err != nil {
		return fmt.Errorf("container %s: reach its VM: %w", id, err)
	}
	q, err := qemu.NewQMP(c, qmpWait)
	if err != nil {
		c.Close()
		return fmt.Errorf("container %s: reach its VM: %w", id, err)
	}
	defer q.Close()
	if err := q.Execute(cmd); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	return r.update(id, func(rec *Record) { rec.Paused = pause })
}
