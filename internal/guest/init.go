package guest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/virtiofs"
)

// IsInit reports whether this process is a guest's PID 1 started as /init:
// hutch itself is the micro VM's init when the host has no static busybox.
func IsInit() bool { return os.Getpid() == 1 && os.Args[0] == "/init" }

// RunInit is the micro VM's own minimal init: it mounts the kernel's
// filesystems, loads the modules in /etc/modules.order, and offers a few
// commands on the console until told to power off. It never returns.
func RunInit() {
	for _, m := range []struct{ fs, dir string }{{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}, {"tmpfs", "/tmp"}} {
		os.MkdirAll(m.dir, 0o755)
		unix.Mount(m.fs, m.dir, m.fs, 0, "")
	}
	LoadModules()
	mountShares()
	unix.Sethostname([]byte("hutch"))
	var u unix.Utsname
	unix.Uname(&u)
	fmt.Printf("hutch micro vm: kernel %s (no busybox on the host: hutch's own init)\n", unix.ByteSliceToString(u.Release[:]))
	fmt.Println("commands: help, echo, cat FILE..., ls [DIR], uname, uptime, poweroff (or exit)")
	in := bufio.NewScanner(os.Stdin)
	for {
		fmt.Print("hutch# ")
		if !in.Scan() {
			break
		}
		if !command(os.Stdout, strings.Fields(in.Text())) {
			break
		}
	}
	unix.Sync()
	for {
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		time.Sleep(time.Second)
	}
}

// LoadModules loads the modules /etc/modules.order lists, in its order,
// and removes each file once loaded: the initramfs lives in guest RAM,
// and a loaded module's file is never read again.
func LoadModules() {
	order, err := os.ReadFile("/etc/modules.order")
	if err != nil {
		return
	}
	for _, p := range strings.Fields(string(order)) {
		loadModule(p)
		os.Remove(p)
	}
}

// loadModule loads one kernel module file, reporting failure on stdout (the
// console): a guest init has nowhere else to say it.
func loadModule(path string) {
	f, err := os.Open(path)
	if err != nil {
		fmt.Printf("load %s: %v\n", path, err)
		return
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
		fmt.Printf("load %s: %v\n", path, err)
	}
}

// PageReportingOrder is the smallest free block, 2^order pages, the
// balloon reports back to the host. The kernel's default is the pageblock
// (2^9 pages, 2 MiB), and an idle guest's free memory lies mostly in
// smaller blocks, so QEMU kept about 20 MiB the guest was not using; 2^3
// pages (32 KiB) hands it back with no measured cost in start or run time
// (docs/benchmarks.md); order 5 returned about the same, order 0 gave
// erratic figures.
const PageReportingOrder = 3

// SetPageReportingOrder applies PageReportingOrder. It must run after the
// balloon driver has registered: registration resets the order to the
// driver's, which is also why the kernel command line cannot carry it.
// A guest without the page_reporting parameter has nothing to set.
func SetPageReportingOrder() {
	err := os.WriteFile("/sys/module/page_reporting/parameters/page_reporting_order", []byte(strconv.Itoa(PageReportingOrder)), 0)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		fmt.Printf("page reporting order: %v\n", err)
	}
}

// command runs one console command; false means power off.
func command(w io.Writer, args []string) bool {
	if len(args) == 0 {
		return true
	}
	switch args[0] {
	case "poweroff", "exit":
		return false
	case "help":
		fmt.Fprintln(w, "help, echo, cat FILE..., ls [DIR], uname, uptime, poweroff (or exit)")
	case "echo":
		fmt.Fprintln(w, strings.Join(args[1:], " "))
	case "cat":
		for _, p := range args[1:] {
			b, err := os.ReadFile(p)
			if err != nil {
				fmt.Fprintln(w, err)
				continue
			}
			w.Write(b)
		}
	case "ls":
		dir := "."
		if len(args) > 1 {
			dir = args[1]
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			fmt.Fprintln(w, err)
			return true
		}
		for _, e := range ents {
			fmt.Fprintln(w, e.Name())
		}
	case "uname":
		var u unix.Utsname
		unix.Uname(&u)
		fmt.Fprintln(w, unix.ByteSliceToString(u.Sysname[:]), unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Machine[:]))
	case "uptime":
		b, _ := os.ReadFile("/proc/uptime")
		fmt.Fprintln(w, strings.Fields(string(b) + " ?")[0]+"s")
	default:
		fmt.Fprintf(w, "%s: unknown command (try help)\n", args[0])
	}
	return true
}

// mountShares mounts the VM's shared tree and binds its entries where the
// kernel command line says.
func mountShares() {
	b, _ := os.ReadFile("/proc/cmdline")
	ms := virtiofs.ParseCmdline(string(b))
	if len(ms) == 0 {
		return
	}
	os.MkdirAll(virtiofs.GuestRoot, 0o755)
	if err := unix.Mount(virtiofs.Tag, virtiofs.GuestRoot, "virtiofs", 0, ""); err != nil {
		fmt.Printf("mount the shared files: %v\n", err)
		return
	}
	for _, m := range ms {
		os.MkdirAll(m.Target, 0o755)
		if err := unix.Mount(filepath.Join(virtiofs.GuestRoot, m.Name), m.Target, "", unix.MS_BIND, ""); err != nil {
			fmt.Printf("mount %s: %v\n", m.Target, err)
			continue
		}
		if m.ReadOnly {
			unix.Mount("", m.Target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, "")
		}
	}
}
