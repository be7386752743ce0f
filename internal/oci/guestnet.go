package oci

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

// GuestNet is the guest's side of QEMU's user-mode network: a /24 of
// which the guest is .15 (where slirp forwards ports), the gateway .2 and
// the DNS relay .3.
type GuestNet struct {
	Net                   *net.IPNet
	Address, Gateway, DNS net.IP
}

// CIDR is the guest's address with its prefix, as the agent sets it.
func (g GuestNet) CIDR() string { return (&net.IPNet{IP: g.Address, Mask: g.Net.Mask}).String() }

// Netdev is QEMU's -netdev for it.
func (g GuestNet) Netdev(id string) string {
	return fmt.Sprintf("user,id=%s,ipv6=off,net=%s,host=%s,dns=%s", id, g.Net, g.Gateway, g.DNS)
}

// ChooseGuestNet picks the guest's subnet: slirp's usual 10.0.2.0/24,
// or the next of 10.0.N.0/24 that overlaps nothing the namespace has an
// address or a route for. Overlap would break the container: slirp4netns
// gives the namespace 10.0.2.100/24, and a connection from there (as
// Podman's port forwarder makes) would look local to a guest on the same
// subnet, whose replies would then never leave.
func ChooseGuestNet(used []*net.IPNet) (GuestNet, error) {
	for third := 2; third < 255; third++ {
		n := &net.IPNet{IP: net.IPv4(10, 0, byte(third), 0).To4(), Mask: net.CIDRMask(24, 32)}
		if overlaps(n, used) {
			continue
		}
		at := func(last byte) net.IP { return net.IPv4(10, 0, byte(third), last).To4() }
		return GuestNet{Net: n, Address: at(15), Gateway: at(2), DNS: at(3)}, nil
	}
	return GuestNet{}, errors.New("every 10.0.N.0/24 is in use in the container's network namespace: no subnet left for the VM's network")
}

func overlaps(n *net.IPNet, used []*net.IPNet) bool {
	for _, u := range used {
		if ones, _ := u.Mask.Size(); ones == 0 {
			continue // a default route overlaps everything and means nothing here
		}
		if u.Contains(n.IP) || n.Contains(u.IP) {
			return true
		}
	}
	return false
}

// namespaceNets lists the IPv4 subnets of this network namespace: its
// addresses and its routes.
// isolatedNet reports whether this network namespace has no interface but
// loopback: the container has no network (Podman's and Docker's --network
// none, a namespace made fresh for it), and its VM gets no NIC, as runc's
// container gets no route out.
func isolatedNet() (bool, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return false, fmt.Errorf("list the namespace's interfaces: %w", err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 {
			return false, nil
		}
	}
	return true, nil
}

func namespaceNets() ([]*net.IPNet, error) {
	var nets []*net.IPNet
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list the namespace's addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			nets = append(nets, n)
		}
	}
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return nets, nil // no IPv4 routing table: addresses are all there is
	}
	defer f.Close()
	routes, err := ParseRoutes(f)
	if err != nil {
		return nil, err
	}
	return append(nets, routes...), nil
}

// ParseRoutes reads /proc/net/route's destinations and masks.
func ParseRoutes(r io.Reader) ([]*net.IPNet, error) {
	var nets []*net.IPNet
	s := bufio.NewScanner(r)
	for first := true; s.Scan(); first = false {
		fields := strings.Fields(s.Text())
		if first || len(fields) < 8 {
			continue
		}
		dst, err1 := hex.DecodeString(fields[1])
		mask, err2 := hex.DecodeString(fields[7])
		if err1 != nil || err2 != nil || len(dst) != 4 || len(mask) != 4 {
			return nil, fmt.Errorf("read /proc/net/route: bad line %q", s.Text())
		}
		// The kernel prints them in host order, little-endian here.
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, binary.LittleEndian.Uint32(dst))
		m := make(net.IPMask, 4)
		binary.BigEndian.PutUint32(m, binary.LittleEndian.Uint32(mask))
		nets = append(nets, &net.IPNet{IP: ip, Mask: m})
	}
	return nets, s.Err()
}
