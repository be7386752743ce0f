package main

import (
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
			return runTool(cmd)
		},
	}
}
