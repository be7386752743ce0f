package netstack

import (
	"net"
	"strconv"
	"strings"
)

// PasstBinary is the user-mode network backend hutch prefers: it forwards
// TCP and UDP, IPv4 and IPv6, and runs as the VM's user in a sandbox of
// its own.
const PasstBinary = "passt"

// PasstArgs is passt's command line (without the binary) for one VM: in
// the foreground, quiet, serving exactly one QEMU on socket, and quitting
// when that QEMU goes away.
func PasstArgs(socket string, fwds []Forward) []string {
	args := []string{"--foreground", "--quiet", "--one-off", "--socket", socket}
	for _, f := range fwds {
		flag := "--tcp-ports"
		if f.Protocol == "udp" {
			flag = "--udp-ports"
		}
		args = append(args, flag, f.HostIP+"/"+strconv.Itoa(f.HostPort)+":"+strconv.Itoa(f.GuestPort))
	}
	return args
}

// StreamNetdev is the -netdev value connecting QEMU to passt's socket.
func StreamNetdev(id, socket string) string {
	return "stream,id=" + id + ",server=off,addr.type=unix,addr.path=" + strings.ReplaceAll(socket, ",", ",,")
}

// HasIPv6 reports whether any forward listens on an IPv6 address, which
// QEMU's slirp cannot do.
func HasIPv6(fwds []Forward) (Forward, bool) {
	for _, f := range fwds {
		if ip := net.ParseIP(f.HostIP); ip != nil && ip.To4() == nil {
			return f, true
		}
	}
	return Forward{}, false
}
