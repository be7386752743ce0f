package main

import (
	"os"

	"github.com/spf13/cobra"
)

func logsCmd() *cobra.Command {
	var follow bool
	c := &cobra.Command{
		Use:   "logs [-f] NAME",
		Short: "Print a VM's serial console output",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			e, err := newEngine()
			if err != nil {
				return err
			}
			return e.Logs(a[0], follow, os.Stdout)
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the VM stops")
	return c
}
