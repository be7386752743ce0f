package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/console"
	"github.com/hutch-vm/hutch/internal/vm"
)

func runCmd() *cobra.Command {
	var o vm.Options
	var detach, interactive, tty, wait bool
	var waitTimeout time.Duration
	c := &cobra.Command{
		Use:   "run [flags] [IMAGE]",
		Short: "Create and start a VM",
		Args:  args(cobra.MaximumNArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			if len(a) == 1 {
				o.Image = a[0]
			}
			if wait && !o.SSH {
				return usageError{fmt.Errorf("--wait waits for ssh: add --ssh")}
			}
			spec, err := vm.ParseSpec(o)
			if err != nil {
				return err
			}
			e, err := newEngine()
			if err != nil {
				return err
			}
			if detach || wait {
				name, err := e.Run(spec, nil)
				if err != nil {
					return err
				}
				if wait {
					if err := e.WaitSSH(name, waitTimeout); err != nil {
						return fmt.Errorf("%w; vm %s keeps running (hutch rm -f %s removes it)", err, name, name)
					}
				}
				fmt.Println(name)
				return nil
			}
			return runAttached(e, spec)
		},
	}
	f := c.Flags()
	f.BoolVarP(&detach, "detach", "d", false, "return once the VM runs and print its name")
	f.BoolVarP(&interactive, "interactive", "i", false, "accepted for docker compatibility; an attached run is always interactive")
	f.BoolVarP(&tty, "tty", "t", false, "accepted for docker compatibility; the console is the terminal")
	specFlags(f, &o)
	f.BoolVar(&wait, "wait", false, "with --ssh: return once a login over ssh works (implies -d)")
	f.DurationVar(&waitTimeout, "wait-timeout", 10*time.Minute, "how long --wait waits")
	return c
}

// specFlags are the flags that say what a VM is, shared by run and create.
func specFlags(f *pflag.FlagSet, o *vm.Options) {
	f.BoolVar(&o.Remove, "rm", false, "remove the VM when it stops")
	f.StringVar(&o.Name, "name", "", "name of the VM (default: generated)")
	f.IntVar(&o.CPUs, "cpus", vm.DefaultCPUs, "number of virtual CPUs")
	f.StringVar(&o.Memory, "memory", "", "guest memory, e.g. 256M or 2G (default 512M)")
	f.StringVar(&o.DiskSize, "disk-size", "", "grow the IMAGE's root disk to SIZE, e.g. 20G")
	f.StringVar(&o.CDROM, "cdrom", "", "attach an ISO as a CD, booted first until the guest first shuts down or reboots")
	f.StringVar(&o.Firmware, "firmware", "bios", "firmware: bios (SeaBIOS), or uefi (OVMF, with a variable store of the VM's own)")
	f.StringVar(&o.Display, "display", "none", "graphical console: none, or vnc on a socket only you can reach (see hutch vnc)")
	f.StringVar(&o.Restart, "restart", "no", "when QEMU ends by itself: no, on-failure or always (never after hutch stop)")
	f.StringVar(&o.Kernel, "kernel", "", "boot this kernel directly")
	f.StringVar(&o.Initrd, "initrd", "", "initial ramdisk for --kernel")
	f.StringVar(&o.Append, "append", "", "kernel command line for --kernel")
	f.StringArrayVar(&o.Disks, "disk", nil, "attach a disk: PATH[,format=raw|qcow2][,ro|rw], or a blank one: size=SIZE[,format=qcow2|raw] (repeatable)")
	f.StringArrayVarP(&o.Volumes, "volume", "v", nil, "share a host directory: HOSTDIR:GUESTPATH[:ro] (repeatable)")
	f.StringArrayVarP(&o.Publish, "publish", "p", nil, "forward a host port: [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|/udp] (repeatable)")
	f.StringVar(&o.Network, "network", "", "network backend: slirp, passt, none or bridge=BR (default slirp)")
	f.StringVar(&o.Accel, "accel", "", "accelerator: auto (KVM when it works, else TCG), kvm or tcg (default: the config's accel, else auto)")
	f.BoolVar(&o.SSH, "ssh", false, "seed cloud-init with your hutch key and forward a free host port to the guest's ssh (see hutch ssh)")
	f.StringVar(&o.CloudInit, "cloud-init", "", "cloud-config user-data FILE for the guest (merged with the key for --ssh)")
}

// runAttached starts the VM with this terminal on its console and returns
// when the VM ends, with its exit code, or when the user detaches.
func runAttached(e *vm.Engine, spec vm.Spec) error {
	return attached(e, func(console *os.File) (string, error) { return e.Run(spec, console) })
}

// attached starts a VM through start, handing the supervisor one end of a
// console socket from the first byte, and carries this terminal to it.
func attached(e *vm.Engine, start func(console *os.File) (string, error)) error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("console socketpair: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "console"), os.NewFile(uintptr(fds[1]), "console-supervisor")
	name, err := start(theirs)
	theirs.Close()
	if err != nil {
		ours.Close()
		return err
	}
	detached, err := console.Attach(ours, os.Stdin, os.Stdout)
	if err != nil {
		return err
	}
	if detached {
		fmt.Fprintf(os.Stderr, "\r\nhutch: detached from %s; it keeps running (hutch console %s)\n", name, name)
		return nil
	}
	v, ok := e.WaitStopped(name)
	if ok && v.ExitCode != nil && *v.ExitCode != 0 {
		return exitError{*v.ExitCode}
	}
	return nil
}
