package main

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/hutch-vm/hutch/internal/vm"
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
			// At once: each stop may wait out its guest's -t.
			return eachVMAtOnce(a, func(n string) error { return e.Stop(n, time.Duration(seconds)*time.Second) })
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
// failure, one "hutch: " line each, rather than stopping at the first.
// eachVMAtOnce is eachVM with every fn running at the same time; results
// are still printed in the order the names were given.
func eachVMAtOnce(names []string, fn func(string) error) error {
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = fn(n) }()
	}
	wg.Wait()
	i := 0
	return eachVM(names, func(string) error { i++; return errs[i-1] })
}

func eachVM(names []string, fn func(string) error) error {
	code := 0
	for _, n := range names {
		err := fn(n)
		if err == nil {
			fmt.Println(n)
			continue
		}
		fmt.Fprintf(os.Stderr, "hutch: %v\n", err)
		if vm.IsInput(err) {
			code = 2
		} else if code == 0 {
			code = 1
		}
	}
	if code != 0 {
		return exitError{code}
	}
	return nil
}
