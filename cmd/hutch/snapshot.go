package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func snapshotCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "snapshot",
		Short: "Snapshots of a stopped VM's writable disks, taken together",
		Args:  args(cobra.NoArgs),
	}
	op := func(use, short, flag string) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NAME SNAPSHOT",
			Short: short,
			Args:  args(cobra.ExactArgs(2)),
			RunE: func(c *cobra.Command, a []string) error {
				e, err := newEngine()
				if err != nil {
					return err
				}
				return e.Snapshot(a[0], flag, a[1])
			},
		}
	}
	ls := &cobra.Command{
		Use:   "ls NAME",
		Short: "List a VM's snapshots",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			e, err := newEngine()
			if err != nil {
				return err
			}
			names, err := e.Snapshots(a[0])
			if err != nil {
				return err
			}
			for _, n := range names {
				fmt.Println(n)
			}
			return nil
		},
	}
	c.AddCommand(op("create", "Snapshot every writable disk of a stopped VM", "-c"),
		op("restore", "Put every writable disk back as the snapshot found it", "-a"),
		op("rm", "Remove a snapshot from every writable disk", "-d"), ls)
	return c
}
