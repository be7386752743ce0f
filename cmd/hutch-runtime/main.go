// hutch-runtime is a runc-compatible OCI runtime that runs each container
// inside a small VM whose VMM is never root. Engines call it as they call
// runc: create, start, state, kill, delete, run, exec, features.
package main

import (
	"context"
	"fmt"
	"github.com/hutch-vm/hutch/internal/virtiofs"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hutch-vm/hutch/internal/launch"
	"github.com/hutch-vm/hutch/internal/oci"
	"github.com/hutch-vm/hutch/internal/store"
)

// Set by the build (-ldflags -X).
var (
	version = "0.1.0"
	commit  = "unknown"
)

type globals struct {
	root, log, logFormat string
	debug, systemdCgroup bool
}

func (g *globals) runtime() oci.Runtime { return oci.Runtime{Root: g.root} }

// exitError carries a status out of a command without printing anything.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	// Hidden stages: they own their stdio and never print usage.
	if len(os.Args) > 1 && os.Args[1] == launch.StageCommand && len(os.Args) == 3 {
		err := launch.Stage(os.Args[2])
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if len(os.Args) == 3 && os.Args[1] == virtiofs.StageCommand {
		fmt.Fprintln(os.Stderr, virtiofs.Stage(os.Args[2]))
		os.Exit(1)
	}
	g := &globals{}
	root := &cobra.Command{
		Use:           "hutch-runtime",
		Short:         "An OCI runtime that runs each container in a VM",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return g.setupLog()
		},
	}
	root.SetVersionTemplate(fmt.Sprintf("hutch-runtime version %s\ncommit: %s\nspec: %s\n", version, commit, specVersion()))
	pf := root.PersistentFlags()
	pf.StringVar(&g.root, "root", store.DefaultRuntimeRoot(os.Geteuid() != 0 || launch.RootIsUser()), "directory for the state of containers")
	pf.StringVar(&g.log, "log", "", "log file (default: stderr)")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	pf.BoolVar(&g.debug, "debug", false, "log debug messages")
	pf.BoolVar(&g.systemdCgroup, "systemd-cgroup", false, "accepted for compatibility: the VM is the container's boundary")
	root.AddCommand(createCmd(g), startCmd(g), stateCmd(g), killCmd(g), deleteCmd(g), runCmd(g), execCmd(g),
		featuresCmd(), listCmd(g), pauseCmd(g), resumeCmd(g), psCmd(g), eventsCmd(g), updateCmd(g), shimCmd(g), memberCmd(g), relayCmd(g))
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return
	}
	if e, ok := err.(exitError); ok {
		os.Exit(e.code)
	}
	// Engines read the error from the log (containerd) or stderr (Podman).
	slog.Error(err.Error())
	if g.log != "" {
		fmt.Fprintln(os.Stderr, "hutch-runtime:", oneLine(err.Error()))
	}
	os.Exit(1)
}

// setupLog sends hutch-runtime's own messages where the engine asked, in
// runc's JSON shape ({"level","msg","time"}) when asked for json.
func (g *globals) setupLog() error {
	var w io.Writer = os.Stderr
	if g.log != "" {
		f, err := os.OpenFile(g.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("open log file %s: %w", g.log, err)
		}
		w = f
	}
	level := slog.LevelInfo
	if g.debug {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.LevelKey {
			a.Value = slog.StringValue(strings.ToLower(a.Value.String()))
		}
		return a
	}}
	switch g.logFormat {
	case "json":
		slog.SetDefault(slog.New(slog.NewJSONHandler(w, opts)))
	case "text", "":
		slog.SetDefault(slog.New(slog.NewTextHandler(w, opts)))
	default:
		return fmt.Errorf("unknown --log-format %q: use text or json", g.logFormat)
	}
	return nil
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
