package virtiofs

import (
	"fmt"
	"strings"
)

// GuestMount is one entry of the tree as the guest mounts it.
type GuestMount struct {
	Name     string // the entry's name in the tree
	Target   string // absolute guest path
	ReadOnly bool
}

// CmdlineKey is the kernel parameter that tells an init of hutch's what to
// mount: hutch.fs=NAME:TARGET[:ro],...
const CmdlineKey = "hutch.fs"

// CmdlineParam renders ms as CmdlineKey's parameter. Targets hold no
// space, comma or colon (the engine refuses them).
func CmdlineParam(ms []GuestMount) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.Name + ":" + m.Target
		if m.ReadOnly {
			parts[i] += ":ro"
		}
	}
	return CmdlineKey + "=" + strings.Join(parts, ",")
}

// ParseCmdline finds CmdlineKey in a kernel command line.
func ParseCmdline(cmdline string) []GuestMount {
	var out []GuestMount
	for _, f := range strings.Fields(cmdline) {
		v, ok := strings.CutPrefix(f, CmdlineKey+"=")
		if !ok {
			continue
		}
		for _, p := range strings.Split(v, ",") {
			parts := strings.Split(p, ":")
			if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || !strings.HasPrefix(parts[1], "/") {
				continue
			}
			out = append(out, GuestMount{Name: parts[0], Target: parts[1], ReadOnly: len(parts) == 3 && parts[2] == "ro"})
		}
	}
	return out
}

// Script is a POSIX shell script that mounts the tree and binds each
// entry into place, idempotently: cloud-init runs it on every boot.
func Script(ms []GuestMount) string {
	var b strings.Builder
	fmt.Fprintf(&b, "mkdir -p %s && { mountpoint -q %s || mount -t virtiofs %s %s; }", GuestRoot, GuestRoot, Tag, GuestRoot)
	for _, m := range ms {
		src := GuestRoot + "/" + m.Name
		fmt.Fprintf(&b, " && mkdir -p '%s' && { mountpoint -q '%s' || mount --bind %s '%s'; }", m.Target, m.Target, src, m.Target)
		if m.ReadOnly {
			fmt.Fprintf(&b, " && mount -o remount,bind,ro '%s'", m.Target)
		}
	}
	return b.String()
}
