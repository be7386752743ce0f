package oci

import (
	"errors"
	"fmt"
	"os"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hutch-vm/hutch/internal/store"
)

// Record is what hutch-runtime keeps of a container, in state.json.
type Record struct {
	ID          string            `json:"id"`
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	Created     time.Time         `json:"created"`
	Owner       string            `json:"owner"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Hooks are the configuration's, kept for start and delete, which
	// must not depend on the bundle still being there.
	Hooks *specs.Hooks `json:"hooks,omitempty"`
	// Shim is the process engines know as the container's pid.
	Shim store.Proc `json:"shim"`
	// Started is set once the container's process runs.
	Started bool `json:"started,omitempty"`
	// Paused is set while the container's VM is stopped by pause.
	Paused bool `json:"paused,omitempty"`
	// Exit is the container's exit status once it ended.
	Exit *int `json:"exit,omitempty"`
	// VMM is who the VMM runs as, and its pid.
	VMM    VMMUser `json:"vmm"`
	VMMPid int     `json:"vmmPid,omitempty"`
	Lease  string  `json:"lease,omitempty"`
	// Sandbox is the pod's sandbox container when this one is a later
	// member of the pod, run in the sandbox's VM; Shim is then its relay,
	// and Member its id there.
	Sandbox string `json:"sandbox,omitempty"`
	Member  uint32 `json:"member,omitempty"`
	// Cgroups are the container's cgroup directories the shim was put in,
	// removed with the container.
	Cgroups []string `json:"cgroups,omitempty"`
}

// ErrNotExist is runc's answer for an unknown id; engines look for
// "does not exist" in it.
var ErrNotExist = errors.New("container does not exist")

// Runtime is hutch-runtime working on one root directory.
type Runtime struct {
	Root string
}

func (r Runtime) paths(id string) store.Container { return store.ContainerIn(r.Root, id) }

// load reads a container's record.
func (r Runtime) load(id string) (Record, error) {
	if err := CheckID(id); err != nil {
		return Record{}, err
	}
	var rec Record
	if err := store.ReadJSON(r.paths(id).State(), &rec); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Record{}, fmt.Errorf("container %s: %w", id, ErrNotExist)
		}
		return Record{}, fmt.Errorf("read state of %s: %w", id, err)
	}
	return rec, nil
}

// update changes a container's record under its lock.
func (r Runtime) update(id string, fn func(*Record)) error {
	p := r.paths(id)
	l, err := store.Acquire(p.Lock())
	if err != nil {
		return err
	}
	defer l.Release()
	rec, err := r.load(id)
	if err != nil {
		return err
	}
	fn(&rec)
	return store.WriteJSON(p.State(), rec)
}

// StatePaused is runc's status of a paused container; the runtime-spec
// names only the states every runtime has.
const StatePaused specs.ContainerState = "paused"

// Status is runc's status of a container from its record: the shim alive
// means created, running or paused; gone means stopped.
func (rec Record) Status() specs.ContainerState {
	switch {
	case !rec.Shim.Alive():
		return specs.StateStopped
	case rec.Paused:
		return StatePaused
	case rec.Started:
		return specs.StateRunning
	default:
		return specs.StateCreated
	}
}

// State is runc state's JSON: the runtime-spec state with runc's extra
// fields, and the pid always present (0 once stopped), as engines expect.
type State struct {
	Version     string               `json:"ociVersion"`
	ID          string               `json:"id"`
	Pid         int                  `json:"pid"`
	Status      specs.ContainerState `json:"status"`
	Bundle      string               `json:"bundle"`
	Rootfs      string               `json:"rootfs"`
	Created     time.Time            `json:"created"`
	Owner       string               `json:"owner"`
	Annotations map[string]string    `json:"annotations,omitempty"`
}

// State is the container's state now.
func (rec Record) State() State {
	st := State{Version: specs.Version, ID: rec.ID, Status: rec.Status(), Bundle: rec.Bundle, Rootfs: rec.Rootfs,
		Created: rec.Created, Owner: rec.Owner, Annotations: rec.Annotations}
	if st.Status != specs.StateStopped {
		st.Pid = rec.Shim.Pid
	}
	return st
}
