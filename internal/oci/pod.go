package oci

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/agent"
	"github.com/hutch-vm/hutch/internal/store"
	"github.com/hutch-vm/hutch/internal/virtiofs"
)

// A pod is one VM: its sandbox container (the pause container CRI starts
// first) boots it, and every later container of the pod runs in it, each
// with its own root, mounts, PID namespace and process, sharing the
// guest's network, hostname and IPC as Kubernetes expects. The engines say
// which is which in annotations: containerd's CRI and CRI-O's.
var (
	containerTypeKeys = []string{"io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType"}
	sandboxIDKeys     = []string{"io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-o.SandboxID"}
)

// podRole says what a configuration is in a pod: its sandbox, a member of
// the sandbox named, or neither (a container of its own, in its own VM).
func podRole(s *specs.Spec) (sandbox bool, memberOf string) {
	for _, k := range containerTypeKeys {
		switch s.Annotations[k] {
		case "sandbox":
			return true, ""
		case "container":
			for _, id := range sandboxIDKeys {
				if v := s.Annotations[id]; v != "" {
					return false, v
				}
			}
		}
	}
	return false, ""
}

// podEntry is the sandbox's directory of its members' files in its shared
// tree: a shared mount on the host, so what is mounted in it later
// (a member's rootfs and volumes) reaches the file server's view of it.
const podEntry = "pod"

// makePodDir makes the sandbox's pod directory a shared mount of its own
// in the host's mount namespace, before the shim's namespaces are copied
// from it.
func makePodDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("make the pod's directory: %w", err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("make the pod's directory a mount: %w", err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		unix.Unmount(dir, unix.MNT_DETACH)
		return fmt.Errorf("share the pod's directory: %w", err)
	}
	return nil
}

// detachAll lazily unmounts everything mounted at or under dir, deepest
// first, so that removing dir afterwards removes only hutch's own empty
// mount points, never the files of a rootfs or a volume bound there.
func detachAll(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountinfo(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	return nil
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(p string) string {
	if !strings.Contains(p, `\`) {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '\\' && i+3 < len(p) {
			var c byte
			if _, err := fmt.Sscanf(p[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// removeTree removes dir once nothing is mounted under it.
func removeTree(dir string) error {
	if err := detachAll(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// memberDir is where a member's files are bound in its sandbox's pod
// directory, and memberTreePath the same in the shared tree.
func memberDir(sandboxDir, id string) string { return filepath.Join(sandboxDir, podEntry, id) }
func memberTreePath(id string) string        { return podEntry + "/" + id }

// bindMember binds a member's rootfs and bind mounts into the sandbox's
// pod directory, where the VM's file server sees them, and returns the
// agent's setup for it.
func bindMember(sandboxDir, id string, b *Bundle) (agent.Setup, error) {
	entries, _, err := shareEntries(b)
	if err != nil {
		return agent.Setup{}, err
	}
	dir := memberDir(sandboxDir, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return agent.Setup{}, fmt.Errorf("make the member's directory in its pod: %w", err)
	}
	if err := virtiofs.BindEntries(dir, entries); err != nil {
		removeTree(dir)
		return agent.Setup{}, err
	}
	return memberSetup(id, b), nil
}

// memberSetup is the agent's setup for a pod member whose files
// bindMember has bound.
func memberSetup(id string, b *Bundle) agent.Setup {
	_, names, _ := shareEntries(b)
	prefixed := map[int]string{}
	for i, n := range names {
		prefixed[i] = memberTreePath(id) + "/" + n
	}
	spec := b.Spec
	out := agent.Setup{Hostname: spec.Hostname, Command: spec.Process.Args[0], Env: spec.Process.Env,
		Member: true, NewPIDNamespace: newPIDNamespace(spec), SharePIDs: joinsPIDNamespace(spec),
		SharedRoot: memberTreePath(id) + "/" + rootfsEntry}
	if spec.Root != nil {
		out.RootfsReadonly = spec.Root.Readonly
	}
	sharedSetup(&out, spec, prefixed)
	out.Devices = devicesOf(spec)
	return out
}

// MemberCommand is hutch-runtime's hidden verb for a pod member's relay:
// the host process engines know as the member container.
const MemberCommand = "_member"

// createMember creates a later container of a pod in its sandbox's VM:
// its files are bound into the pod's directory, and a relay process,
// whose pid is the container's, hands its stdio to the sandbox's shim and
// stands for it until its process ends.
func (r Runtime) createMember(o CreateOptions, b *Bundle, sb Record) (*exec.Cmd, []string, error) {
	if _, err := bindMember(r.paths(sb.ID).Dir, o.ID, b); err != nil {
		return nil, nil, err
	}
	rec := Record{ID: o.ID, Bundle: b.Dir, Rootfs: b.Rootfs, Created: time.Now().UTC(), Annotations: b.Spec.Annotations,
		Hooks: b.Spec.Hooks, Sandbox: sb.ID}
	if err := store.WriteJSON(r.paths(o.ID).State(), rec); err != nil {
		return nil, nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("find the hutch-runtime executable: %w", err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	defer readyR.Close()
	cmd := &exec.Cmd{Path: self, Args: []string{self, MemberCommand, "--root", r.Root, "--console-socket", o.ConsoleSocket, o.ID},
		Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, ExtraFiles: []*os.File{readyW},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true}}
	if b.Spec.Process.Terminal {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil // see Create
	}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("start the container's relay: %w", err)
	}
	proc, err := store.ProcOf(cmd.Process.Pid)
	if err != nil {
		return cmd, nil, err
	}
	if err := r.update(o.ID, func(rec *Record) { rec.Shim = proc }); err != nil {
		return cmd, nil, err
	}
	cgroups, err := r.joinCgroup(o.ID, b.Spec, cmd.Process.Pid)
	if err != nil {
		return cmd, cgroups, err
	}
	msg, _ := io.ReadAll(io.LimitReader(readyR, 64<<10))
	if string(msg) != "ok" {
		if len(msg) == 0 {
			msg = []byte("the container's relay exited before the container was created")
		}
		return cmd, cgroups, errors.New(string(msg))
	}
	// The create-time hooks run once the member exists in the VM and
	// before its process can start, with its relay's pid, as a sandbox's
	// run with its shim's. A member shares its pod's namespaces, so these
	// hooks have none of their own to configure.
	rec.Shim = proc
	if err := runHooks(rec.Hooks, hooksCreate, hookState(rec, specs.StateCreating)); err != nil {
		if done, lerr := r.load(o.ID); lerr == nil {
			r.ask(sb.ID, request{Op: "remove", Member: done.Member})
		}
		return cmd, cgroups, err
	}
	if o.PidFile != "" {
		if err := writePidFile(o.PidFile, cmd.Process.Pid); err != nil {
			return cmd, cgroups, err
		}
	}
	return cmd, cgroups, nil
}

// RunMember is a pod member's relay: it asks the sandbox's shim to create
// the container, says so on ready, relays until the container's process
// ends, records the status and returns it.
func (r Runtime) RunMember(id, consoleSocket string, ready *os.File) int {
	rec, err := r.load(id)
	if err != nil {
		fmt.Fprint(ready, err)
		return 1
	}
	b, err := LoadBundle(rec.Bundle)
	if err != nil {
		fmt.Fprint(ready, err)
		return 1
	}
	setup := memberSetup(id, b)
	proc := ProcessOf(b.Spec.Process)
	created := func(rep reply) error { return r.update(id, func(rec *Record) { rec.Member = rep.Member }) }
	status, err := r.relay(rec.Sandbox, request{Op: "member", Setup: &setup, Process: &proc}, proc.Terminal, consoleSocket, ready, created)
	if err != nil {
		slog.Error("pod member", "id", id, "err", err)
	}
	r.update(id, func(rec *Record) { rec.Exit = &status })
	return status
}

// joinsPIDNamespace says the configuration names a PID namespace to join:
// in a pod, the sandbox's (Kubernetes' shareProcessNamespace, and crictl's
// default).
func joinsPIDNamespace(s *specs.Spec) bool {
	if s.Linux == nil {
		return false
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace {
			return ns.Path != ""
		}
	}
	return false
}
