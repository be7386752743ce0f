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
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/cgroup"
	"github.com/hutch-vm/hutch/internal/config"
	"github.com/hutch-vm/hutch/internal/store"
)

// CreateOptions are runc create's.
type CreateOptions struct {
	ID, Bundle, PidFile, ConsoleSocket string
	Stdin, Stdout, Stderr              *os.File
}

// ErrExists is runc's answer for a taken id.
var ErrExists = errors.New("container with given ID already exists")

// Create makes a container: its rootfs image, its shim and its booted VM,
// with the process not yet started. On failure nothing of it is left.
// The shim is returned so that run can wait for it.
func (r Runtime) Create(o CreateOptions) (*exec.Cmd, error) {
	if err := CheckID(o.ID); err != nil {
		return nil, err
	}
	b, err := LoadBundle(o.Bundle)
	if err != nil {
		return nil, err
	}
	if _, err := config.RootlessAnnotation(b.Spec.Annotations); err != nil {
		return nil, err
	}
	if b.Spec.Process.Terminal && o.ConsoleSocket == "" {
		return nil, errors.New("cannot allocate tty if runc will detach without setting console socket")
	}
	if err := os.MkdirAll(r.Root, 0o700); err != nil {
		return nil, fmt.Errorf("create runtime root %s: %w", r.Root, err)
	}
	cfg, _, err := runtimeConfig()
	if err != nil {
		return nil, err
	}
	p := r.paths(o.ID)
	sandbox, memberOf := podRole(b.Spec)
	var sb Record
	if memberOf != "" {
		if sb, err = r.load(memberOf); err != nil || sb.Status() == specs.StateStopped || sb.Sandbox != "" {
			return nil, fmt.Errorf("the pod's sandbox container %s is not running: create it first", memberOf)
		}
	}
	if err := os.Mkdir(p.Dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, ErrExists
		}
		return nil, fmt.Errorf("create container dir: %w", err)
	}
	var shim *exec.Cmd
	var cgroups []string
	ok := false
	defer func() {
		if ok {
			return
		}
		if shim != nil && shim.Process != nil {
			shim.Process.Kill()
			shim.Wait()
		}
		cgroup.RemoveDirs(cgroups)
		if memberOf != "" {
			removeTree(memberDir(r.paths(memberOf).Dir, o.ID))
		}
		removeTree(p.Dir)
	}()
	if memberOf != "" {
		shim, cgroups, err = r.createMember(o, b, sb)
		ok = err == nil
		return shim, err
	}
	if sandbox {
		if err := makePodDir(filepath.Join(p.Dir, podEntry)); err != nil {
			return nil, err
		}
	}
	rec := Record{ID: o.ID, Bundle: b.Dir, Rootfs: b.Rootfs, Created: time.Now().UTC(), Annotations: b.Spec.Annotations, Hooks: b.Spec.Hooks}
	if err := store.WriteJSON(p.State(), rec); err != nil {
		return nil, err
	}
	readyR, readyW, err := shimChannel()
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	defer readyR.Close()
	if shim, err = r.shimCommand(o, b.Spec); err != nil {
		readyW.Close()
		return nil, err
	}
	shim.ExtraFiles = []*os.File{readyW}
	if newMountNamespace(b.Spec) {
		hostRoot, err := openHostRoot()
		if err != nil {
			readyW.Close()
			return nil, err
		}
		defer hostRoot.Close()
		shim.ExtraFiles = append(shim.ExtraFiles, hostRoot)
		shim.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNS
		shim.Args = append(shim.Args[:len(shim.Args)-1], "--host-root", o.ID)
	}
	if b.Spec.Process.Terminal {
		// The container's stdio is its terminal. The shim must not hold
		// create's: an engine that reads create's output to its end (as
		// containerd's shim does) would wait for the container to end.
		shim.Stdin, shim.Stdout, shim.Stderr = nil, nil, nil
	}
	err = shim.Start()
	readyW.Close()
	if err != nil {
		return nil, fmt.Errorf("start the container's shim: %w", err)
	}
	proc, err := store.ProcOf(shim.Process.Pid)
	if err != nil {
		return nil, fmt.Errorf("start the container's shim: %w", err)
	}
	if err := r.update(o.ID, func(rec *Record) { rec.Shim = proc }); err != nil {
		return nil, err
	}
	rec.Shim = proc
	place := func() error {
		var err error
		if cgroups, err = r.joinCgroup(o.ID, b.Spec, shim.Process.Pid); err != nil {
			return err
		}
		return runHooks(rec.Hooks, hooksCreate, hookState(rec, specs.StateCreating))
	}
	if err := awaitShim(readyR, cfg.BootTimeout+shimSetupTimeout, p.ShimLog(), place); err != nil {
		return nil, err
	}
	if o.PidFile != "" {
		if err := writePidFile(o.PidFile, shim.Process.Pid); err != nil {
			return nil, err
		}
	}
	ok = true
	return shim, nil
}

// joinCgroup puts the shim, and so the VM and everything else it starts,
// in the container's cgroup (linux.cgroupsPath), where engines read a
// container's statistics: `docker stats` then counts the VM. Without root
// the engine has made no group hutch-runtime could join (rootless runc
// skips it too).
func (r Runtime) joinCgroup(id string, s *specs.Spec, pid int) ([]string, error) {
	if s.Linux == nil || s.Linux.CgroupsPath == "" || os.Geteuid() != 0 {
		return nil, nil
	}
	path, err := cgroup.ContainerPath(s.Linux.CgroupsPath)
	if err != nil {
		return nil, err
	}
	dirs, err := cgroup.Join(cgroup.Host(), path, pid)
	if uerr := r.update(id, func(rec *Record) { rec.Cgroups = dirs }); err == nil {
		err = uerr
	}
	if err != nil {
		return dirs, fmt.Errorf("put the container in its cgroup: %w", err)
	}
	return dirs, nil
}

// shimSetupTimeout is the shim's time besides the guest's boot: building
// the guest's initramfs on a cold cache, the network, starting QEMU.
const shimSetupTimeout = 60 * time.Second

// readyNotice starts a line the shim sends create to pass on to the
// engine (the TCG fallback) before its verdict.
const readyNotice = "notice: "

// shimChannel is the socket the shim reports on, and reads create's
// answer from when create runs hooks for it; create's end has deadlines.
func shimChannel() (mine, shims *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	unix.SetNonblock(fds[0], true)
	return os.NewFile(uintptr(fds[0]), "shim"), os.NewFile(uintptr(fds[1]), "ready"), nil
}

// shimHooks is the line a shim sends first, when its namespaces exist;
// create answers shimGo once it has put the shim in the container's cgroup
// and run the create-time hooks.
const (
	shimHooks = "placement"
	shimGo    = "go"
)

// awaitShim reads the shim's report: notices, then "ok" or the error that
// stopped it; on the way it runs hooks when the shim asks. A shim silent
// past timeout is an error; the caller kills it and everything it started
// dies with it.
func awaitShim(r *os.File, timeout time.Duration, logPath string, hooks func() error) error {
	r.SetReadDeadline(time.Now().Add(timeout))
	lines := bufio.NewScanner(io.LimitReader(r, 64<<10))
	var verdict string
	for lines.Scan() {
		line := lines.Text()
		if n, ok := strings.CutPrefix(line, readyNotice); ok {
			slog.Warn(n) // runc's warnings go to --log, or stderr without one
			continue
		}
		if line == shimHooks {
			if err := hooks(); err != nil {
				return err
			}
			if _, err := fmt.Fprintln(r, shimGo); err != nil {
				return fmt.Errorf("the shim went away while its hooks ran; see %s", logPath)
			}
			continue
		}
		verdict = line
	}
	if errors.Is(lines.Err(), os.ErrDeadlineExceeded) {
		return fmt.Errorf("the container was not created within %s; see %s", timeout, logPath)
	}
	switch verdict {
	case "ok":
		return nil
	case "":
		return errors.New("the shim exited before the container was created; see " + logPath)
	}
	return errors.New(verdict)
}

// shimCommand starts the shim in the container's network namespace: a new
// one when the configuration asks for one without a path, the one named
// otherwise (entered by nsenter before the shim's first instruction, so
// every thread of it is there).
func (r Runtime) shimCommand(o CreateOptions, s *specs.Spec) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the hutch-runtime executable: %w", err)
	}
	args := []string{self, ShimCommand, "--root", r.Root, "--console-socket", o.ConsoleSocket, o.ID}
	cmd := &exec.Cmd{Path: self, Args: args, Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true}}
	if path, own := netNamespacePath(s); own && path == "" {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
	} else if own {
		nsenter, err := findTool("nsenter", "util-linux")
		if err != nil {
			return nil, err
		}
		cmd.Path, cmd.Args = nsenter, append([]string{nsenter, "--net=" + path, "--"}, args...)
	}
	if newPIDNamespace(s) {
		// The shim is the container's pid: as runc's init is, it is pid 1
		// of the container's own namespace, which engines join (podman cp
		// does), and everything it starts dies with it.
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWPID
	}
	return cmd, nil
}

// newPIDNamespace says the configuration asks for a new pid namespace.
func newPIDNamespace(s *specs.Spec) bool {
	if s.Linux == nil {
		return false
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace {
			return ns.Path == ""
		}
	}
	return false
}

func writePidFile(path string, pid int) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write pid file: %w", err)
	}
	return nil
}

// Start runs the created container's process.
func (r Runtime) Start(id string) error {
	rec, err := r.load(id)
	if err != nil {
		return err
	}
	switch rec.Status() {
	case specs.StateStopped:
		return errors.New("cannot start a container that has stopped")
	case specs.StateRunning:
		return errors.New("cannot start an already running container")
	}
	if err := runHooks(rec.Hooks, hooksStart, hookState(rec, specs.StateCreated)); err != nil {
		rec.Shim.Signal(syscall.SIGKILL) // the spec's "stop the container"
		return err
	}
	target := id
	if rec.Sandbox != "" {
		target = rec.Sandbox
	}
	rep, err := r.ask(target, request{Op: "start", Member: rec.Member})
	if err != nil {
		return err
	}
	if rep.Error != "" {
		return errors.New(rep.Error)
	}
	if rec.Sandbox != "" {
		if err := r.update(id, func(rec *Record) { rec.Started = true }); err != nil {
			return err
		}
	}
	runHooksWarn(rec.Hooks, hooksPoststart, hookState(rec, specs.StateRunning))
	return nil
}

// ErrNotRunning is runc's answer when a signal has no process to go to.
var ErrNotRunning = errors.New("container not running")

// Kill sends sig to the container's process, or with all to every process
// of the container. SIGKILL goes to the shim itself: that cannot be
// caught, and takes the VM with it, as it would take a runc container's
// init.
func (r Runtime) Kill(id string, sig syscall.Signal, all bool) error {
	rec, err := r.load(id)
	if err != nil {
		return err
	}
	if rec.Status() == specs.StateStopped {
		return ErrNotRunning
	}
	if sig == syscall.SIGKILL || !rec.Started {
		return rec.Shim.Signal(sig)
	}
	if all {
		target := id
		if rec.Sandbox != "" {
			target = rec.Sandbox
		}
		rep, err := r.ask(target, request{Op: "kill", Signal: int(sig), All: true, Member: rec.Member})
		if err != nil {
			return err
		}
		if rep.Error != "" {
			return errors.New(rep.Error)
		}
		return nil
	}
	return rec.Shim.Signal(sig)
}

// Delete removes a stopped (or, with force, any) container; a created one
// is killed first, as runc does.
func (r Runtime) Delete(id string, force bool) error {
	rec, err := r.load(id)
	if err != nil {
		return err
	}
	status := rec.Status()
	if (status == specs.StateRunning || status == StatePaused) && !force {
		return fmt.Errorf("cannot delete container %s that is not stopped: %s", id, status)
	}
	if status != specs.StateStopped {
		rec.Shim.Signal(syscall.SIGKILL)
		for deadline := time.Now().Add(10 * time.Second); rec.Shim.Alive(); {
			if time.Now().After(deadline) {
				return fmt.Errorf("container %s: its shim (pid %d) did not die", id, rec.Shim.Pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	cgroup.RemoveDirs(rec.Cgroups)
	if rec.Lease != "" {
		if l, err := ledger(); err == nil {
			l.Release(rec.Lease)
		}
	}
	if rec.Sandbox != "" {
		// The sandbox may be gone, and its VM with it.
		r.ask(rec.Sandbox, request{Op: "remove", Member: rec.Member})
		if err := removeTree(memberDir(r.paths(rec.Sandbox).Dir, id)); err != nil {
			return fmt.Errorf("delete container %s: %w", id, err)
		}
	}
	if err := removeTree(r.paths(id).Dir); err != nil {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	runHooksWarn(rec.Hooks, hooksPoststop, hookState(rec, specs.StateStopped))
	return nil
}

// State is runc state's answer.
func (r Runtime) State(id string) (State, error) {
	rec, err := r.load(id)
	if err != nil {
		return State{}, err
	}
	return rec.State(), nil
}

// List is every container under the root.
func (r Runtime) List() ([]Record, error) {
	ents, err := os.ReadDir(r.Root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []Record
	for _, e := range ents {
		if !e.IsDir() || CheckID(e.Name()) != nil || e.Name()[0] == '.' {
			continue
		}
		if rec, err := r.load(e.Name()); err == nil {
			out = append(out, rec)
		}
	}
	return out, nil
}

// Process is the container's own process, the base of an exec given only
// a command.
func (r Runtime) Process(id string) (*specs.Process, error) {
	rec, err := r.load(id)
	if err != nil {
		return nil, err
	}
	b, err := LoadBundle(rec.Bundle)
	if err != nil {
		return nil, err
	}
	return b.Spec.Process, nil
}

// Features is runc features' answer for a VM runtime: what the guest
// agent implements.
func Features() any {
	yes := true
	return struct {
		OCIVersionMin string   `json:"ociVersionMin"`
		OCIVersionMax string   `json:"ociVersionMax"`
		Hooks         []string `json:"hooks"`
		MountOptions  []string `json:"mountOptions"`
		Linux         any      `json:"linux"`
		Annotations   any      `json:"annotations"`
	}{
		OCIVersionMin: "1.0.0", OCIVersionMax: specs.Version,
		Hooks: []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"},
		MountOptions: []string{"ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync", "async",
			"noatime", "atime", "nodiratime", "diratime", "relatime", "norelatime", "strictatime", "dirsync", "mand", "nomand", "bind", "rbind"},
		Linux: map[string]any{
			"namespaces":      []string{"network", "mount", "pid", "ipc", "uts", "user", "cgroup"},
			"mountExtensions": map[string]any{"idmap": map[string]any{"enabled": false}},
			"selinux":         map[string]any{"enabled": false},
			"apparmor":        map[string]any{"enabled": false},
			"seccomp":         map[string]any{"enabled": false},
			"cgroup":          map[string]any{"v1": &yes, "v2": &yes, "systemd": false},
		},
		Annotations: map[string]string{
			"io.katacontainers.config.hypervisor.rootless": "true: accepted; every VMM of hutch-runtime is unprivileged",
			"org.hutch.vm":                      "each container runs in its own VM, or a pod's in its sandbox's",
			"io.kubernetes.cri.container-type":  "sandbox boots the pod's VM; container runs in it",
			"io.kubernetes.cri-o.ContainerType": "as io.kubernetes.cri.container-type",
			"org.hutch.verbs": "create, start, run, state, kill, delete, exec, ps (--format json), pause, resume, " +
				"events (--stats, from the guest), update (memory, pids and CPU limits, in the guest), list, features",
		},
	}
}
