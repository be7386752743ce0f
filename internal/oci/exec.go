package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/hutch-vm/hutch/internal/agent"
	"github.com/hutch-vm/hutch/internal/console"
)

// dial connects to a container's shim.
func (r Runtime) dial(id string) (*net.UnixConn, error) {
	c, err := dialUnix("unixpacket", r.paths(id).Shim())
	if err != nil {
		return nil, fmt.Errorf("container %s: reach its shim: %w", id, err)
	}
	return c, nil
}

// ask sends one request to a container's shim and reads its reply.
func (r Runtime) ask(id string, req request) (reply, error) {
	c, err := r.dial(id)
	if err != nil {
		return reply{}, err
	}
	defer c.Close()
	b, _ := json.Marshal(req)
	if _, err := c.Write(b); err != nil {
		return reply{}, fmt.Errorf("container %s: %w", id, err)
	}
	return readReply(c)
}

func readReply(c *net.UnixConn) (reply, error) {
	buf := make([]byte, 1<<16)
	n, err := c.Read(buf)
	if err != nil {
		return reply{}, fmt.Errorf("read the shim's reply: %w", err)
	}
	var rep reply
	if err := json.Unmarshal(buf[:n], &rep); err != nil {
		return reply{}, fmt.Errorf("read the shim's reply: %w", err)
	}
	return rep, nil
}

// ExecOptions are runc exec's.
type ExecOptions struct {
	ID            string
	Process       agent.Process
	ConsoleSocket string
	PidFile       string
	Detach        bool
}

// ExecCommand is hutch-runtime's hidden verb for a detached exec's relay.
const ExecCommand = "_exec-relay"

// Exec runs one more process in a running container. Without Detach it
// returns the process's exit status; with it, a relay process (whose pid
// goes to PidFile) stands for the process until it ends.
func (r Runtime) Exec(o ExecOptions) (int, error) {
	rec, err := r.load(o.ID)
	if err != nil {
		return 1, err
	}
	if rec.Status() != specs.StateRunning {
		return 1, errors.New("cannot exec in a stopped container")
	}
	if o.Detach {
		return 0, r.execDetached(o)
	}
	return r.RelayExec(o, nil)
}

func (r Runtime) execDetached(o ExecOptions) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the hutch-runtime executable: %w", err)
	}
	b, _ := json.Marshal(o)
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	cmd := &exec.Cmd{Path: self, Args: []string{self, ExecCommand, "--root", r.Root, string(b)},
		ExtraFiles: []*os.File{readyW}, SysProcAttr: &syscall.SysProcAttr{Setsid: true}}
	if !o.Process.Terminal || o.ConsoleSocket == "" {
		// The process's stdio is exec's. With a terminal from the console
		// socket it is not, and the relay must not hold exec's open: an
		// engine reading exec's output to its end would wait for the process.
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("start the exec relay: %w", err)
	}
	msg := make([]byte, 4096)
	n, _ := readyR.Read(msg)
	if string(msg[:n]) != "ok" {
		cmd.Process.Kill()
		cmd.Wait()
		if n == 0 {
			return errors.New("the exec relay exited before the process started")
		}
		return errors.New(string(msg[:n]))
	}
	if o.PidFile != "" {
		return writePidFile(o.PidFile, cmd.Process.Pid)
	}
	return nil
}

// RelayExec hands the process's stdio to the shim, forwards signals and
// terminal sizes, and returns its exit status. ready, when set, hears
// "ok" once the process runs, or the error.
func (r Runtime) RelayExec(o ExecOptions, ready *os.File) (status int, err error) {
	target := o.ID
	if rec, err := r.load(o.ID); err == nil && rec.Sandbox != "" {
		// A pod member's processes are its sandbox shim's.
		target, o.Process.Container = rec.Sandbox, rec.Member
	}
	return r.relay(target, request{Op: "exec", Process: &o.Process}, o.Process.Terminal, o.ConsoleSocket, ready, nil)
}

// relay hands a process's stdio to the shim of container target with req,
// forwards signals and terminal sizes, and returns its exit status. ready,
// when set, hears "ok" once the shim has answered req (after created is
// told the answer), or the error.
func (r Runtime) relay(target string, req request, terminal bool, consoleSocket string, ready *os.File, created func(reply) error) (status int, err error) {
	defer func() {
		if ready != nil && err != nil {
			fmt.Fprint(ready, err)
			ready.Close()
		}
	}()
	var stdio []*os.File
	var tty *os.File
	if terminal {
		if consoleSocket != "" {
			master, slave, err := console.OpenPty("/dev/ptmx")
			if err != nil {
				return 1, fmt.Errorf("open a terminal: %w", err)
			}
			err = sendFD(consoleSocket, master)
			master.Close()
			if err != nil {
				slave.Close()
				return 1, err
			}
			defer slave.Close()
			unix.IoctlSetInt(int(slave.Fd()), unix.TIOCSCTTY, 0)
			term.MakeRaw(int(slave.Fd()))
			tty = slave
		} else {
			if !term.IsTerminal(int(os.Stdin.Fd())) {
				return 1, errors.New("--tty needs a terminal on stdin or a --console-socket")
			}
			old, err := term.MakeRaw(int(os.Stdin.Fd()))
			if err == nil {
				defer term.Restore(int(os.Stdin.Fd()), old)
			}
			tty = os.Stdin
		}
		stdio = []*os.File{tty}
	} else {
		stdio = []*os.File{os.Stdin, os.Stdout, os.Stderr}
	}
	c, err := r.dial(target)
	if err != nil {
		return 1, err
	}
	defer c.Close()
	fds := make([]int, len(stdio))
	for i, f := range stdio {
		fds[i] = int(f.Fd())
	}
	b, _ := json.Marshal(req)
	if _, _, err := c.WriteMsgUnix(b, unix.UnixRights(fds...), nil); err != nil {
		return 1, fmt.Errorf("container %s: %w", target, err)
	}
	rep, err := readReply(c)
	if err != nil {
		return 1, err
	}
	if rep.Error != "" {
		return 1, errors.New(rep.Error)
	}
	if created != nil {
		if err := created(rep); err != nil {
			return 1, err
		}
	}
	if ready != nil {
		fmt.Fprint(ready, "ok")
		ready.Close()
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs)
	defer signal.Stop(sigs)
	go func() {
		for sig := range sigs {
			var req request
			switch {
			case sig == unix.SIGWINCH:
				req = request{Op: "resize"}
			case ignored[sig]:
				continue
			default:
				req = request{Op: "signal", Signal: int(sig.(syscall.Signal))}
			}
			b, _ := json.Marshal(req)
			c.Write(b)
		}
	}()
	if tty != nil {
		b, _ := json.Marshal(request{Op: "resize"})
		c.Write(b)
	}
	for {
		rep, err := readReply(c)
		if err != nil {
			return 255, fmt.Errorf("container %s: lost the shim: %w", target, err)
		}
		if rep.Exit != nil {
			return *rep.Exit, nil
		}
	}
}
