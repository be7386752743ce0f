package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/launch"
	"github.com/hutch-vm/hutch/internal/store"
	"github.com/hutch-vm/hutch/internal/supervise"
	"github.com/hutch-vm/hutch/internal/vm"
)

// superviseCmd is how hutch runs itself as a VM's supervisor; users never
// call it. fd 3 is the ready pipe, fd 4 an optional first console client.
func superviseCmd() *cobra.Command {
	var l store.Layout
	var withConsole bool
	c := &cobra.Command{
		Use:    vm.SuperviseCommand + " NAME",
		Hidden: true,
		Args:   args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
			// Whatever descriptors the caller leaked to us must not reach
			// QEMU or passt: they get exactly what the plan lists.
			if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
				return fmt.Errorf("mark inherited descriptors close-on-exec: %w", err)
			}
			ready := os.NewFile(3, "ready")
			var attach *os.File
			if withConsole {
				attach = os.NewFile(4, "console")
			}
			return supervise.Run(l, a[0], ready, attach)
		},
	}
	c.Flags().StringVar(&l.RunRoot, "run-root", "", "")
	c.Flags().StringVar(&l.DataRoot, "data-root", "", "")
	c.Flags().BoolVar(&withConsole, "console", false, "")
	return c
}

// execCmd is the pre-exec stage that drops a VM's process to its leased
// identity before it becomes QEMU or passt; users never call it.
func execCmd() *cobra.Command {
	return &cobra.Command{
		Use:                launch.StageCommand + " SPEC",
		Hidden:             true,
		DisableFlagParsing: true,
		Args:               args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			return launch.Stage(a[0])
		},
	}
}
