package netstack

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// CreateTap makes a tap on bridge, as root, for a VMM that has no
// CAP_NET_ADMIN: the tap is not persistent, so it vanishes when the VMM,
// its last holder, exits.
func CreateTap(bridge string) (*os.File, error) {
	if _, err := net.InterfaceByName(bridge); err != nil {
		return nil, fmt.Errorf("bridge %q does not exist here: create it (ip link add %s type bridge) or name another", bridge, bridge)
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq("hutch%d")
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tap name: %w", err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(int(f.Fd()), unix.TUNSETIFF, ifr); err != nil {
		f.Close()
		return nil, fmt.Errorf("create tap: %w", err)
	}
	name := ifr.Name()
	if out, err := exec.Command("ip", "link", "set", "dev", name, "master", bridge, "up").CombinedOutput(); err != nil {
		f.Close()
		return nil, fmt.Errorf("attach tap %s to bridge %s: %s", name, bridge, strings.TrimSpace(string(out)))
	}
	return f, nil
}
