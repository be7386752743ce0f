package vm

import (
	"fmt"
	"slices"

	"github.com/hutch-vm/hutch/internal/disk"
)

// writableDisks are the files a VM's guest writes, top layers only: the
// root overlay, blank disks and --disk files given without ro. Snapshots
// take them all together, so they need all to be qcow2.
func (r Record) writableDisks() (qcow2 []string, raw []string) {
	for _, d := range r.Plan.Disks {
		if d.ReadOnly || len(d.Chain) == 0 {
			continue
		}
		if top := d.Chain[0]; top.Format == disk.QCOW2 {
			qcow2 = append(qcow2, top.Path)
		} else {
			raw = append(raw, top.Path)
		}
	}
	return qcow2, raw
}

// Snapshots lists the snapshots a stopped VM has on all its writable disks.
func (e *Engine) Snapshots(name string) ([]string, error) {
	_, disks, err := e.snapshotTarget(name, false)
	if err != nil || len(disks) == 0 {
		return nil, err
	}
	var common []string
	for i, d := range disks {
		names, err := disk.SnapshotNames(d)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			common = names
			continue
		}
		common = slices.DeleteFunc(common, func(n string) bool { return !slices.Contains(names, n) })
	}
	return common, nil
}

// Snapshot creates, restores or removes snapshot snap of every writable
// disk of a stopped VM together ("-c", "-a", "-d"). A create that fails
// half-way takes back what it made.
func (e *Engine) Snapshot(name, op, snap string) error {
	if err := ValidName(snap); err != nil {
		return invalid("invalid snapshot name %q: use letters, digits, '_', '.' or '-'", snap)
	}
	_, disks, err := e.snapshotTarget(name, op == "-c" || op == "-a")
	if err != nil {
		return err
	}
	if len(disks) == 0 {
		return invalid("vm %q has no writable qcow2 disk to snapshot", name)
	}
	have, err := e.Snapshots(name)
	if err != nil {
		return err
	}
	switch {
	case op == "-c" && slices.Contains(have, snap):
		return invalid("vm %q already has a snapshot %q: choose another name, or remove it first (hutch snapshot rm %s %s)", name, snap, name, snap)
	case op != "-c" && !slices.Contains(have, snap):
		return invalid("vm %q has no snapshot %q (see hutch snapshot ls %s)", name, snap, name)
	}
	for i, d := range disks {
		if _, err := disk.Snapshot(d, op, snap); err != nil {
			if op == "-c" {
				for _, done := range disks[:i] {
					disk.Snapshot(done, "-d", snap)
				}
			}
			return err
		}
	}
	return nil
}

// snapshotTarget checks the VM is stopped and lists its writable disks;
// whole means a raw writable disk is an error, since it cannot be taken
// along and the guest's disks would no longer match.
func (e *Engine) snapshotTarget(name string, whole bool) (Record, []string, error) {
	rec, err := e.Get(name)
	if err != nil {
		return rec, nil, err
	}
	if st := rec.live(); st.State == StateRunning || st.VMM.Alive() || st.State == StateCreated && (st.Creator.Alive() || st.Supervisor.Alive()) {
		return rec, nil, fmt.Errorf("vm %q is running: stop it first (hutch stop %s); snapshots are of a stopped vm", name, name)
	}
	qcow2, raw := rec.writableDisks()
	if whole && len(raw) > 0 {
		return rec, nil, invalid("vm %q writes the raw disk %s, which cannot hold a snapshot: attach it read-only or as qcow2", name, raw[0])
	}
	return rec, qcow2, nil
}
