//go:build linux

package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Stage is the argument that makes hutch-agent the stage every process of
// the container starts as, runc's "init" in a guest. The agent forks it,
// for the container's own process into a PID namespace of its own (whose
// first process it is), for an exec-ed one into that namespace. The first
// stage assembles the container's root at create (a /proc mounted then
// shows the container's namespace: procfs belongs to the PID namespace of
// its mounter) and waits; at start, as for an exec, the agent hands it the
// process and its stdio, and it enters the root, takes the process's
// identity and execs the command.
const Stage = "_stage"

// stageRequest is what the agent writes to the stage on stageRequestFD:
// Setup once for the container's own process, then Process.
type stageRequest struct {
	Root    string   `json:"root"`
	Setup   *Setup   `json:"setup,omitempty"`
	Process *Process `json:"process,omitempty"`
	// Cgroup is the container's group in the guest, which the stage joins.
	Cgroup string `json:"cgroup,omitempty"`
}

// stageReport is what the stage writes back on stageSocketFD: the outcome
// of a setup, or why a process failed to start. A start that succeeds
// reports nothing: the socket closes on exec.
type stageReport struct {
	Error    string `json:"error,omitempty"`
	NotFound bool   `json:"notFound,omitempty"`
}

// The stage's descriptors: requests from the agent, and a socket that
// carries the process's stdio to the stage and reports back.
const (
	stageRequestFD = 3
	stageSocketFD  = 4
)

// RunStage is the stage's main: it returns only by exec.
func RunStage() {
	sock := os.NewFile(stageSocketFD, "agent")
	err := stage(sock)
	if err == nil {
		os.Exit(0) // the agent went away before start
	}
	json.NewEncoder(sock).Encode(stageReport{Error: err.Error(), NotFound: errors.Is(err, errNotFound)})
	os.Exit(1)
}

func stage(sock *os.File) error {
	// exec runs from the thread that took the process's credentials,
	// capabilities and no_new_privs, which are per thread.
	runtime.LockOSThread()
	unix.CloseOnExec(stageRequestFD)
	unix.CloseOnExec(stageSocketFD)
	requests := json.NewDecoder(os.NewFile(stageRequestFD, "requests"))
	var req stageRequest
	if err := requests.Decode(&req); err != nil {
		return fmt.Errorf("read the request: %w", err)
	}
	if req.Cgroup != "" {
		// Before anything else: what the process starts is counted there.
		if err := os.WriteFile(filepath.Join(req.Cgroup, "cgroup.procs"), []byte("0"), 0); err != nil {
			return fmt.Errorf("join the container's cgroup: %w", err)
		}
	}
	if req.Setup != nil {
		if err := assemble(req.Root, *req.Setup); err != nil {
			return err
		}
	}
	if err := unix.Chroot(req.Root); err != nil {
		return fmt.Errorf("enter the container's root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("enter the container's root: %w", err)
	}
	if req.Setup != nil {
		if c := req.Setup.Command; c != "" {
			if _, err := lookPathIn("/", c, req.Setup.Env); err != nil {
				return err
			}
		}
		if err := json.NewEncoder(sock).Encode(stageReport{}); err != nil {
			return err
		}
		req = stageRequest{}
		if err := requests.Decode(&req); err != nil {
			return nil // deleted before start
		}
	}
	if req.Process == nil || len(req.Process.Args) == 0 {
		return errors.New("no process to start")
	}
	if err := takeStdio(sock, req.Process.Terminal); err != nil {
		return err
	}
	return execProcess(*req.Process)
}

// takeStdio receives the process's stdin, stdout and stderr from the
// agent and makes them 0, 1 and 2; a terminal becomes the controlling
// one of the stage's session.
func takeStdio(sock *os.File, terminal bool) error {
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(3*4))
	_, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, 0)
	if err != nil {
		return fmt.Errorf("receive the process's stdio: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("receive the process's stdio: %d messages, %v", len(msgs), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 3 {
		return fmt.Errorf("receive the process's stdio: %d descriptors, %v", len(fds), err)
	}
	for i, fd := range fds {
		if err := unix.Dup3(fd, i, 0); err != nil {
			return fmt.Errorf("stdio %d: %w", i, err)
		}
	}
	for _, fd := range fds {
		if fd > 2 {
			unix.Close(fd)
		}
	}
	if terminal {
		if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
			return fmt.Errorf("take the terminal: %w", err)
		}
	}
	return nil
}

// execProcess runs p's command in place of the stage, from the root it is
// in.
func execProcess(p Process) error {
	path, err := lookPathIn("/", p.Args[0], p.Env)
	if err != nil {
		return err
	}
	for _, r := range p.Rlimits {
		res, ok := rlimits[r.Type]
		if !ok {
			return fmt.Errorf("unknown rlimit %q", r.Type)
		}
		if err := unix.Setrlimit(res, &unix.Rlimit{Cur: r.Soft, Max: r.Hard}); err != nil {
			return fmt.Errorf("set %s to %d/%d: %w", r.Type, r.Soft, r.Hard, err)
		}
	}
	if p.Umask != nil {
		unix.Umask(int(*p.Umask))
	}
	if err := takeIdentity(p); err != nil {
		return err
	}
	if err := unix.Chdir(p.Cwd); err != nil {
		return fmt.Errorf("chdir to cwd (%q) set in config.json failed: %w", p.Cwd, err)
	}
	if err := syscall.Exec(path, p.Args, p.Env); err != nil {
		return fmt.Errorf("exec %q: %w", p.Args[0], err)
	}
	return nil
}

// takeIdentity gives the calling thread p's no_new_privs, capability sets,
// groups and ids, in the order runc uses: the bounding and inheritable
// sets first, then the ids, keeping the permitted set across the uid
// change only to raise the ambient set. The kernel then gives uid 0 the
// bounding set on exec, and any other uid its ambient set.
func takeIdentity(p Process) error {
	if p.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	var ambient []uintptr
	if c := p.Capabilities; c != nil {
		var err error
		if ambient, err = setCapabilities(*c); err != nil {
			return err
		}
	}
	if len(ambient) > 0 {
		if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("keep capabilities across the uid change: %w", err)
		}
	}
	// Raw calls: they change this thread only, the one that execs.
	groups := make([]uint32, len(p.AdditionalGids))
	copy(groups, p.AdditionalGids)
	var gp unsafe.Pointer
	if len(groups) > 0 {
		gp = unsafe.Pointer(&groups[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(gp), 0); e != 0 {
		return fmt.Errorf("set the additional groups %v: %w", p.AdditionalGids, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(p.GID), uintptr(p.GID), uintptr(p.GID)); e != 0 {
		return fmt.Errorf("set gid %d: %w", p.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(p.UID), uintptr(p.UID), uintptr(p.UID)); e != 0 {
		return fmt.Errorf("set uid %d: %w", p.UID, e)
	}
	if len(ambient) == 0 {
		return nil
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	for _, c := range ambient {
		data[c/32].Permitted |= 1 << (c % 32)
		data[c/32].Inheritable |= 1 << (c % 32)
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("set the capabilities to raise: %w", err)
	}
	for _, c := range ambient {
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, c, 0, 0); err != nil {
			return fmt.Errorf("raise %s: %w", capabilityName(int(c)), err)
		}
	}
	return nil
}
