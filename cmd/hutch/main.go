// Command hutch runs virtual machines without root.
package main

import (
	"errors"
	"fmt"
	"github.com/hutch-vm/hutch/internal/virtiofs"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/hutch-vm/hutch/internal/accel"
	"github.com/hutch-vm/hutch/internal/config"
	"github.com/hutch-vm/hutch/internal/guest"
	"github.com/hutch-vm/hutch/internal/identity"
	"github.com/hutch-vm/hutch/internal/image"
	"github.com/hutch-vm/hutch/internal/store"
	"github.com/hutch-vm/hutch/internal/vm"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// usageError is a mistake in how hutch was called; it exits 2.
type usageError struct{ error }

// exitError carries a VM's own exit code out of an attached run.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("vm exited with code %d", e.code) }

func main() {
	if guest.IsInit() {
		guest.RunInit() // the micro VM's init, inside the guest
	}
	if len(os.Args) == 3 && os.Args[1] == virtiofs.StageCommand {
		// A VM's file server, already in its own namespaces.
		fmt.Fprintln(os.Stderr, virtiofs.Stage(os.Args[2]))
		os.Exit(1)
	}
	root := &cobra.Command{
		Use:           "hutch",
		Short:         "Run virtual machines without root",
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see hutch %s --help)", err, c.Name())}
	})
	root.AddCommand(runCmd(), createCmd(), startCmd(), restartCmd(), setCmd(), snapshotCmd(), vncCmd(), generateCmd(), psCmd(), inspectCmd(), logsCmd(), consoleCmd(), stopCmd(),
		killCmd(), rmCmd(), portCmd(), checkCmd(), versionCmd(), superviseCmd(), execCmd(),
		sshCmd(), sshConfigCmd(), cpCmd(), imagesCmd(), imageCmd())
	err := root.Execute()
	if err == nil {
		return
	}
	var ee exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	fmt.Fprintf(os.Stderr, "hutch: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) || vm.IsInput(err) || image.IsInput(err) || isCobraUsage(err) {
		os.Exit(2)
	}
	os.Exit(1)
}

// isCobraUsage recognises cobra's own complaints (unknown command), which
// it returns as plain errors.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand"} {
		if len(msg) >= len(p) && msg[:len(p)] == p {
			return true
		}
	}
	return false
}

// args wraps a cobra argument check so its failure exits 2.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(c *cobra.Command, a []string) error {
		if err := check(c, a); err != nil {
			return usageError{fmt.Errorf("%s: %w (usage: hutch %s)", c.Name(), err, c.Use)}
		}
		return nil
	}
}

// newEngine sets hutch up for who runs it: an ordinary user gets session
// VMs under the XDG dirs; root gets system mode, where every VMM runs as an
// identity leased for it.
func newEngine() (*vm.Engine, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the hutch executable: %w", err)
	}
	path, err := config.PathFor(os.Geteuid())
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	e := &vm.Engine{Self: self, KVMDevice: accel.Device, Accel: cfg.Accel, ConfigPath: path, Notice: os.Stderr}
	if os.Geteuid() != 0 {
		e.Layout, err = store.SessionLayout()
		return e, err
	}
	if e.Layout, err = store.SystemLayout(); err != nil {
		return nil, err
	}
	e.System = true
	e.Ledger = &identity.Ledger{Path: e.Layout.Leases(), First: cfg.Leases.First, Count: cfg.Leases.Count}
	return e, nil
}

func init() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

// checkFormat accepts the output formats of the listing verbs.
func checkFormat(format string) error {
	if format != "table" && format != "json" {
		return usageError{fmt.Errorf("unknown --format %q: use table or json", format)}
	}
	return nil
}
