package oci

import (
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// VMMUser is who a container's VMM runs as.
type VMMUser struct {
	Kind   string   `json:"kind"` // "self", "namespace-root", "process-user" or "lease"
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups"`
}

// Who a VMM runs as, by who runs hutch-runtime.
const (
	// The engine is unprivileged: the VMM is the same user.
	KindSelf = "self"
	// A rootless engine's user namespace, whose root is an ordinary user
	// on the host: the VMM keeps that id, with no capabilities.
	KindNamespaceRoot = "namespace-root"
	// Root, and the container names a non-root user: the VMM runs as it
	// (urunc's rule), so files that user owns are the VMM's to use.
	KindProcessUser = "process-user"
	// Root, and the container runs as root: the VMM gets an id of its own
	// from the lease ledger, as in system mode.
	KindLease = "lease"
)

// ChooseVMMUser decides the VMM's identity. kvmGroups are the groups that
// let it open /dev/kvm (none without KVM). callerGroups are the groups of
// the engine's user (who runs hutch-runtime): of the container's
// additionalGids only those reach the VMM, since an image can ask for
// any group (disk, shadow, docker) and the VMM is a host process. Group
// 0 is never given: it opens root's group files on the host.
func ChooseVMMUser(euid int, rootIsUser bool, u specs.User, kvmGroups, callerGroups []uint32) VMMUser {
	switch {
	case euid != 0:
		return VMMUser{Kind: KindSelf}
	case rootIsUser:
		return VMMUser{Kind: KindNamespaceRoot, Groups: []uint32{}}
	case u.UID != 0 && u.GID != 0:
		groups := []uint32{}
		var allowed []uint32
		for _, g := range u.AdditionalGids {
			if slices.Contains(callerGroups, g) {
				allowed = append(allowed, g)
			}
		}
		for _, g := range append(allowed, kvmGroups...) {
			if g != 0 && g != u.GID && !slices.Contains(groups, g) {
				groups = append(groups, g)
			}
		}
		return VMMUser{Kind: KindProcessUser, UID: u.UID, GID: u.GID, Groups: groups}
	default:
		return VMMUser{Kind: KindLease, Groups: slices.Clone(append([]uint32{}, kvmGroups...))}
	}
}
