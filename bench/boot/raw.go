package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
)

// Placeholders in the raw command line template.
const (
	portPlaceholder   = "PORT"
	serialPlaceholder = "SERIAL"
)

// flagOnly are the QEMU options in hutch's argv that take no value.
var flagOnly = map[string]bool{
	"-nodefaults": true, "-no-user-config": true, "-no-reboot": true, "-no-shutdown": true,
	"-snapshot": true, "-enable-kvm": true, "-S": true,
}

var hostfwdPort = regexp.MustCompile(`(hostfwd=tcp:[^:,]*:)([0-9]+)(-)`)

// rawFromHutch turns the QEMU argv hutch ran into the command line a user
// would type for the same VM: the binary by its name, the kernel and
// initrd by their paths instead of the descriptors hutch passes, the
// serial console to a file instead of a socket from the supervisor, no
// QMP monitor, and none of hutch's hardening or labels (-sandbox,
// -no-user-config, -name). Machine, accelerator, CPUs, memory, kernel
// command line, netdev and NIC are kept exactly; the forwarded host port
// becomes a placeholder.
func rawFromHutch(argv []string, kernel, initrd string) ([]string, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("hutch inspect shows no command")
	}
	out := []string{filepath.Base(argv[0])}
	fdChardevs := map[string]bool{}
	var serial, netdev bool
	for i := 1; i < len(argv); i++ {
		opt := argv[i]
		if !strings.HasPrefix(opt, "-") {
			return nil, fmt.Errorf("unexpected argument %q in hutch's qemu command", opt)
		}
		if flagOnly[opt] {
			if opt != "-no-user-config" {
				out = append(out, opt)
			}
			continue
		}
		if i+1 >= len(argv) {
			return nil, fmt.Errorf("option %s has no value in hutch's qemu command", opt)
		}
		i++
		val := argv[i]
		switch opt {
		case "-name", "-sandbox":
			continue
		case "-chardev":
			if strings.Contains(val, ",fd=") {
				id := optValue(val, "id")
				fdChardevs[id] = true
				continue
			}
		case "-serial":
			if id, ok := strings.CutPrefix(val, "chardev:"); ok && fdChardevs[id] {
				out = append(out, "-serial", "file:"+serialPlaceholder)
				serial = true
				delete(fdChardevs, id)
				continue
			}
		case "-mon":
			if id := optValue(val, "chardev"); fdChardevs[id] {
				delete(fdChardevs, id)
				continue
			}
		case "-kernel", "-initrd":
			if strings.HasPrefix(val, "/proc/self/fd/") {
				val = map[string]string{"-kernel": kernel, "-initrd": initrd}[opt]
			}
		case "-add-fd":
			return nil, fmt.Errorf("hutch's qemu command passes fd sets (%s), which a raw command line cannot", val)
		case "-netdev":
			if !hostfwdPort.MatchString(val) {
				return nil, fmt.Errorf("netdev %q has no tcp hostfwd", val)
			}
			val = hostfwdPort.ReplaceAllString(val, "${1}"+portPlaceholder+"${3}")
			netdev = true
		}
		out = append(out, opt, val)
	}
	for id := range fdChardevs {
		return nil, fmt.Errorf("hutch's qemu command has a descriptor chardev %q that is neither the serial console nor QMP", id)
	}
	if !serial || !netdev {
		return nil, fmt.Errorf("hutch's qemu command has no fd serial console or no slirp netdev: %q", argv)
	}
	for _, a := range out {
		if strings.Contains(a, "/proc/self/fd/") || strings.Contains(a, "fd=") || strings.Contains(a, "/dev/fdset/") {
			return nil, fmt.Errorf("raw command line still names a descriptor (%s): the driver does not know how to replace it", a)
		}
	}
	return out, nil
}

// optValue returns key's value in a QEMU key=value,... option string.
func optValue(s, key string) string {
	for _, kv := range strings.Split(s, ",") {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// rawArgv fills the template for one run.
func (b *bench) rawArgv(port, serial string) []string {
	out := make([]string, len(b.rawTemplate))
	for i, a := range b.rawTemplate {
		a = strings.ReplaceAll(a, "file:"+serialPlaceholder, "file:"+serial)
		out[i] = strings.ReplaceAll(a, ":"+portPlaceholder+"-", ":"+port+"-")
	}
	return out
}

// shellQuote joins argv as a shell would need it typed.
func shellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,@%+") == "" {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}
