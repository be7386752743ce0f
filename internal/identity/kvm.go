package identity

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// DeviceInfo is what the group decision needs to know about a device node.
type DeviceInfo struct {
	Path     string
	Mode     os.FileMode
	UID, GID uint32
	Exists   bool
}

// StatDevice describes the node at path; a missing node is not an error
// but a DeviceInfo with Exists false, since "no KVM here" is an answer.
func StatDevice(path string) (DeviceInfo, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return DeviceInfo{Path: path}, nil
	}
	if err != nil {
		return DeviceInfo{}, fmt.Errorf("stat %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return DeviceInfo{}, fmt.Errorf("stat %s: no owner information", path)
	}
	return DeviceInfo{Path: path, Mode: fi.Mode(), UID: st.Uid, GID: st.Gid, Exists: true}, nil
}

// VMMGroups is the supplementary group list of a VMM in system mode: the
// fewest groups that let a leased id open the KVM device read-write. That
// is none without KVM or when anyone may open the device, otherwise
// exactly the group that owns it. Root's group is never one of them: a
// device only root's group can open is refused with the fix, not worked
// around by granting gid 0.
//
// The result is never nil, so an empty list reads as "no groups" and not
// as "keep the caller's" wherever it is applied.
func VMMGroups(useKVM bool, kvm DeviceInfo) ([]uint32, error) {
	if !useKVM {
		return []uint32{}, nil
	}
	fix := fmt.Sprintf("give %[1]s to a kvm group: chgrp kvm %[1]s && chmod 0660 %[1]s", kvm.Path)
	if !kvm.Exists {
		return nil, fmt.Errorf("use KVM: %s does not exist; load the kvm module (modprobe kvm_intel or kvm_amd) or run without KVM", kvm.Path)
	}
	if kvm.Mode&os.ModeCharDevice == 0 {
		return nil, fmt.Errorf("use KVM: %s is not a character device (mode %v)", kvm.Path, kvm.Mode)
	}
	perm := kvm.Mode.Perm()
	switch {
	case perm&0o006 == 0o006:
		return []uint32{}, nil
	case perm&0o060 != 0o060:
		return nil, fmt.Errorf("use KVM: %s (mode %04o, group %d) cannot be opened read-write by its group; %s", kvm.Path, perm, kvm.GID, fix)
	case kvm.GID == 0:
		return nil, fmt.Errorf("use KVM: %s belongs to group 0, and a VMM never gets root's group; %s", kvm.Path, fix)
	}
	return []uint32{kvm.GID}, nil
}
