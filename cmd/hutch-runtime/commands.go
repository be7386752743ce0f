package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/agent"
	"github.com/hutch-vm/hutch/internal/oci"
)

func specVersion() string { return specs.Version }

type createFlags struct {
	bundle, pidFile, consoleSocket string
	noPivot, noNewKeyring          bool
	preserveFDs                    int
}

func (f *createFlags) add(c *cobra.Command) {
	c.Flags().StringVarP(&f.bundle, "bundle", "b", ".", "path to the bundle (the directory holding config.json)")
	c.Flags().StringVar(&f.pidFile, "pid-file", "", "file to write the container's pid to")
	c.Flags().StringVar(&f.consoleSocket, "console-socket", "", "unix socket that receives the terminal's master")
	c.Flags().BoolVar(&f.noPivot, "no-pivot", false, "accepted: the guest switches root itself")
	c.Flags().BoolVar(&f.noNewKeyring, "no-new-keyring", false, "accepted: the guest kernel's keyring is the container's own")
	c.Flags().IntVar(&f.preserveFDs, "preserve-fds", 0, "accepted; descriptors beyond stdio cannot cross into a VM")
}

func (f *createFlags) options(id string) oci.CreateOptions {
	return oci.CreateOptions{ID: id, Bundle: f.bundle, PidFile: f.pidFile, ConsoleSocket: f.consoleSocket,
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
}

func createCmd(g *globals) *cobra.Command {
	var f createFlags
	c := &cobra.Command{Use: "create [flags] ID", Short: "Create a container (its VM boots; the process waits for start)",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			_, err := g.runtime().Create(f.options(args[0]))
			return err
		}}
	f.add(c)
	return c
}

func runCmd(g *globals) *cobra.Command {
	var f createFlags
	var detach bool
	c := &cobra.Command{Use: "run [flags] ID", Short: "Create and start a container, and wait for it unless detached",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			rt := g.runtime()
			shim, err := rt.Create(f.options(args[0]))
			if err != nil {
				return err
			}
			if err := rt.Start(args[0]); err != nil {
				rt.Delete(args[0], true)
				return err
			}
			if detach {
				return nil
			}
			shim.Wait()
			code := shim.ProcessState.ExitCode()
			if ws, ok := shim.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
			rt.Delete(args[0], true)
			if code != 0 {
				return exitError{code}
			}
			return nil
		}}
	f.add(c)
	c.Flags().BoolVarP(&detach, "detach", "d", false, "return once the container runs")
	return c
}

func startCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "start ID", Short: "Start a created container's process", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error { return g.runtime().Start(args[0]) }}
}

func stateCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "state ID", Short: "Print a container's state (runtime-spec JSON)", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			st, err := g.runtime().State(args[0])
			if err != nil {
				return err
			}
			b, _ := json.MarshalIndent(st, "", "  ")
			fmt.Println(string(b))
			return nil
		}}
}

// parseSignal accepts what runc kill does: a number, or a name with or
// without SIG, in any case.
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("invalid signal %q: numbers run from 1 to 64", s)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q: use a number or a name such as TERM or SIGKILL", s)
}

func killCmd(g *globals) *cobra.Command {
	var all bool
	c := &cobra.Command{Use: "kill [--all] ID [SIGNAL]", Short: "Send a signal (default SIGTERM) to a container",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(_ *cobra.Command, args []string) error {
			sig := syscall.SIGTERM
			if len(args) == 2 {
				var err error
				if sig, err = parseSignal(args[1]); err != nil {
					return err
				}
			}
			return g.runtime().Kill(args[0], sig, all)
		}}
	c.Flags().BoolVarP(&all, "all", "a", false, "send the signal to every process of the container")
	return c
}

func deleteCmd(g *globals) *cobra.Command {
	var force bool
	c := &cobra.Command{Use: "delete [--force] ID", Short: "Delete a stopped (with --force, any) container", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error { return g.runtime().Delete(args[0], force) }}
	c.Flags().BoolVarP(&force, "force", "f", false, "kill the container first if it runs")
	return c
}

func execCmd(g *globals) *cobra.Command {
	var o oci.ExecOptions
	var processFile, cwd, user string
	var env []string
	var tty bool
	c := &cobra.Command{Use: "exec [flags] ID [COMMAND [ARG...]]", Short: "Run another process in a running container",
		Args: cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			o.ID = args[0]
			var p specs.Process
			if processFile != "" {
				b, err := os.ReadFile(processFile)
				if err != nil {
					return fmt.Errorf("read --process: %w", err)
				}
				if err := json.Unmarshal(b, &p); err != nil {
					return fmt.Errorf("parse --process %s: %w", processFile, err)
				}
			} else {
				if len(args) < 2 {
					return fmt.Errorf("exec needs a command, or --process FILE")
				}
				base, err := g.runtime().Process(o.ID)
				if err != nil {
					return err
				}
				p = *base
				p.Args = args[1:]
				p.Env = append(p.Env, env...)
				p.Terminal = tty
				if cwd != "" {
					p.Cwd = cwd
				}
				if user != "" {
					uid, gid, err := parseUser(user)
					if err != nil {
						return err
					}
					p.User = specs.User{UID: uid, GID: gid}
				}
			}
			if p.Cwd == "" {
				p.Cwd = "/"
			}
			o.Process = processOf(&p)
			code, err := g.runtime().Exec(o)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		}}
	fl := c.Flags()
	fl.SetInterspersed(false)
	fl.StringVarP(&processFile, "process", "p", "", "JSON file of an OCI process")
	fl.BoolVarP(&tty, "tty", "t", false, "allocate a terminal")
	fl.StringVar(&o.ConsoleSocket, "console-socket", "", "unix socket that receives the terminal's master")
	fl.StringVar(&o.PidFile, "pid-file", "", "file to write the process's pid to")
	fl.BoolVarP(&o.Detach, "detach", "d", false, "return once the process runs")
	fl.StringArrayVarP(&env, "env", "e", nil, "set an environment variable (NAME=VALUE)")
	fl.StringVar(&cwd, "cwd", "", "working directory in the container")
	fl.StringVarP(&user, "user", "u", "", "UID[:GID] to run as")
	return c
}

func parseUser(s string) (uid, gid uint32, err error) {
	u, gs, _ := strings.Cut(s, ":")
	n, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("--user %q: give numeric UID[:GID]", s)
	}
	uid = uint32(n)
	if gs != "" {
		m, err := strconv.ParseUint(gs, 10, 32)
		if err != nil {
			return 0, 0, fmt.Errorf("--user %q: give numeric UID[:GID]", s)
		}
		gid = uint32(m)
	}
	return uid, gid, nil
}

func processOf(p *specs.Process) agent.Process { return oci.ProcessOf(p) }

func pauseCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "pause ID", Short: "Freeze a running container (its whole VM)", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error { return g.runtime().Pause(args[0]) }}
}

func resumeCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "resume ID", Short: "Thaw a paused container", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error { return g.runtime().Resume(args[0]) }}
}

func psCmd(g *globals) *cobra.Command {
	var format string
	c := &cobra.Command{Use: "ps [--format table|json] ID [PS_ARGS...]",
		Short: "List the container's host processes (its shim, VMM and helpers)", Args: cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			switch format {
			case "json":
				pids, err := g.runtime().Pids(args[0])
				if err != nil {
					return err
				}
				return json.NewEncoder(os.Stdout).Encode(pids)
			case "table":
				return g.runtime().PS(args[0], args[1:], os.Stdout)
			}
			return fmt.Errorf("invalid format %q: use table or json", format)
		}}
	c.Flags().StringVarP(&format, "format", "f", "table", "table (ps(1)'s lines) or json (the pids)")
	c.Flags().SetInterspersed(false) // what follows the id is ps(1)'s
	return c
}

func eventsCmd(g *globals) *cobra.Command {
	var stats bool
	var interval time.Duration
	c := &cobra.Command{Use: "events [--stats] [--interval D] ID", Short: "Print the container's usage, read in its guest (once with --stats)",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			enc := json.NewEncoder(os.Stdout)
			for {
				ev, err := g.runtime().Stats(args[0])
				if err != nil {
					return err
				}
				if err := enc.Encode(ev); err != nil || stats {
					return err
				}
				time.Sleep(interval)
			}
		}}
	c.Flags().BoolVar(&stats, "stats", false, "print the usage once and exit")
	c.Flags().DurationVar(&interval, "interval", 5*time.Second, "time between two lines")
	return c
}

func updateCmd(g *globals) *cobra.Command {
	var resources string
	var memory, pids, quota int64
	var period uint64
	c := &cobra.Command{Use: "update [flags] ID", Short: "Change a running container's memory, pids or CPU limits (its cgroup in the guest)",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res specs.LinuxResources
			if resources != "" {
				in := os.Stdin
				if resources != "-" {
					f, err := os.Open(resources)
					if err != nil {
						return err
					}
					defer f.Close()
					in = f
				}
				if err := json.NewDecoder(in).Decode(&res); err != nil {
					return fmt.Errorf("read the resources (runtime-spec linux.resources JSON): %w", err)
				}
			}
			fl := cmd.Flags()
			if fl.Changed("memory") {
				res.Memory = &specs.LinuxMemory{Limit: &memory}
			}
			if fl.Changed("pids-limit") {
				res.Pids = &specs.LinuxPids{Limit: &pids}
			}
			if fl.Changed("cpu-quota") || fl.Changed("cpu-period") {
				if res.CPU == nil {
					res.CPU = &specs.LinuxCPU{}
				}
				if fl.Changed("cpu-quota") {
					res.CPU.Quota = &quota
				}
				if fl.Changed("cpu-period") {
					res.CPU.Period = &period
				}
			}
			return g.runtime().Update(args[0], res)
		}}
	c.Flags().StringVarP(&resources, "resources", "r", "", "runtime-spec linux.resources JSON file, - for stdin")
	c.Flags().Int64Var(&memory, "memory", 0, "memory limit in bytes (-1: none)")
	c.Flags().Int64Var(&pids, "pids-limit", 0, "most processes (0 or -1: none)")
	c.Flags().Int64Var(&quota, "cpu-quota", 0, "CPU time in µs per period (-1: none)")
	c.Flags().Uint64Var(&period, "cpu-period", 0, "CPU period in µs")
	return c
}

func featuresCmd() *cobra.Command {
	return &cobra.Command{Use: "features", Short: "Print what this runtime supports (runtime-spec features JSON)", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			b, _ := json.MarshalIndent(oci.Features(), "", "    ")
			fmt.Println(string(b))
			return nil
		}}
}

func listCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "list", Short: "List containers", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			recs, err := g.runtime().List()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tPID\tSTATUS\tBUNDLE\tCREATED")
			for _, r := range recs {
				pid := 0
				if st := r.Status(); st != "stopped" {
					pid = r.Shim.Pid
				}
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", r.ID, pid, r.Status(), r.Bundle, r.Created.Format("2006-01-02T15:04:05Z"))
			}
			return w.Flush()
		}}
}

func memberCmd(g *globals) *cobra.Command {
	var consoleSocket string
	c := &cobra.Command{Use: oci.MemberCommand + " ID", Hidden: true, Args: cobra.ExactArgs(1),
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(_ *cobra.Command, args []string) error {
			os.Exit(g.runtime().RunMember(args[0], consoleSocket, os.NewFile(3, "ready")))
			return nil
		}}
	c.Flags().StringVar(&consoleSocket, "console-socket", "", "")
	return c
}

func shimCmd(g *globals) *cobra.Command {
	var consoleSocket string
	var hostRoot bool
	c := &cobra.Command{Use: oci.ShimCommand + " ID", Hidden: true, Args: cobra.ExactArgs(1),
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(_ *cobra.Command, args []string) error {
			ready := os.NewFile(3, "ready")
			os.Exit(oci.RunShim(g.root, args[0], consoleSocket, hostRoot, ready))
			return nil
		}}
	c.Flags().StringVar(&consoleSocket, "console-socket", "", "")
	c.Flags().BoolVar(&hostRoot, "host-root", false, "")
	return c
}

func relayCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: oci.ExecCommand + " OPTIONS", Hidden: true, Args: cobra.ExactArgs(1),
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(_ *cobra.Command, args []string) error {
			var o oci.ExecOptions
			if err := json.Unmarshal([]byte(args[0]), &o); err != nil {
				return err
			}
			code, _ := g.runtime().RelayExec(o, os.NewFile(3, "ready"))
			os.Exit(code)
			return nil
		}}
}
