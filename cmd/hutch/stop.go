package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func stopCmd() *cobra.Command {
	var seconds int
	c := &cobra.Command{
		Use:   "stop [-t SECONDS] NAME...",
		Short: "Stop VMs: ACPI power-down, then SIGTERM, then SIGKILL",
		Args:  args(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			if seconds < 0 {
				return usageError{fmt.Errorf("invalid -t %d: give seconds, 0 or more", seconds)}
			}
			e, err := newEngine()
			if err != nil {
				return err
			}
			return eachVM(a, func(n string) error { return e.Stop(n, time.Duration(seconds)*time.Second) })
		},
	}
	c.Flags().IntVarP(&seconds, "time", "t", 10, "seconds to wait for the guest to power off before forcing it")
	return c
}

func killCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "kill NAME...",
		Short: "Kill VMs' QEMU at once",
		Args:  args(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			e, err := newEngine()
			if err != nil {
				return err
			}
			return eachVM(a, e.Kill)
		},
	}
}

func rmCmd() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "rm [-f] NAME...",
		Short: "Remove VMs: their overlays, logs and sockets (never a base image)",
		Args:  args(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			e, err := newEngine()
			if err != nil {
				return err
			}
			return eachVM(a, func(n string) error { return e.Remove(n, force) })
		},
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "stop a running VM first")
	return c
}

// eachVM applies fn to every name, printing each done, and reports every
// failure rather than stopping at the first.
func eachVM(names []string, fn func(string) error) error {
	var errs []error
	for _, n := range names {
		if err := fn(n); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Println(n)
	}
	return errors.Join(errs...)
}
