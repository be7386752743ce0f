package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func portCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "port NAME",
		Short: "List a VM's port forwards",
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
			for _, f := range v.Ports {
				fmt.Printf("%d/%s -> %s\n", f.GuestPort, f.Protocol, f.String()[:len(f.String())-len(f.Protocol)-1])
			}
			return nil
		},
	}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print hutch's version",
		Args:  args(cobra.NoArgs),
		Run: func(c *cobra.Command, a []string) {
			fmt.Printf("hutch version %s\n", version)
		},
	}
}
