package vm

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hutch-vm/hutch/internal/disk"
	"github.com/hutch-vm/hutch/internal/identity"
	"github.com/hutch-vm/hutch/internal/image"
	"github.com/hutch-vm/hutch/internal/netstack"
	"github.com/hutch-vm/hutch/internal/qemu"
	"github.com/hutch-vm/hutch/internal/store"
)

// Engine runs and manages the VMs of one layout.
type Engine struct {
	Layout store.Layout
	// Self is this executable; it is run again as each VM's supervisor.
	Self      string
	KVMDevice string
	// Accel is the accelerator mode a run gets when it names none (the
	// config's accel key, read from ConfigPath); empty is auto.
	Accel      string
	ConfigPath string
	// System is set when root runs hutch: each VMM runs as a leased
	// identity from Ledger.
	System bool
	Ledger *identity.Ledger
	// Notice receives one-line notices such as the TCG fallback.
	Notice io.Writer
}

// SuperviseCommand is the hidden verb that turns hutch into a supervisor.
const SuperviseCommand = "_supervise"

// readyTimeout bounds how long run waits for QEMU to come up; QEMU is
// running well before the guest boots, so this is generous.
const readyTimeout = 60 * time.Second

// portsLockTimeout bounds the wait for another run's port check: a run
// holds the lock until its QEMU has bound the ports, at most readyTimeout.
const portsLockTimeout = readyTimeout + 30*time.Second

// Run creates and starts a VM and returns its name once the VMM runs.
// console, when not nil, is handed to the supervisor as the first console
// client, so an attached run sees the guest from its first byte.
func (e *Engine) Run(s Spec, console *os.File) (string, error) {
	plan, generated, err := e.planNew(&s)
	if err != nil {
		return "", err
	}
	// Held from the check until QEMU has bound the ports, so two runs
	// cannot both see a port free.
	lk, err := store.AcquireWithin(e.Layout.PortsLock(), portsLockTimeout)
	if err != nil {
		return "", err
	}
	defer lk.Release()
	if err := netstack.CheckFree(s.Ports); err != nil {
		return "", &InputError{msg: err.Error()}
	}
	if err := e.create(&s, &plan, generated, false); err != nil {
		return "", err
	}
	return s.Name, e.start(s.Name, console, true)
}

// copyFile copies src to a new file dst, private to its owner.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// warnSize says when a VM asks for more CPUs or memory than the host has:
// QEMU starts it anyway, and the guest then crawls or the host swaps.
func (e *Engine) warnSize(s Spec) {
	if e.Notice == nil {
		return
	}
	if n := runtime.NumCPU(); s.CPUs > n {
		fmt.Fprintf(e.Notice, "hutch: --cpus %d is more than this host's %d CPUs: the guest's CPUs will share them\n", s.CPUs, n)
	}
	if total := hostMemoryMiB(); total > 0 && s.MemoryMiB > total {
		fmt.Fprintf(e.Notice, "hutch: --memory %dM is more than this host's %dM: the guest may be killed or the host swap when it uses it\n", s.MemoryMiB, total)
	}
}

// hostMemoryMiB is MemTotal from /proc/meminfo, 0 when unknown.
func hostMemoryMiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kib, _ := strconv.Atoi(f[0])
				return kib >> 10
			}
		}
	}
	return 0
}

// planNew names a new VM if it has no name (generated then says so),
// plans it, and warns about a size past the host's.
func (e *Engine) planNew(s *Spec) (plan Plan, generated bool, err error) {
	generated = s.Name == ""
	if generated {
		s.Name = newName()
	}
	if plan, err = e.plan(s); err != nil {
		return Plan{}, generated, err
	}
	e.warnSize(*s)
	return plan, generated, nil
}

// Create makes a VM, its record and its disks, without starting it;
// Start boots it from that record.
func (e *Engine) Create(s Spec) (string, error) {
	plan, generated, err := e.planNew(&s)
	if err != nil {
		return "", err
	}
	if err := e.create(&s, &plan, generated, true); err != nil {
		return "", err
	}
	if n := plan.Accel.Notice(); n != "" && e.Notice != nil {
		fmt.Fprintf(e.Notice, "hutch: %s\n", n)
	}
	return s.Name, nil
}

// Start boots a stopped or created VM again from its record: the same
// disks (its overlay keeps what the guest wrote), formats, ports and
// machine; nothing is probed again.
func (e *Engine) Start(name string, console *os.File) error {
	rec, err := e.Get(name)
	if err != nil {
		return err
	}
	switch st := rec.live(); {
	case st.State == StateRunning:
		return fmt.Errorf("vm %q is already running", name)
	case st.State == StateCreated && (st.Creator.Alive() || st.Supervisor.Alive()):
		return fmt.Errorf("vm %q is starting", name)
	case st.VMM.Alive():
		return fmt.Errorf("vm %q: its QEMU (pid %d) still runs without a supervisor: end it with hutch kill %s", name, st.VMM.Pid, name)
	}
	lk, err := store.AcquireWithin(e.Layout.PortsLock(), portsLockTimeout)
	if err != nil {
		return err
	}
	defer lk.Release()
	if err := netstack.CheckFree(rec.Spec.Ports); err != nil {
		return &InputError{msg: err.Error()}
	}
	self, err := store.Self()
	if err != nil {
		return err
	}
	err = store.Update(e.Layout.VM(name), func(r *Record) error {
		r.Status = Status{State: StateCreated, Creator: self, Defined: r.Status.Defined}
		return nil
	})
	if err != nil {
		return fmt.Errorf("start vm %q: %w", name, err)
	}
	return e.start(name, console, false)
}

// create writes the record of a planned VM and fills its data dir (the
// overlay, the seed). A generated name that turns out taken is drawn
// again. defined marks a VM from Create, which stays "created".
func (e *Engine) create(s *Spec, plan *Plan, generated, defined bool) error {
	creator, err := store.Self()
	if err != nil {
		return err
	}
	for {
		rec := Record{Name: s.Name, Created: time.Now().UTC(), Spec: *s, Plan: *plan,
			Status: Status{State: StateCreated, Creator: creator, Defined: defined}}
		p := *plan
		fill := func(staging string) error {
			for _, ov := range p.Overlays {
				if err := disk.CreateOverlay(ov.Base, ov.BaseFormat, max(ov.Size, ov.BaseSize), filepath.Join(staging, filepath.Base(ov.Path))); err != nil {
					return err
				}
			}
			if p.UEFI != nil {
				if err := copyFile(p.UEFI.Template, filepath.Join(staging, filepath.Base(p.UEFI.Vars))); err != nil {
					return fmt.Errorf("copy the UEFI variable store: %w", err)
				}
			}
			for _, b := range p.Blanks {
				if err := disk.CreateBlank(b.Format, b.Size, filepath.Join(staging, filepath.Base(b.Path))); err != nil {
					return err
				}
			}
			if p.cloud != nil {
				return e.writeSeed(*s, p.VMM.MAC, p.cloud, filepath.Join(staging, filepath.Base(p.Seed)))
			}
			return nil
		}
		err = store.Create(e.Layout, s.Name, rec, fill)
		if !errors.Is(err, store.ErrExists) || !generated {
			break
		}
		s.Name = newName()
		if *plan, err = e.plan(s); err != nil {
			return err
		}
	}
	if errors.Is(err, store.ErrExists) {
		return invalid("a vm named %q already exists: choose another --name, or remove it with hutch rm %s", s.Name, s.Name)
	}
	return err
}

// start leases the VM's identity (system mode) and starts its supervisor.
// A fresh VM that fails to start leaves nothing behind; a kept one stays,
// stopped, with the reason.
func (e *Engine) start(name string, console *os.File, fresh bool) error {
	var ports []netstack.Forward
	if rec, err := e.Get(name); err == nil {
		ports = rec.Spec.Ports
	}
	err := e.startLeased(name, console)
	if err == nil {
		if rec, gerr := e.Get(name); gerr == nil {
			if n := rec.Plan.Accel.Notice(); n != "" && e.Notice != nil {
				fmt.Fprintf(e.Notice, "hutch: %s\n", n)
			}
		}
		return nil
	}
	if fresh {
		if rmErr := e.Remove(name, true); rmErr != nil {
			slog.Debug("clean up after failed start", "vm", name, "err", rmErr)
		}
	} else {
		why := err.Error()
		store.Update(e.Layout.VM(name), func(r *Record) error {
			code := -1
			r.Status = Status{State: StateStopped, ExitCode: &code, Reason: "start failed: " + why, Defined: r.Status.Defined}
			return nil
		})
		if e.System {
			e.Ledger.Release(name)
		}
	}
	if IsInput(err) {
		// Another user's VM or program took a port between the check
		// and the bind (the check's lock is per user): name it as the
		// check would have.
		if cerr := netstack.CheckFree(ports); cerr != nil {
			return &InputError{msg: cerr.Error()}
		}
	}
	return fmt.Errorf("start vm %q: %w", name, err)
}

func (e *Engine) startLeased(name string, console *os.File) error {
	if e.System {
		var leaseErr error
		err := store.Update(e.Layout.VM(name), func(r *Record) error {
			leaseErr = e.lease(r)
			return leaseErr
		})
		if err != nil {
			return err
		}
	}
	return e.startSupervisor(name, console)
}

func (e *Engine) startSupervisor(name string, console *os.File) error {
	p := e.Layout.VM(name)
	logf, err := os.OpenFile(p.SuperLog(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open supervisor log: %w", err)
	}
	defer logf.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("create ready pipe: %w", err)
	}
	defer readyR.Close()
	cmd := exec.Command(e.Self, SuperviseCommand, "--run-root", e.Layout.RunRoot, "--data-root", e.Layout.DataRoot, name)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{readyW}
	if console != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, console)
		cmd.Args = append(cmd.Args[:2], append([]string{"--console"}, cmd.Args[2:]...)...)
	}
	// Its own session: the supervisor outlives this command and its terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("start supervisor: %w", err)
	}
	// Reap it if it ends while this command still runs (an attached run).
	go cmd.Wait()

	readyR.SetReadDeadline(time.Now().Add(readyTimeout))
	line, err := bufio.NewReader(readyR).ReadString('\n')
	line = strings.TrimSpace(line)
	switch {
	case line == readyOK:
		return nil
	case strings.HasPrefix(line, readyErr):
		msg := strings.TrimSpace(strings.TrimPrefix(line, readyErr))
		if portTaken(msg) {
			return &InputError{msg: msg}
		}
		return errors.New(msg)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("qemu did not come up within %s; see %s", readyTimeout, p.VMMLog())
	default:
		return fmt.Errorf("supervisor exited before the vm started; see %s", p.SuperLog())
	}
}

// The supervisor's one-line report on its ready pipe.
const (
	readyOK  = "ready"
	readyErr = "error:"
)

// Ready is what a supervisor writes when QEMU is up.
func Ready() string { return readyOK + "\n" }

// NotReady is what a supervisor writes when the VM failed to start.
func NotReady(err error) string {
	return readyErr + " " + strings.ReplaceAll(err.Error(), "\n", "; ") + "\n"
}

func newName() string {
	b := make([]byte, 3)
	rand.Read(b)
	return "vm-" + hex.EncodeToString(b)
}

// Get returns a VM's record.
func (e *Engine) Get(name string) (Record, error) {
	if err := ValidName(name); err != nil {
		return Record{}, err
	}
	rec, err := store.Load[Record](e.Layout.VM(name))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Record{}, fmt.Errorf("no such vm: %s", name)
	case err != nil:
		return Record{}, fmt.Errorf("vm %q has an unreadable record (%v): hutch rm -f %s stops what runs for it and removes it", name, err, name)
	}
	return rec, nil
}

// Inspect returns a VM's public view.
func (e *Engine) Inspect(name string) (View, error) {
	rec, err := e.Get(name)
	if err != nil {
		return View{}, err
	}
	return e.viewOf(rec), nil
}

// List returns the VMs, running ones only unless all, sorted by name. It
// also finishes removals and creations that a killed command cut short.
func (e *Engine) List(all bool) ([]View, error) {
	e.tidy()
	names, err := store.Names(e.Layout)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	views := []View{}
	for _, n := range names {
		rec, err := store.Load[Record](e.Layout.VM(n))
		if errors.Is(err, store.ErrNotFound) {
			continue // removed while listing
		}
		if err != nil {
			// One bad record must not hide every other VM; shown always,
			// since something of it may still run.
			views = append(views, brokenView(n, err))
			continue
		}
		v := e.viewOf(rec)
		if all || v.State == StateRunning {
			views = append(views, v)
		}
	}
	return views, nil
}

// Stop asks the guest to power down (ACPI), then after timeout sends QEMU
// SIGTERM, then SIGKILL. Stopping a stopped VM succeeds.
func (e *Engine) Stop(name string, timeout time.Duration) error {
	rec, err := e.Get(name)
	if err != nil {
		return err
	}
	st := rec.live()
	if st.State != StateRunning {
		return nil
	}
	p := rec.paths(e.Layout)
	// The flag only words the reason recorded at exit; a full disk must
	// not stop the stop.
	if err := store.Update(p, func(r *Record) error { r.Status.StopRequested = true; return nil }); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("no such vm: %s", name)
		}
		slog.Debug("record stop request", "vm", name, "err", err)
	}
	if q, err := qemu.DialQMP(p.QMP(), 2*time.Second); err == nil {
		if err := q.Execute("system_powerdown"); err != nil {
			slog.Debug("powerdown", "vm", name, "err", err)
		}
		q.Close()
	}
	if waitGone(st.Supervisor, timeout) {
		return nil
	}
	// The guest ignored the request: what follows is not a clean stop,
	// and neither the record nor the user may be told it was.
	if err := store.Update(p, func(r *Record) error { r.Status.StopForced = true; return nil }); err != nil {
		slog.Debug("record forced stop", "vm", name, "err", err)
	}
	if e.Notice != nil {
		fmt.Fprintf(e.Notice, "hutch: vm %s did not power off within %s; terminating its QEMU (unwritten guest data may be lost)\n", name, timeout)
	}
	st.VMM.Signal(syscall.SIGTERM)
	if waitGone(st.Supervisor, 5*time.Second) {
		return nil
	}
	return e.kill(name, st)
}

// Kill ends a running VM's QEMU at once.
func (e *Engine) Kill(name string) error {
	rec, err := e.Get(name)
	if err != nil {
		return err
	}
	st := rec.live()
	if st.State != StateRunning && !st.VMM.Alive() { // an orphaned QEMU is killed too
		return fmt.Errorf("vm %q is not running", name)
	}
	return e.kill(name, st)
}

func (e *Engine) kill(name string, st Status) error {
	// Asked for: no restart policy may undo it.
	store.Update(e.Layout.VM(name), func(r *Record) error { r.Status.KillRequested = true; return nil })
	st.VMM.Signal(syscall.SIGKILL)
	st.Passt.Signal(syscall.SIGKILL)
	if waitGone(st.Supervisor, 5*time.Second) {
		return nil
	}
	// A supervisor that does not notice its VMM died is broken; end it so
	// the VM can be removed. Its VMM dies with it (parent-death signal).
	st.Supervisor.Signal(syscall.SIGKILL)
	if !waitGone(st.Supervisor, 5*time.Second) || !waitGone(st.VMM, 5*time.Second) {
		return fmt.Errorf("vm %q: processes did not exit after SIGKILL", name)
	}
	return nil
}

// Remove deletes a VM: its record, logs, overlays and sockets, never a
// base image or an attached disk. A running VM needs force.
func (e *Engine) Remove(name string, force bool) error {
	if err := ValidName(name); err != nil {
		return err
	}
	p := e.Layout.VM(name)
	for attempt := 0; ; attempt++ {
		// The VM's lock orders this removal against its supervisor's own
		// record updates: a supervisor that records itself after the dir is
		// gone fails that update and takes its QEMU down; one that recorded
		// itself first is seen here and killed.
		lk, err := store.Acquire(p.Lock())
		if err != nil {
			return fmt.Errorf("no such vm: %s", name)
		}
		rec, err := store.Load[Record](p)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			lk.Release()
			if !force {
				return fmt.Errorf("vm %q has an unreadable record (%v): hutch rm -f %s stops what runs for it and removes it", name, err, name)
			}
			// The record cannot say which processes are the VM's: its
			// supervisor says so on its command line. Killed, it takes
			// QEMU and passt with it.
			if attempt >= 3 {
				return fmt.Errorf("vm %q: its supervisor keeps running after SIGKILL", name)
			}
			if pids := e.supervisorsOf(name); len(pids) > 0 {
				for _, pid := range pids {
					syscall.Kill(pid, syscall.SIGKILL)
				}
				time.Sleep(200 * time.Millisecond)
				continue
			}
			lk, err = store.Acquire(p.Lock())
			if err != nil {
				return fmt.Errorf("no such vm: %s", name)
			}
			err = store.Remove(e.Layout, name)
			lk.Release()
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			break
		}
		if err != nil {
			lk.Release()
			return fmt.Errorf("no such vm: %s", name)
		}
		if users := e.usersOf(p.Data, name); len(users) > 0 {
			lk.Release()
			return fmt.Errorf("vm %q holds a disk that vm %s uses: remove that first (hutch rm -f %s)", name, strings.Join(users, ", "), users[0])
		}
		st := rec.live()
		if st.State == StateRunning && !force {
			lk.Release()
			return fmt.Errorf("vm %q is running: stop it first with hutch stop %s, or use hutch rm -f", name, name)
		}
		if st.State == StateCreated && (st.Creator.Alive() || st.Supervisor.Alive()) && !force {
			lk.Release()
			return fmt.Errorf("vm %q is starting: wait for it and stop it, or use hutch rm -f %s", name, name)
		}
		if st.Supervisor.Alive() || st.VMM.Alive() || st.Passt.Alive() {
			// Killing needs the supervisor to record the exit, which needs
			// the lock: let go of it meanwhile.
			lk.Release()
			if attempt >= 3 {
				return fmt.Errorf("vm %q: its processes keep running after SIGKILL", name)
			}
			if err := e.kill(name, rec.Status); err != nil {
				return err
			}
			continue
		}
		err = store.Remove(e.Layout, name)
		lk.Release()
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		break
	}
	if e.System {
		if err := e.Ledger.Release(name); err != nil {
			return fmt.Errorf("release the lease of vm %q: %w", name, err)
		}
	}
	e.tidy()
	return nil
}

// RemoveImage deletes a cached image unless a VM boots from it: the VM's
// overlay reads it on every start. Podman refuses the same way.
func (e *Engine) RemoveImage(name string) error {
	if p, ok := image.Lookup(e.Layout, name); ok {
		if users := e.usersOf(p, ""); len(users) > 0 {
			return fmt.Errorf("image %s is used by vm %s: remove that first (hutch rm -f %s)", name, strings.Join(users, ", "), users[0])
		}
	}
	return image.Remove(e.Layout, name)
}

// usersOf lists the VMs other than except whose disks reach path, or a
// file under path when path is a directory (another VM's data dir).
func (e *Engine) usersOf(path, except string) []string {
	names, _ := store.Names(e.Layout)
	var users []string
	for _, n := range names {
		if n == except {
			continue
		}
		rec, err := store.Load[Record](e.Layout.VM(n))
		if err != nil {
			continue
		}
		uses := rec.Spec.Image == path
		for _, d := range rec.Plan.Disks {
			for _, l := range d.Chain {
				uses = uses || l.Path == path || strings.HasPrefix(l.Path, path+"/")
			}
		}
		if uses {
			users = append(users, n)
		}
	}
	return users
}

// silentAfter is how long a running VM's serial console may stay empty
// before inspect and ps say so.
const silentAfter = time.Minute

// viewOf is rec's view, with a warning when a running guest has written
// nothing to its console for a while: it may boot without a serial
// console, or the firmware may be stuck with nothing to boot.
func (e *Engine) viewOf(rec Record) View {
	v := rec.view()
	if v.State == StateRunning && v.Started != nil && time.Since(*v.Started) > silentAfter {
		if fi, err := os.Stat(e.Layout.VM(rec.Name).ConsoleLog()); err != nil || fi.Size() == 0 {
			v.Warning = fmt.Sprintf("the serial console has been silent for over %s: the guest may use another console (try --display vnc) or have nothing to boot", silentAfter)
		}
	}
	return v
}

// brokenView is what ps shows of a VM whose record cannot be read.
func brokenView(name string, err error) View {
	return View{Name: name, State: StateBroken, Groups: []int{}, Ports: []netstack.Forward{}, Disks: []PlannedDisk{},
		Command: []string{}, Descriptors: []FD{},
		Reason: fmt.Sprintf("record unreadable (%v); hutch rm -f %s removes it", err, name)}
}

// supervisorsOf finds the live supervisors of VM name in this layout by
// their command line (startSupervisor's argv): the way in when the
// record that names them is lost.
func (e *Engine) supervisorsOf(name string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + ent.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) < 2 || args[1] != SuperviseCommand || args[len(args)-1] != name {
			continue
		}
		if i := slices.Index(args, "--data-root"); i > 0 && i+1 < len(args) && args[i+1] == e.Layout.DataRoot {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGone polls until p has exited or timeout passes.
func waitGone(p store.Proc, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for p.Alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// WaitStopped waits until the VM is no longer running (or is gone, for a
// --rm VM) and returns its final view.
func (e *Engine) WaitStopped(name string) (View, bool) {
	for {
		rec, err := store.Load[Record](e.Layout.VM(name))
		if err != nil {
			return View{}, false
		}
		if v := rec.view(); v.State != StateRunning {
			return v, true
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// portTaken recognises QEMU's and passt's words for a host port someone
// else holds.
func portTaken(msg string) bool {
	return strings.Contains(msg, "Failed to bind any port") || strings.Contains(msg, "Could not set up host forwarding rule")
}

// Changes are what set alters on a stopped VM; zero values keep.
type Changes struct {
	CPUs     int
	Memory   string
	DiskSize string
}

// Set changes a stopped (or created) VM's CPUs, memory or root disk size,
// effective at its next start. A disk only grows.
func (e *Engine) Set(name string, c Changes) error {
	rec, err := e.Get(name)
	if err != nil {
		return err
	}
	if st := rec.live(); st.State == StateRunning || st.Creator.Alive() && st.State == StateCreated || st.VMM.Alive() {
		return fmt.Errorf("vm %q is running: stop it first (hutch stop %s); set changes a stopped vm", name, name)
	}
	if c.CPUs != 0 && (c.CPUs < 1 || c.CPUs > maxCPUs) {
		return invalid("invalid --cpus %d: give a number from 1 to %d", c.CPUs, maxCPUs)
	}
	mem := 0
	if c.Memory != "" {
		if mem, err = ParseMemory(c.Memory); err != nil {
			return err
		}
	}
	var size uint64
	if c.DiskSize != "" {
		if size, err = ParseSize(c.DiskSize); err != nil {
			return invalid("invalid --disk-size: %v", err)
		}
		if len(rec.Plan.Overlays) == 0 {
			return invalid("--disk-size grows the root disk of a vm booted from an IMAGE; vm %q has none", name)
		}
		if ov := rec.Plan.Overlays[0]; size < max(ov.Size, ov.BaseSize) {
			return invalid("--disk-size %s is smaller than the disk (%d bytes): a disk only grows", c.DiskSize, max(ov.Size, ov.BaseSize))
		}
	}
	return store.Update(e.Layout.VM(name), func(r *Record) error {
		if size > 0 {
			if err := disk.Resize(r.Plan.Overlays[0].Path, size); err != nil {
				return err
			}
			r.Plan.Overlays[0].Size, r.Spec.DiskSize = size, size
		}
		if c.CPUs != 0 {
			r.Spec.CPUs, r.Plan.VMM.CPUs = c.CPUs, c.CPUs
		}
		if mem != 0 {
			r.Spec.MemoryMiB, r.Plan.VMM.MemoryMiB = mem, mem
		}
		return nil
	})
}
