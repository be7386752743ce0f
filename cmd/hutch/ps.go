package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hutch-vm/hutch/internal/vm"
)

func psCmd() *cobra.Command {
	var all bool
	var format string
	c := &cobra.Command{
		Use:   "ps",
		Short: "List VMs",
		Args:  args(cobra.NoArgs),
		RunE: func(c *cobra.Command, a []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			e, err := newEngine()
			if err != nil {
				return err
			}
			views, err := e.List(all)
			if err != nil {
				return err
			}
			if format == "json" {
				return printJSON(views)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
			fmt.Fprintln(w, "NAME\tSTATE\tPID\tACCEL\tCPUS\tMEMORY\tPORTS\tCREATED")
			for _, v := range views {
				state := v.State
				if v.State == vm.StateStopped && v.ExitCode != nil {
					state = fmt.Sprintf("stopped (%d)", *v.ExitCode)
				}
				if v.NetworkError != "" {
					state += " (no network)"
				}
				if v.Warning != "" {
					state += " (silent console)"
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%d\t%dM\t%s\t%s\n", v.Name, state, v.Pid, v.Accel, v.CPUs,
					v.MemoryMiB, portList(v), v.Created.Local().Format(time.DateTime))
			}
			return w.Flush()
		},
	}
	c.Flags().BoolVarP(&all, "all", "a", false, "list stopped VMs too")
	c.Flags().StringVar(&format, "format", "table", "output format: table or json")
	return c
}

func portList(v vm.View) string {
	var ps []string
	for _, f := range v.Ports {
		ps = append(ps, fmt.Sprintf("%s->%d/%s", strings.TrimSuffix(f.String(), "/"+f.Protocol), f.GuestPort, f.Protocol))
	}
	return strings.Join(ps, ",")
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
