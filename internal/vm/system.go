package vm

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/hutch-vm/hutch/internal/cgroup"
	"github.com/hutch-vm/hutch/internal/identity"
	"github.com/hutch-vm/hutch/internal/store"
)

// lease gives a system VM its own identity: a uid/gid pair from the
// ledger, and exactly the groups its VMM needs. The command holds the
// lease until the supervisor takes it over.
func (e *Engine) lease(rec *Record) error {
	e.tidy()
	self, err := store.Self()
	if err != nil {
		return err
	}
	l, err := e.Ledger.Acquire(rec.Name, self)
	if err != nil {
		return fmt.Errorf("lease an identity for vm %q: %w", rec.Name, err)
	}
	dev, err := identity.StatDevice(e.KVMDevice)
	if err != nil {
		e.Ledger.Release(rec.Name)
		return err
	}
	groups, err := identity.VMMGroups(rec.Plan.VMM.Accel == "kvm", dev)
	if err != nil {
		e.Ledger.Release(rec.Name)
		return err
	}
	id := identity.Identity{UID: int(l.UID), GID: int(l.GID), Groups: make([]int, 0, len(groups))}
	for _, g := range groups {
		id.Groups = append(id.Groups, int(g))
	}
	rec.Plan.Identity, rec.Plan.System = id, true
	return nil
}

// tidy finishes what killed commands and dead supervisors left: staging
// and trash dirs, runtime dirs of VMs whose supervisor is gone, and, for
// system VMs, their leases and cgroups. Every command that lists or
// changes VMs calls it, so nothing stays orphaned for long.
func (e *Engine) tidy() {
	store.Sweep(e.Layout)
	names, _ := store.Names(e.Layout)
	live := map[string]bool{}
	for _, n := range names {
		rec, err := store.Load[Record](e.Layout.VM(n))
		if err != nil {
			continue
		}
		if rec.Status.Supervisor.Alive() {
			live[n] = true
		} else if rec.Status.State == StateRunning {
			// The supervisor died without cleaning up after its VM.
			os.RemoveAll(e.Layout.VM(n).Run)
		}
	}
	if !e.System {
		return
	}
	dead, err := e.Ledger.Reclaim()
	if err != nil {
		slog.Warn("reclaim leases", "err", err)
	}
	for _, l := range dead {
		if !live[l.VM] {
			os.RemoveAll(e.Layout.VM(l.VM).Run)
		}
	}
	// A lease whose holder lives is a VM being started: its supervisor
	// makes the cgroup before it records itself in the VM's record. The
	// lease, not the record, says who owns a system VM's cgroup.
	leases, err := e.Ledger.List()
	if err != nil {
		slog.Warn("list leases", "err", err)
		return // without the ledger no cgroup can be judged dead
	}
	for _, l := range leases {
		if l.Holder.Alive() {
			live[l.VM] = true
		}
	}
	cgroup.Sweep(cgroup.Host(), func(name string) bool { return live[name] })
}
