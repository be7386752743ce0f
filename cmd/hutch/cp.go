package main

import (
	"errors"
	"fmt"
	"github.com/spf13/cobra"
)

func cpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files between the host and a VM started with --ssh (NAME:PATH is in the guest)",
		Example: "  hutch cp web:/var/log/syslog ./syslog\n" +
			"  hutch cp ./site web:/srv/",
		Args: args(cobra.ExactArgs(2)),
		RunE: func(c *cobra.Command, a []string) error {
			e, err := newEngine()
			if err != nil {
				return err
			}
			cmd, err := e.CopyCommand(a[0], a[1])
			if err != nil {
				return err
			}
			// scp's own status (255 for any failure) is not a copy's: hutch
			// exits 1 for a failed copy, as for any failed command.
			if err := runTool(cmd); err != nil {
				var ee exitError
				if errors.As(err, &ee) {
					return fmt.Errorf("copy failed (scp exited %d; its message is above)", ee.code)
				}
				return err
			}
			return nil
		},
	}
}
