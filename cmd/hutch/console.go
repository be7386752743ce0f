package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/hutch-vm/hutch/internal/console"
)

func consoleCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "console NAME",
		Short: "Attach to a VM's serial console (Ctrl-] detaches)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			e, err := newEngine()
			if err != nil {
				return err
			}
			conn, err := e.Console(a[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "hutch: attached to %s; Ctrl-] detaches\r\n", a[0])
			detached, err := console.Attach(conn, os.Stdin, os.Stdout)
			if err != nil {
				return err
			}
			if detached {
				fmt.Fprintf(os.Stderr, "\r\nhutch: detached from %s\n", a[0])
			} else {
				fmt.Fprintf(os.Stderr, "\r\nhutch: %s has stopped\n", a[0])
			}
			return nil
		},
	}
}
