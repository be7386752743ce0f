// Package agent is hutch-agent, the guest's PID 1 in OCI mode, and the
// protocol the host speaks to it over one virtio-serial port.
//
// The port is a byte stream, so everything on it is a frame: a type, the
// id of the container process it concerns (0 is the container's own
// process, exec-ed processes get later ids) and a payload. Control frames
// carry JSON; data frames carry raw bytes.
package agent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// PortName is the virtio-serial port the agent opens: the guest finds it
// under /sys/class/virtio-ports/*/name.
const PortName = "hutch.agent"

// Type says what a frame carries.
type Type uint8

const (
	// Host to guest.
	TypeSetup  Type = iota + 1 // Setup: once, before anything else
	TypeStart                  // Process: start a process with the frame's id
	TypeStdin                  // bytes for the process's stdin
	TypeClose                  // the process's stdin reached EOF
	TypeSignal                 // Signal
	TypeResize                 // Size: the process's terminal changed size
	TypeRemove                 // the container whose process has the frame's id is deleted
	TypeStats                  // what the container of the frame's id uses: Stats answers
	TypeUpdate                 // Resources: new limits for the container of the frame's id

	// Guest to host.
	TypeReady   // the agent is up and waits for Setup
	TypeSetUp   // Setup applied; Error instead if it failed
	TypeStarted // Started
	TypeStdout  // bytes the process wrote to stdout (or its terminal)
	TypeStderr  // bytes the process wrote to stderr
	TypeExit    // Exit
	TypeError   // Error: a request for the frame's id failed
	TypePorts   // Ports: what the container listens on now
	TypeUsage   // Stats, the answer to TypeStats; Error instead if it failed
	TypeUpdated // Resources applied; Error instead if they were not
)

// Types are numbered in order: one added to the host's list shifts the
// guest's, which host and agent always agree on (they ship together).

// MaxPayload bounds a frame so a corrupt length cannot make either side
// allocate without limit.
const MaxPayload = 1 << 20

// Frame is one message.
type Frame struct {
	Type    Type
	ID      uint32
	Payload []byte
}

// Setup is what the guest needs before the container's process starts.
type Setup struct {
	Hostname string `json:"hostname,omitempty"`
	// Rootfs is the guest block device holding the container's root
	// filesystem, and whether to mount it read-only.
	Rootfs string `json:"rootfs"`
	// Shared says the rootfs and the Mounts with Shared set come from the
	// host through virtio-fs (the tree virtiofs.Tag names), not a disk.
	Shared bool `json:"shared,omitempty"`
	// SharedRoot is the rootfs's path in the shared tree: SharedRootfs for
	// the first container, a directory of the pod's for a later one.
	SharedRoot     string  `json:"sharedRoot,omitempty"`
	RootfsReadonly bool    `json:"rootfsReadonly,omitempty"`
	Mounts         []Mount `json:"mounts,omitempty"`
	// Files are small files of the host (bind mounts of resolv.conf, hosts,
	// hostname...) copied into the guest at Setup; writes stay in the guest.
	Files   []File            `json:"files,omitempty"`
	Network Network           `json:"network"`
	Devices []Device          `json:"devices,omitempty"`
	Sysctl  map[string]string `json:"sysctl,omitempty"`
	// Command and Env name the container's executable, found at setup as
	// runc's create finds it, so a missing one fails create, not start.
	Command string   `json:"command,omitempty"`
	Env     []string `json:"env,omitempty"`
	// Member says the container joins a pod whose first container set the
	// guest up: its network, hostname and sysctls are that one's.
	Member bool `json:"member,omitempty"`
	// SharePIDs makes a pod member's processes members of the sandbox's
	// PID namespace, as a configuration that joins the sandbox's asks.
	SharePIDs bool `json:"sharePids,omitempty"`
	// NewPIDNamespace makes the container's process the first of a PID
	// namespace of its own, as the spec's "pid" namespace asks; processes
	// exec-ed later join it.
	NewPIDNamespace bool `json:"newPidNamespace,omitempty"`
}

// Mount is an OCI mount the guest performs inside the container's root.
type Mount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type,omitempty"`
	Source      string   `json:"source,omitempty"`
	Options     []string `json:"options,omitempty"`
	// Shared is the bind mount's entry in the shared tree.
	Shared string `json:"shared,omitempty"`
}

// File is a copy of a host file bind-mounted into the container.
type File struct {
	Destination string `json:"destination"`
	Mode        uint32 `json:"mode"`
	Data        []byte `json:"data"`
	ReadOnly    bool   `json:"readOnly,omitempty"`
}

// Device is an OCI device node to create in the container's /dev.
type Device struct {
	Path  string `json:"path"`
	Type  string `json:"type"` // c, b, u or p
	Major int64  `json:"major"`
	Minor int64  `json:"minor"`
	Mode  uint32 `json:"mode"`
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
}

// Network is the guest's one interface on QEMU's user-mode network.
type Network struct {
	Enabled bool   `json:"enabled"`
	Address string `json:"address,omitempty"` // CIDR
	Gateway string `json:"gateway,omitempty"`
	DNS     string `json:"dns,omitempty"`
}

// Process is an OCI process to start.
type Process struct {
	Args           []string `json:"args"`
	Env            []string `json:"env,omitempty"`
	Cwd            string   `json:"cwd"`
	UID            uint32   `json:"uid"`
	GID            uint32   `json:"gid"`
	AdditionalGids []uint32 `json:"additionalGids,omitempty"`
	Terminal       bool     `json:"terminal,omitempty"`
	Rows           uint16   `json:"rows,omitempty"`
	Cols           uint16   `json:"cols,omitempty"`
	Rlimits        []Rlimit `json:"rlimits,omitempty"`
	NoNewPrivs     bool     `json:"noNewPrivileges,omitempty"`
	Umask          *uint32  `json:"umask,omitempty"`
	// Capabilities are the OCI capability sets by name (CAP_CHOWN...);
	// nil leaves the process the capabilities uid 0 has, as runc does.
	Capabilities *Capabilities `json:"capabilities,omitempty"`
	// Container is the id of the own process of the container a later
	// process (an exec) joins: 0 for the first container.
	Container uint32 `json:"container,omitempty"`
}

// Capabilities are a process's five capability sets, by name.
type Capabilities struct {
	Bounding    []string `json:"bounding,omitempty"`
	Effective   []string `json:"effective,omitempty"`
	Inheritable []string `json:"inheritable,omitempty"`
	Permitted   []string `json:"permitted,omitempty"`
	Ambient     []string `json:"ambient,omitempty"`
}

// Rlimit is one OCI rlimit, by its name (RLIMIT_NOFILE...).
type Rlimit struct {
	Type string `json:"type"`
	Hard uint64 `json:"hard"`
	Soft uint64 `json:"soft"`
}

// Started says a process runs, with its pid in the guest.
type Started struct {
	Pid int `json:"pid"`
}

// Signal asks for a signal to the process (or, with All, to every
// process of the container).
type Signal struct {
	Signal int  `json:"signal"`
	All    bool `json:"all,omitempty"`
}

// Size is a terminal size.
type Size struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Exit is how a process ended: Signal is non-zero if a signal killed it.
type Exit struct {
	Code   int `json:"code"`
	Signal int `json:"signal,omitempty"`
}

// Status is the exit status a shell would report: 128+N for signal N.
func (e Exit) Status() int {
	if e.Signal != 0 {
		return 128 + e.Signal
	}
	return e.Code
}

// Stats is what a container uses in the guest: the guest's memory (the VM
// is the container's), its CPU time, and the container's processes.
type Stats struct {
	MemoryUsage uint64 `json:"memoryUsage"` // bytes: total less available
	MemoryLimit uint64 `json:"memoryLimit"` // bytes: the guest's total
	CPUUser     uint64 `json:"cpuUser"`     // nanoseconds
	CPUKernel   uint64 `json:"cpuKernel"`   // nanoseconds
	Pids        int    `json:"pids"`
}

// Resources are the limits that can change while a container runs, in
// its cgroup in the guest; nil leaves one as it is.
type Resources struct {
	MemoryMax *int64  `json:"memoryMax,omitempty"` // bytes; -1 for none
	PidsMax   *int64  `json:"pidsMax,omitempty"`   // -1 for none
	CPUQuota  *int64  `json:"cpuQuota,omitempty"`  // µs per CPUPeriod; -1 for none
	CPUPeriod *uint64 `json:"cpuPeriod,omitempty"` // µs
}

// Error is a failure the guest reports for a request.
type Error struct {
	Message string `json:"message"`
}

// Ports are the TCP ports something in the guest listens on, and the UDP
// ports something has bound without a peer (a server).
type Ports struct {
	TCP []int `json:"tcp"`
	UDP []int `json:"udp,omitempty"`
}

// Conn reads and writes frames on a stream. Writes are serialised, so any
// goroutine may send; one goroutine reads.
type Conn struct {
	r  io.Reader
	w  io.Writer
	mu sync.Mutex
}

// NewConn wraps a stream.
func NewConn(rw io.ReadWriter) *Conn { return &Conn{r: rw, w: rw} }

// Send writes one frame.
func (c *Conn) Send(t Type, id uint32, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("frame of %d bytes is over the %d limit", len(payload), MaxPayload)
	}
	b := make([]byte, 9+len(payload))
	b[0] = byte(t)
	binary.BigEndian.PutUint32(b[1:], id)
	binary.BigEndian.PutUint32(b[5:], uint32(len(payload)))
	copy(b[9:], payload)
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.w.Write(b)
	return err
}

// SendJSON writes one frame carrying v as JSON.
func (c *Conn) SendJSON(t Type, id uint32, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Send(t, id, b)
}

// Recv reads one frame.
func (c *Conn) Recv() (Frame, error) {
	var h [9]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(h[5:])
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("frame of %d bytes is over the %d limit: the stream is corrupt", n, MaxPayload)
	}
	f := Frame{Type: Type(h[0]), ID: binary.BigEndian.Uint32(h[1:])}
	if n > 0 {
		f.Payload = make([]byte, n)
		if _, err := io.ReadFull(c.r, f.Payload); err != nil {
			return Frame{}, fmt.Errorf("read frame payload: %w", err)
		}
	}
	return f, nil
}

// Decode unmarshals a control frame's payload.
func (f Frame) Decode(v any) error {
	if err := json.Unmarshal(f.Payload, v); err != nil {
		return fmt.Errorf("decode frame of type %d: %w", f.Type, err)
	}
	return nil
}

// ErrClosed is returned when the peer went away.
var ErrClosed = errors.New("agent connection closed")
