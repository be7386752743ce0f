package vm

import (
	"regexp"
	"strconv"
	"time"

	"github.com/hutch-vm/hutch/internal/accel"
	"github.com/hutch-vm/hutch/internal/disk"
	"github.com/hutch-vm/hutch/internal/identity"
	"github.com/hutch-vm/hutch/internal/netstack"
	"github.com/hutch-vm/hutch/internal/qemu"
	"github.com/hutch-vm/hutch/internal/store"
	"github.com/hutch-vm/hutch/internal/virtiofs"
)

// States a VM is reported in.
const (
	StateCreated = "created"
	StateRunning = "running"
	StateStopped = "stopped"
	// StateBroken is a VM whose record cannot be read.
	StateBroken = "broken"
)

// Plan is a Spec resolved against the host: who runs the VMM, which binary,
// which accelerator, which files.
type Plan struct {
	QEMU string      `json:"qemu"`
	VMM  qemu.Config `json:"vmm"`
	FDs  []FD        `json:"fds"`
	// System is set when the VM's processes run as Identity through the
	// pre-exec stage (a VM root started: a lease; a container's VMM).
	System bool `json:"system,omitempty"`
	// SharedIdentity says Identity is not the VM's alone (a container's
	// process.user, a namespace's root): no per-uid cap on processes.
	SharedIdentity bool              `json:"sharedIdentity,omitempty"`
	Identity       identity.Identity `json:"identity"`
	// Overlays are the files hutch made for this VM and removes with it.
	Overlays []Overlay `json:"overlays,omitempty"`
	// Install is set while a --cdrom VM has not yet shut down or
	// rebooted: the CD boots first and a reboot ends QEMU.
	Install bool `json:"install,omitempty"`
	// UEFI is the firmware of a --firmware uefi VM; nil for the BIOS.
	UEFI *UEFI `json:"uefi,omitempty"`
	// Blanks are the empty disks hutch made for this VM.
	Blanks []Blank `json:"blanks,omitempty"`
	// Disks are the resolved chains, as QEMU's argv pins them.
	Disks []PlannedDisk `json:"disks,omitempty"`
	// Passt is the network helper the supervisor starts before QEMU.
	Passt *Helper `json:"passt,omitempty"`
	// Shares is the file server of a VM with -v shares.
	Shares *virtiofs.Server `json:"shares,omitempty"`
	// BridgeHelper opens the tap of a bridged VM; Args[0] is the bridge.
	BridgeHelper *Helper `json:"bridgeHelper,omitempty"`
	RunDir       string  `json:"runDir"`
	// Seed is the cloud-init seed image hutch made for this VM.
	Seed string `json:"seed,omitempty"`
	// cloud is the seed's content, made once the run is checked.
	cloud *cloudPlan
	// Accel is the accelerator chosen and why.
	Accel accel.Decision `json:"accel"`
}

// Helper is a process the supervisor runs beside QEMU.
type Helper struct {
	Binary string   `json:"binary"`
	Args   []string `json:"args"`
	Socket string   `json:"socket,omitempty"`
}

// Overlay is a qcow2 file over a base image that is never written.
type Overlay struct {
	Path       string `json:"path"`
	Base       string `json:"base"`
	BaseFormat string `json:"baseFormat"`
	BaseSize   uint64 `json:"baseSize"`
	// Size is the overlay's own size: the base's, or more (--disk-size).
	Size uint64 `json:"size"`
}

// UEFI is OVMF's code and the VM's own copy of its variable store, made
// from Template at create and kept with the VM (boot entries live there).
type UEFI struct {
	Code     string `json:"code"`
	Template string `json:"template"`
	Vars     string `json:"vars"`
}

// Blank is an empty disk hutch makes for the VM (--disk size=).
type Blank struct {
	Path   string `json:"path"`
	Format string `json:"format"`
	Size   uint64 `json:"size"`
}

// PlannedDisk is one drive: where it came from (IMAGE or --disk) and every
// file of its chain, top first, with the format hutch fixed for each.
type PlannedDisk struct {
	Source   string       `json:"source"`
	Chain    []disk.Layer `json:"chain"`
	ReadOnly bool         `json:"readOnly,omitempty"`
}

// Record is what hutch keeps about one VM, in its data dir.
type Record struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Spec    Spec      `json:"spec"`
	Plan    Plan      `json:"plan"`
	Status  Status    `json:"status"`
}

// Status is written by the supervisor as the VM moves through its life.
// State is never trusted alone: a running record whose supervisor is gone
// is reported stopped.
type Status struct {
	State string `json:"state"`
	// Creator is the command that made the record; a VM still "created"
	// whose creator is gone never started.
	Creator    store.Proc `json:"creator,omitzero"`
	Supervisor store.Proc `json:"supervisor"`
	VMM        store.Proc `json:"vmm"`
	Passt      store.Proc `json:"passt,omitzero"`
	FS         store.Proc `json:"fs,omitzero"`
	// NetworkError says why the VM lost its network while it ran.
	NetworkError  string    `json:"networkError,omitempty"`
	Started       time.Time `json:"started,omitzero"`
	Finished      time.Time `json:"finished,omitzero"`
	ExitCode      *int      `json:"exitCode,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	StopRequested bool      `json:"stopRequested,omitempty"`
	// Defined is set for a VM made by create: it stays "created" until
	// started, where a run whose command died shows "never started".
	Defined bool `json:"defined,omitempty"`
	// KillRequested is set by hutch kill (and rm -f): no restart follows.
	KillRequested bool `json:"killRequested,omitempty"`
	// Restarts counts the times the restart policy started QEMU again.
	Restarts int `json:"restarts,omitempty"`
	// StopForced is set when stop gave up on the guest and ended QEMU.
	StopForced bool `json:"stopForced,omitempty"`
}

// View is the public face of a VM, printed by inspect and ps.
type View struct {
	Name  string `json:"name"`
	State string `json:"state"`
	Pid   int    `json:"pid"`
	// SupervisorPid is hutch's own process beside the VM, 0 when stopped.
	SupervisorPid int    `json:"supervisorPid"`
	UID           int    `json:"uid"`
	GID           int    `json:"gid"`
	Groups        []int  `json:"groups"`
	RuntimeDir    string `json:"runtimeDir"`
	Accel         string `json:"accel"`
	// AccelReason says why Accel was chosen (a TCG fallback's cause).
	AccelReason string `json:"accelReason,omitempty"`
	Machine     string `json:"machine"`
	CPUs        int    `json:"cpus"`
	MemoryMiB   int    `json:"memoryMiB"`
	Network     string `json:"network"`
	Bridge      string `json:"bridge,omitempty"`
	// NetworkError is set when the network helper died under a running VM.
	NetworkError string `json:"networkError,omitempty"`
	// PasstPid is the VM's passt process, 0 when none runs.
	PasstPid int                `json:"passtPid,omitempty"`
	Ports    []netstack.Forward `json:"ports"`
	Image    string             `json:"image,omitempty"`
	Kernel   string             `json:"kernel,omitempty"`
	// Disks are the drives and their resolved chains.
	Disks []PlannedDisk `json:"disks"`
	// SSH is the login hutch ssh uses; absent for a VM run without --ssh.
	SSH      *SSHAccess `json:"ssh,omitempty"`
	Created  time.Time  `json:"created"`
	Started  *time.Time `json:"started,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
	ExitCode *int       `json:"exitCode,omitempty"`
	Reason   string     `json:"reason,omitempty"`
	// GuestIP is the guest's address on its user-mode network (what its
	// DHCP client is given); empty on a bridge or with no network.
	GuestIP string `json:"guestIP,omitempty"`
	// Warning is something about the VM a user should look at.
	Warning string `json:"warning,omitempty"`
	// Restart is the restart policy and Restarts how often it acted.
	Restart  string   `json:"restart,omitempty"`
	Restarts int      `json:"restarts,omitempty"`
	Command  []string `json:"command"`
	// Descriptors are what QEMU inherits, in order from fd 3.
	Descriptors []FD `json:"descriptors"`
	// Shares are the -v directories, and FSPid their virtiofsd.
	Shares []Volume `json:"shares"`
	FSPid  int      `json:"fsPid,omitempty"`
}

var descriptorRE = regexp.MustCompile(`/dev/fdset/([0-9]+)|/proc/self/fd/([0-9]+)`)

// NameDescriptors rewrites QEMU's words about the descriptors it was
// given (/dev/fdset/N, /proc/self/fd/N) into the files they are, so an
// error names what the user gave.
func (p Plan) NameDescriptors(msg string) string {
	return descriptorRE.ReplaceAllStringFunc(msg, func(m string) string {
		sub := descriptorRE.FindStringSubmatch(m)
		if sub[1] != "" {
			id, _ := strconv.Atoi(sub[1])
			for _, set := range p.VMM.FDSets {
				if set.ID == id && len(set.FDs) > 0 {
					if path := p.fdPath(set.FDs[0]); path != "" {
						return path
					}
				}
			}
			return m
		}
		fd, _ := strconv.Atoi(sub[2])
		if path := p.fdPath(fd); path != "" {
			return path
		}
		return m
	})
}

// fdPath is the file behind QEMU's descriptor fd ("" for a socket).
func (p Plan) fdPath(fd int) string {
	if i := fd - 3; i >= 0 && i < len(p.FDs) {
		return p.FDs[i].Path
	}
	return ""
}

// paths are the VM's files: its sockets where its supervisor made them
// (the runtime dir recorded at start), not under whatever
// $XDG_RUNTIME_DIR the caller has now; a logout may have wiped that.
func (r Record) paths(l store.Layout) store.Paths {
	p := l.VM(r.Name)
	if r.Plan.RunDir != "" {
		p.Run = r.Plan.RunDir
	}
	return p
}

// EndInstall moves a --cdrom VM past its install phase: the disk boots
// before the CD, and a guest reboot is a reboot again. It reports
// whether there was a phase to end.
func (p *Plan) EndInstall() bool {
	if !p.Install {
		return false
	}
	p.Install, p.VMM.NoReboot = false, false
	for i := range p.VMM.Drives {
		switch d := &p.VMM.Drives[i]; {
		case d.CDROM:
			d.BootOrder = 2
		case d.BootOrder == 2:
			d.BootOrder = 1
		}
	}
	return true
}

// live is the record's status checked against the process table.
func (r Record) live() Status {
	s := r.Status
	if s.State == StateRunning && s.Passt.Pid != 0 && s.NetworkError == "" && !s.Passt.Alive() {
		s.NetworkError = "passt is not running: the vm has no network"
	}
	if s.State == StateCreated && !s.Defined && !s.Creator.Alive() && !s.Supervisor.Alive() {
		s.State = StateStopped
		s.Reason = "never started: hutch run ended before the vm did"
	}
	if s.State == StateRunning && !s.Supervisor.Alive() {
		s.State = StateStopped
		if s.VMM.Alive() {
			s.Reason = "supervisor died; the VMM is orphaned (hutch rm -f cleans it up)"
		} else {
			s.Reason = "supervisor died unexpectedly"
		}
	}
	return s
}

func (r Record) view() View {
	s := r.live()
	v := View{
		Name: r.Name, State: s.State, UID: r.Plan.Identity.UID, GID: r.Plan.Identity.GID,
		Groups: r.Plan.Identity.Groups, RuntimeDir: r.Plan.RunDir, Accel: r.Plan.VMM.Accel, AccelReason: r.Plan.Accel.Reason,
		Machine: r.Plan.VMM.Machine, CPUs: r.Spec.CPUs, MemoryMiB: r.Spec.MemoryMiB,
		Network: r.Spec.Network, Bridge: r.Spec.Bridge, Ports: r.Spec.Ports, Image: r.Spec.Image, Kernel: r.Spec.Kernel,
		SSH: r.Spec.SSH, Created: r.Created, Reason: s.Reason, Command: r.Plan.VMM.Argv(r.Plan.QEMU), Descriptors: r.Plan.FDs,
		Disks: r.Plan.Disks, Restart: r.Spec.Restart, Restarts: s.Restarts, Shares: r.Spec.Volumes,
	}
	if v.Shares == nil {
		v.Shares = []Volume{}
	}
	switch r.Spec.Network {
	case NetSlirp:
		v.GuestIP = netstack.SlirpGuestIP
	case NetPasst:
		v.GuestIP = netstack.PasstGuestIP()
	}
	if v.Disks == nil {
		v.Disks = []PlannedDisk{}
	}
	if v.Groups == nil {
		v.Groups = []int{}
	}
	if v.Ports == nil {
		v.Ports = []netstack.Forward{}
	}
	if s.State == StateRunning {
		v.Pid = s.VMM.Pid
		v.SupervisorPid = s.Supervisor.Pid
		v.NetworkError = s.NetworkError
		if s.Passt.Alive() {
			v.PasstPid = s.Passt.Pid
		}
		if s.FS.Alive() {
			v.FSPid = s.FS.Pid
		}
	}
	if !s.Started.IsZero() {
		v.Started = &s.Started
	}
	if s.State == StateStopped {
		if !s.Finished.IsZero() {
			v.Finished = &s.Finished
		}
		v.ExitCode = s.ExitCode
		if v.ExitCode == nil {
			unknown := -1
			v.ExitCode = &unknown
		}
	}
	return v
}
