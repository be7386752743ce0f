// Package identity decides who a VMM runs as.
package identity

import (
	"fmt"
	"os"
)

// Identity is the uid, gid and supplementary groups of a VMM.
type Identity struct {
	UID    int   `json:"uid"`
	GID    int   `json:"gid"`
	Groups []int `json:"groups"`
}

// Caller is the identity of a session VM: the user running hutch, with the
// groups of this login, nothing added and nothing taken.
func Caller() (Identity, error) {
	groups, err := os.Getgroups()
	if err != nil {
		return Identity{}, fmt.Errorf("read supplementary groups: %w", err)
	}
	if groups == nil {
		groups = []int{}
	}
	return Identity{UID: os.Getuid(), GID: os.Getgid(), Groups: groups}, nil
}
