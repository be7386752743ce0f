package main

import "github.com/spf13/cobra"

func inspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "Print a VM's details as JSON",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			e, err := newEngine()
			if err != nil {
				return err
			}
			v, err := e.Inspect(a[0])
			if err != nil {
				return err
			}
			return printJSON(v)
		},
	}
}
