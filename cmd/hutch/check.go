package main

import (
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/hutch-vm/hutch/internal/preflight"
)

func checkCmd() *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "check",
		Short: "Check this host: what works, what does not, and the exact fix",
		Args:  args(cobra.NoArgs),
		RunE: func(c *cobra.Command, a []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			rs := preflight.Run(preflight.System())
			if format == "json" {
				if err := printJSON(rs); err != nil {
					return err
				}
			} else {
				w := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
				fmt.Fprintln(w, "CHECK\tSTATUS\tDETAIL")
				for _, r := range rs {
					fmt.Fprintf(w, "%s\t%s\t%s\n", r.Check, r.Status, r.Detail)
					if r.Status != preflight.OK && r.Fix != "" {
						fmt.Fprintf(w, "\t\tfix: %s\n", r.Fix)
					}
				}
				if err := w.Flush(); err != nil {
					return err
				}
			}
			if !preflight.CanRunVMs(rs) {
				return errors.New("VMs cannot run on this host: fix the checks marked fail")
			}
			return nil
		},
	}
	c.Flags().StringVar(&format, "format", "table", "output format: table or json")
	return c
}
