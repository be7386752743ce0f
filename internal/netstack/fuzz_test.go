package netstack

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// fuzzOneLine reports whether msg fits on one line: the CLI prints errors as
// one line each, so a raw newline from user input would forge a second.
func fuzzOneLine(msg string) bool { return !strings.ContainsAny(msg, "\r\n") }

// formatSpec writes a forward range back as a -p spec, bracketing IPv6
// addresses and always naming the protocol, so it must parse back to the
// same forwards.
func formatSpec(ip string, hLo, hHi, gLo, gHi int, proto string) string {
	a, err := netip.ParseAddr(ip)
	if err == nil && a.Is6() {
		ip = "[" + ip + "]"
	}
	h, g := fmt.Sprint(hLo), fmt.Sprint(gLo)
	if hHi != hLo {
		h += fmt.Sprintf("-%d", hHi)
		g += fmt.Sprintf("-%d", gHi)
	}
	return fmt.Sprintf("%s:%s:%s/%s", ip, h, g, proto)
}

func FuzzParsePublish(f *testing.F) {
	for _, s := range []string{
		// Accepted by TestParsePublish.
		"8080:80", "127.0.0.1:8080:80", "0.0.0.0:8080:80/tcp", ":5353:53/udp",
		"[::1]:8080:80", "9000-9002:80-82",
		// Rejected by TestParsePublishRejects.
		"80", "70000:80", "a:b", "1-3:1-2", "0:80", "8080:80/sctp", "::1:8080:80",
		"[127.0.0.1]:8080:80", "[::1:8080:80", "localhost:8080:80", "5-3:5-3", "+80:80", "",
		// Edges: zones (one smuggling a QEMU option), the whole range,
		// leading zeros, stray separators.
		"[fe80::1%eth0]:8080:80/udp", "[fe80::1%x,guestfwd=tcp:10.0.2.100:1234-cmd:/bin/sh]:8080:80/tcp",
		"1-65535:1-65535", "0080:080", "80:80/", "80:-80", "80-:80",
		"1.2.3.4:80:80:80", "[::ffff:1.2.3.4]:1:1", "8080:80\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		fwds, err := ParsePublish(spec)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "invalid port spec ") || !fuzzOneLine(msg) {
				t.Fatalf("ParsePublish(%q) error %q: want one line starting with \"invalid port spec\"", spec, msg)
			}
			if fwds != nil {
				t.Fatalf("ParsePublish(%q) returned %v with error %v", spec, fwds, err)
			}
			return
		}
		if len(fwds) == 0 {
			t.Fatalf("ParsePublish(%q) accepted the spec but forwards nothing", spec)
		}
		first := fwds[0]
		for i, fw := range fwds {
			if fw.HostPort < 1 || fw.HostPort > 65535 || fw.GuestPort < 1 || fw.GuestPort > 65535 {
				t.Fatalf("ParsePublish(%q)[%d] = %v: port out of 1-65535", spec, i, fw)
			}
			if fw.Protocol != "tcp" && fw.Protocol != "udp" {
				t.Fatalf("ParsePublish(%q)[%d] = %v: protocol %q", spec, i, fw, fw.Protocol)
			}
			// HasIPv6 and the backends read the address as net.ParseIP does,
			// and SlirpNetdev splices it into QEMU's comma-separated
			// -netdev: anything more than a plain address (an IPv6 zone
			// may hold any byte, ',' included) is misread or injects options.
			if net.ParseIP(fw.HostIP) == nil {
				t.Fatalf("ParsePublish(%q)[%d] = %v: host IP is not a plain address", spec, i, fw)
			}
			// One spec is one range: the same address and protocol, and host
			// and guest ports stepping together, which is what makes the two
			// ranges the same length.
			if fw.HostIP != first.HostIP || fw.Protocol != first.Protocol ||
				fw.HostPort != first.HostPort+i || fw.GuestPort != first.GuestPort+i {
				t.Fatalf("ParsePublish(%q)[%d] = %v does not continue %v", spec, i, fw, first)
			}
			// The ends of a long range stand for its middle, which the
			// checks above already tie to them; all 65535 would make a wide
			// range cost seconds per input.
			if i >= 16 && len(fwds)-i > 16 {
				continue
			}
			one := formatSpec(fw.HostIP, fw.HostPort, fw.HostPort, fw.GuestPort, fw.GuestPort, fw.Protocol)
			back, err := ParsePublish(one)
			if err != nil || len(back) != 1 || back[0] != fw {
				t.Fatalf("ParsePublish(%q)[%d] = %v, but its spec %q parses to %v, %v", spec, i, fw, one, back, err)
			}
		}
		last := fwds[len(fwds)-1]
		whole := formatSpec(first.HostIP, first.HostPort, last.HostPort, first.GuestPort, last.GuestPort, first.Protocol)
		if back, err := ParsePublish(whole); err != nil || !reflect.DeepEqual(back, fwds) {
			t.Fatalf("ParsePublish(%q) = %d forwards, but its spec %q parses to %v, %v", spec, len(fwds), whole, back, err)
		}
	})
}

// validBridgeName is the kernel's rule for interface names as hutch applies
// it, written out by hand to check the regexp against.
func validBridgeName(name string) bool {
	if len(name) < 1 || len(name) > 15 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}

func FuzzValidBridge(f *testing.F) {
	for _, s := range []string{"virbr0", "br-lan", "a", "123456789012345", "1234567890123456", "", ".", "..",
		"-x", "br0\n", "br/0", "br 0", "ü", "br0\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidBridge(name)
		if want := validBridgeName(name); (err == nil) != want {
			t.Fatalf("ValidBridge(%q) = %v, want accepted=%v", name, err, want)
		}
		if err == nil {
			// The name reaches the setuid helper as --br=NAME and the kernel
			// as an interface name.
			if strings.ContainsAny(name, "/ \t\r\n\x00") || name == "." || name == ".." || strings.HasPrefix(name, "-") {
				t.Fatalf("ValidBridge(%q) accepted a name unsafe as an interface name", name)
			}
			return
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "invalid bridge name ") || !fuzzOneLine(msg) {
			t.Fatalf("ValidBridge(%q) error %q: want one line starting with \"invalid bridge name\"", name, msg)
		}
	})
}
