package oci

import (
	"fmt"
	"log/slog"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hutch-vm/hutch/internal/agent"
)

// maxCopiedFile bounds a bind-mounted host file copied into the guest:
// the copy travels in one agent frame.
const maxCopiedFile = 256 << 10

// ProcessOf is an OCI process as the agent runs it.
func ProcessOf(p *specs.Process) agent.Process {
	out := agent.Process{Args: p.Args, Env: p.Env, Cwd: p.Cwd, UID: p.User.UID, GID: p.User.GID,
		AdditionalGids: p.User.AdditionalGids, Terminal: p.Terminal, NoNewPrivs: p.NoNewPrivileges, Umask: p.User.Umask}
	if p.ConsoleSize != nil {
		out.Rows, out.Cols = uint16(p.ConsoleSize.Height), uint16(p.ConsoleSize.Width)
	}
	for _, r := range p.Rlimits {
		out.Rlimits = append(out.Rlimits, agent.Rlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
	}
	if c := p.Capabilities; c != nil {
		out.Capabilities = &agent.Capabilities{Bounding: c.Bounding, Effective: c.Effective,
			Inheritable: c.Inheritable, Permitted: c.Permitted, Ambient: c.Ambient}
	}
	return out
}

// hasNetNamespace reports whether the container has a network namespace
// of its own, which the shim then lives in.
func hasNetNamespace(s *specs.Spec) bool {
	_, own := netNamespacePath(s)
	return own
}

// netNamespacePath is the namespace to join; "" with own=true means a new
// one.
func netNamespacePath(s *specs.Spec) (path string, own bool) {
	if s.Linux == nil {
		return "", false
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path, true
		}
	}
	return "", false
}

// setup is what the agent needs from the configuration: the rootfs and
// bind mounts come through the shared tree, or, where the host cannot
// share files, as copiedSetup says.
func (s *shim) setup() (agent.Setup, error) {
	spec := s.bundle.Spec
	out := agent.Setup{Hostname: spec.Hostname, Rootfs: "/dev/vda", Command: spec.Process.Args[0], Env: spec.Process.Env,
		Network: agent.Network{Enabled: !s.noNIC}, NewPIDNamespace: newPIDNamespace(spec)}
	if !s.noNIC {
		out.Network.Address, out.Network.Gateway, out.Network.DNS = s.net.CIDR(), s.net.Gateway.String(), s.net.DNS.String()
	}
	if spec.Root != nil {
		out.RootfsReadonly = spec.Root.Readonly
	}
	if s.shareNames != nil {
		out.Rootfs = ""
		sharedSetup(&out, spec, s.shareNames)
	} else if err := copiedSetup(&out, spec); err != nil {
		return out, err
	}
	if spec.Linux != nil {
		out.Sysctl = spec.Linux.Sysctl
	}
	out.Devices = devicesOf(spec)
	return out, nil
}

// devicesOf are the spec's device nodes as the agent makes them.
func devicesOf(spec *specs.Spec) []agent.Device {
	if spec.Linux == nil {
		return nil
	}
	var out []agent.Device
	for _, d := range spec.Linux.Devices {
		dev := agent.Device{Path: d.Path, Type: d.Type, Major: d.Major, Minor: d.Minor, Mode: 0o666}
		if d.FileMode != nil {
			dev.Mode = uint32(d.FileMode.Perm())
		}
		if d.UID != nil {
			dev.UID = *d.UID
		}
		if d.GID != nil {
			dev.GID = *d.GID
		}
		out = append(out, dev)
	}
	return out
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

// copiedSetup is the fallback without shared files: the rootfs is a block
// image, bind mounts of files (an engine's resolv.conf, hosts, hostname)
// are copied in, and bind mounts of directories become empty directories,
// said in the shim's log.
func copiedSetup(out *agent.Setup, spec *specs.Spec) error {
	for _, m := range spec.Mounts {
		if isBind(m) {
			fi, err := os.Stat(m.Source)
			if err != nil {
				return fmt.Errorf("bind mount %s: %w", m.Source, err)
			}
			if fi.Mode().IsRegular() {
				if fi.Size() > maxCopiedFile {
					return fmt.Errorf("bind mount of %s: files over %d KiB cannot be copied into the VM", m.Source, maxCopiedFile>>10)
				}
				data, err := os.ReadFile(m.Source)
				if err != nil {
					return fmt.Errorf("bind mount %s: %w", m.Source, err)
				}
				out.Files = append(out.Files, agent.File{Destination: m.Destination, Mode: uint32(fi.Mode().Perm()), Data: data})
				continue
			}
			slog.Warn("a bind-mounted directory is not shared with the VM: the container sees it empty",
				"source", m.Source, "destination", m.Destination)
		}
		out.Mounts = append(out.Mounts, agent.Mount{Destination: m.Destination, Type: m.Type, Source: m.Source, Options: m.Options})
	}
	return nil
}
