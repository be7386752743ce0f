package main

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/hutch-vm/hutch/internal/vm"
)

func createCmd() *cobra.Command {
	var o vm.Options
	c := &cobra.Command{
		Use:   "create [flags] [IMAGE]",
		Short: "Create a VM (its record and disks) without starting it",
		Args:  args(cobra.MaximumNArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			if len(a) == 1 {
				o.Image = a[0]
			}
			spec, err := vm.ParseSpec(o)
			if err != nil {
				return err
			}
			e, err := newEngine()
			if err != nil {
				return err
			}
			name, err := e.Create(spec)
			if err != nil {
				return err
			}
			fmt.Println(name)
			return nil
		},
	}
	specFlags(c.Flags(), &o)
	return c
}

func startCmd() *cobra.Command {
	var attach bool
	c := &cobra.Command{
		Use:   "start [-a] NAME...",
		Short: "Start created or stopped VMs from their records",
		Args:  args(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			e, err := newEngine()
			if err != nil {
				return err
			}
			if attach {
				if len(a) != 1 {
					return usageError{fmt.Errorf("start -a attaches one VM's console: name one VM")}
				}
				return attached(e, func(console *os.File) (string, error) { return a[0], e.Start(a[0], console) })
			}
			return eachVM(a, func(n string) error { return e.Start(n, nil) })
		},
	}
	c.Flags().BoolVarP(&attach, "attach", "a", false, "attach this terminal to the console (Ctrl-] detaches)")
	return c
}

func restartCmd() *cobra.Command {
	var seconds int
	c := &cobra.Command{
		Use:   "restart [-t SECONDS] NAME...",
		Short: "Stop VMs (as stop does) and start them again",
		Args:  args(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			if seconds < 0 {
				return usageError{fmt.Errorf("invalid -t %d: give seconds, 0 or more", seconds)}
			}
			e, err := newEngine()
			if err != nil {
				return err
			}
			return eachVM(a, func(n string) error {
				if err := e.Stop(n, time.Duration(seconds)*time.Second); err != nil {
					return err
				}
				return e.Start(n, nil)
			})
		},
	}
	c.Flags().IntVarP(&seconds, "time", "t", 10, "seconds to wait for the guest to power off before forcing it")
	return c
}

func setCmd() *cobra.Command {
	var ch vm.Changes
	c := &cobra.Command{
		Use:   "set NAME [--cpus N] [--memory SIZE] [--disk-size SIZE]",
		Short: "Change a stopped VM; the change takes effect at its next start",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			if ch == (vm.Changes{}) {
				return usageError{fmt.Errorf("set: name what to change: --cpus, --memory or --disk-size")}
			}
			e, err := newEngine()
			if err != nil {
				return err
			}
			return e.Set(a[0], ch)
		},
	}
	f := c.Flags()
	f.IntVar(&ch.CPUs, "cpus", 0, "number of virtual CPUs")
	f.StringVar(&ch.Memory, "memory", "", "guest memory, e.g. 1G")
	f.StringVar(&ch.DiskSize, "disk-size", "", "grow the root disk to SIZE, e.g. 20G")
	return c
}

func vncCmd() *cobra.Command {
	var port int
	c := &cobra.Command{
		Use:   "vnc NAME",
		Short: "Give a VNC viewer a way in to a VM's display: prints a 127.0.0.1 address, relays until Ctrl-C",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			e, err := newEngine()
			if err != nil {
				return err
			}
			sock, err := e.VNCSocket(a[0])
			if err != nil {
				return err
			}
			l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
			if err != nil {
				return fmt.Errorf("listen for a viewer: %w", err)
			}
			fmt.Printf("%s (e.g. vncviewer 127.0.0.1::%d; only you can connect)\n", l.Addr(), l.Addr().(*net.TCPAddr).Port)
			return vm.ServeVNC(l, sock)
		},
	}
	c.Flags().IntVar(&port, "port", 0, "127.0.0.1 port to listen on (default: a free one)")
	return c
}

func generateCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "generate",
		Short: "Generate files that run hutch VMs",
		Args:  args(cobra.NoArgs),
	}
	c.AddCommand(&cobra.Command{
		Use:   "systemd NAME",
		Short: "Print a systemd user unit that starts the VM at login (or boot, with lingering)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			e, err := newEngine()
			if err != nil {
				return err
			}
			unit, err := e.SystemdUnit(a[0], e.Self)
			if err != nil {
				return err
			}
			fmt.Print(unit)
			return nil
		},
	})
	return c
}
