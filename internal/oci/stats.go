package oci

import (
	"errors"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hutch-vm/hutch/internal/agent"
)

// target is the container whose shim serves id, and id's number there.
func (r Runtime) target(id string) (Record, string, uint32, error) {
	rec, err := r.load(id)
	if err != nil {
		return rec, "", 0, err
	}
	if rec.Sandbox != "" {
		return rec, rec.Sandbox, rec.Member, nil
	}
	return rec, id, 0, nil
}

// Event is one line of runc events: its stats, as runc's types.Event
// shapes them, read in the guest.
type Event struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data any    `json:"data,omitempty"`
}

// Stats is what a running container uses, read in its guest: its cgroup
// there (memory, CPU time, processes).
func (r Runtime) Stats(id string) (Event, error) {
	rec, shim, member, err := r.target(id)
	if err != nil {
		return Event{}, err
	}
	if rec.Status() != specs.StateRunning {
		return Event{}, ErrNotRunning
	}
	rep, err := r.ask(shim, request{Op: "stats", Member: member})
	if err != nil {
		return Event{}, err
	}
	if rep.Error != "" || rep.Stats == nil {
		return Event{}, fmt.Errorf("stats of %s: %s", id, rep.Error)
	}
	st := rep.Stats
	data := map[string]any{
		"cpu":    map[string]any{"usage": map[string]uint64{"total": st.CPUUser + st.CPUKernel, "user": st.CPUUser, "kernel": st.CPUKernel}},
		"memory": map[string]any{"usage": map[string]uint64{"usage": st.MemoryUsage, "limit": st.MemoryLimit}},
		"pids":   map[string]int{"current": st.Pids},
	}
	return Event{Type: "stats", ID: id, Data: data}, nil
}

// Update changes what can change while the container runs: its memory,
// process and CPU limits in its cgroup in the guest. The VM's own memory
// and CPUs are fixed when it boots; a limit above them has no effect.
func (r Runtime) Update(id string, res specs.LinuxResources) error {
	rec, shim, member, err := r.target(id)
	if err != nil {
		return err
	}
	if st := rec.Status(); st != specs.StateRunning && st != specs.StateCreated {
		return ErrNotRunning
	}
	var out agent.Resources
	if m := res.Memory; m != nil && m.Limit != nil {
		out.MemoryMax = m.Limit
	}
	if p := res.Pids; p != nil && p.Limit != nil {
		v := *p.Limit
		if v == 0 {
			v = -1 // runc: 0 is no limit
		}
		out.PidsMax = &v
	}
	if c := res.CPU; c != nil {
		out.CPUQuota, out.CPUPeriod = c.Quota, c.Period
	}
	if out == (agent.Resources{}) {
		return errors.New("update changes nothing: hutch-runtime can change the memory limit, the pids limit and the CPU quota and period of a running container")
	}
	rep, err := r.ask(shim, request{Op: "update", Member: member, Resources: &out})
	if err != nil {
		return err
	}
	if rep.Error != "" {
		return errors.New(rep.Error)
	}
	return nil
}
