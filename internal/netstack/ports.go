// Package netstack holds the user-mode networking of a VM: port-forward
// specs, host-port checks and the backend's arguments.
package netstack

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Forward is one host port forwarded to one guest port.
type Forward struct {
	HostIP    string `json:"hostIP"`
	HostPort  int    `json:"hostPort"`
	GuestPort int    `json:"guestPort"`
	Protocol  string `json:"protocol"` // tcp or udp
}

func (f Forward) String() string {
	return fmt.Sprintf("%s/%s", net.JoinHostPort(f.HostIP, strconv.Itoa(f.HostPort)), f.Protocol)
}

// DefaultHostIP is where a forward listens when the spec names no address:
// a VM is not exposed to the network unless the user says so.
const DefaultHostIP = "127.0.0.1"

// ParsePublish parses one -p spec, [HOSTIP:]HOSTPORT[-END]:GUESTPORT[-END][/tcp|/udp],
// as Docker and Podman write it; a range expands to one Forward per port.
func ParsePublish(spec string) ([]Forward, error) {
	bad := func(why string) error {
		return fmt.Errorf("invalid port spec %q: %s (want [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|/udp], e.g. -p 8080:80)", spec, why)
	}
	s, proto := spec, "tcp"
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		s, proto = s[:i], s[i+1:]
		if proto != "tcp" && proto != "udp" {
			return nil, bad("protocol must be tcp or udp")
		}
	}
	hostIP := ""
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]:")
		if end < 0 {
			return nil, bad("unterminated [IPv6] address")
		}
		hostIP, s = s[1:end], s[end+2:]
		a, err := netip.ParseAddr(hostIP)
		if err != nil || !a.Is6() {
			return nil, bad(fmt.Sprintf("%q is not an IPv6 address", hostIP))
		}
		// A zone may hold any byte, ',' included, and the address is
		// spliced into QEMU's comma-separated -netdev and passt's ADDR/PORT.
		if a.Zone() != "" {
			return nil, bad(fmt.Sprintf("%q has a zone; give the address without %%ZONE", hostIP))
		}
		// ::ffff:a.b.c.d is an IPv4 address in IPv6 clothes; slirp and
		// passt take it only undressed.
		if a.Is4In6() {
			hostIP = a.Unmap().String()
		}
	}
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 1:
		return nil, bad("a host port is required")
	case 2:
	case 3:
		if hostIP != "" {
			return nil, bad("too many fields")
		}
		hostIP, parts = parts[0], parts[1:]
		if hostIP != "" {
			a, err := netip.ParseAddr(hostIP)
			if err != nil || !a.Is4() {
				return nil, bad(fmt.Sprintf("%q is not an IPv4 address (write IPv6 as [ADDR])", hostIP))
			}
		}
	default:
		return nil, bad("too many fields (write IPv6 addresses as [ADDR])")
	}
	if hostIP == "" {
		hostIP = DefaultHostIP
	}
	hLo, hHi, err := parseRange(parts[0])
	if err != nil {
		return nil, bad("host port " + err.Error())
	}
	gLo, gHi, err := parseRange(parts[1])
	if err != nil {
		return nil, bad("guest port " + err.Error())
	}
	if hHi-hLo != gHi-gLo {
		return nil, bad("host and guest ranges differ in length")
	}
	if n := hHi - hLo + 1; n > MaxForwards {
		return nil, bad(fmt.Sprintf("a range of %d ports; a VM forwards at most %d", n, MaxForwards))
	}
	fwds := make([]Forward, 0, hHi-hLo+1)
	for i := 0; i <= hHi-hLo; i++ {
		fwds = append(fwds, Forward{HostIP: hostIP, HostPort: hLo + i, GuestPort: gLo + i, Protocol: proto})
	}
	return fwds, nil
}

// MaxForwards bounds the ports one VM forwards: each is a listening socket
// and an argument on QEMU's or passt's command line, which the kernel caps.
const MaxForwards = 1024

func parseRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = parsePort(a); err != nil {
		return 0, 0, err
	}
	hi = lo
	if isRange {
		if hi, err = parsePort(b); err != nil {
			return 0, 0, err
		}
		if hi < lo {
			return 0, 0, fmt.Errorf("range %q runs backwards", s)
		}
	}
	return lo, hi, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || s == "" || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("%d is out of range 1-65535", n)
	}
	return n, nil
}

// CheckFree fails, naming the first one, if any forward's host port cannot
// be bound now; also if two forwards of the list claim the same port.
func CheckFree(fwds []Forward) error {
	seen := map[string]bool{}
	for _, f := range fwds {
		key := fmt.Sprintf("%d/%s", f.HostPort, f.Protocol)
		if seen[key] {
			return fmt.Errorf("host port %s is given twice; give each forward its own host port", f)
		}
		seen[key] = true
		// The VMM binds the port, and a VMM is never privileged: a port
		// below the kernel's unprivileged start cannot work even when the
		// caller (root) could bind it.
		if start := unprivilegedPortStart(); f.HostPort < start {
			return fmt.Errorf("host port %s is privileged (below net.ipv4.ip_unprivileged_port_start = %d), and a VMM never is: choose a host port from %d up, e.g. -p %d:%d",
				f, start, start, 8000+f.HostPort%1000, f.GuestPort)
		}
		addr := net.JoinHostPort(f.HostIP, strconv.Itoa(f.HostPort))
		var err error
		if f.Protocol == "udp" {
			var c net.PacketConn
			if c, err = net.ListenPacket("udp", addr); err == nil {
				c.Close()
			}
		} else {
			var l net.Listener
			if l, err = net.Listen("tcp", addr); err == nil {
				l.Close()
			}
		}
		if err != nil {
			if strings.Contains(err.Error(), "address already in use") {
				return fmt.Errorf("host port %s is already in use%s; choose another host port with -p", f, holder(f))
			}
			return fmt.Errorf("host port %s cannot be bound: %w", f, err)
		}
	}
	return nil
}

// unprivilegedPortStart is the lowest port an unprivileged process may
// bind in this network namespace (1024 when it cannot be read).
func unprivilegedPortStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return 1024
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 1024
	}
	return n
}

// SlirpNetdev is the -netdev value for QEMU's built-in user networking.
func SlirpNetdev(id string, fwds []Forward) string {
	var b strings.Builder
	b.WriteString("user,id=" + id)
	for _, f := range fwds {
		host := f.HostIP
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		fmt.Fprintf(&b, ",hostfwd=%s:%s:%d-:%d", f.Protocol, host, f.HostPort, f.GuestPort)
	}
	return b.String()
}

// SlirpGuestIP is the address QEMU's slirp leases to the one guest on its
// network (its default dhcpstart).
const SlirpGuestIP = "10.0.2.15"

// PasstGuestIP is the address passt gives its guest: a copy of the host's
// own IPv4 address on the interface of its default route; "" if the host
// has none.
func PasstGuestIP() string {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 2 || f[1] != "00000000" {
			continue
		}
		ifc, err := net.InterfaceByName(f[0])
		if err != nil {
			return ""
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	return ""
}
