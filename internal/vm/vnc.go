package vm

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
)

// VNCSocket is where a running VM with --display vnc serves its display.
func (e *Engine) VNCSocket(name string) (string, error) {
	rec, err := e.Get(name)
	if err != nil {
		return "", err
	}
	if rec.Spec.Display != "vnc" {
		return "", invalid("vm %q has no display: create it with --display vnc", name)
	}
	if rec.live().State != StateRunning {
		return "", fmt.Errorf("vm %q is not running: start it with hutch start %s", name, name)
	}
	return rec.paths(e.Layout).VNC(), nil
}

// ServeVNC relays each TCP connection l accepts to the VM's VNC socket,
// for viewers that cannot open a unix socket. Loopback TCP is open to
// every local user, so a connection from another uid is closed at once:
// the display stays as private as the socket it comes from.
func ServeVNC(l *net.TCPListener, socket string) error {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			return err
		}
		if uid, err := loopbackPeerUID(c); err != nil || uid != os.Getuid() {
			slog.Warn("vnc: refused a connection from another user", "peer", c.RemoteAddr(), "uid", uid, "err", err)
			c.Close()
			continue
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("unix", socket)
			if err != nil {
				slog.Warn("vnc: the vm's display is gone", "err", err)
				return
			}
			defer u.Close()
			go io.Copy(u, c)
			io.Copy(c, u)
		}()
	}
}

// loopbackPeerUID finds who owns the other end of a loopback TCP
// connection: /proc/net/tcp lists that socket with its owner's uid.
func loopbackPeerUID(c *net.TCPConn) (int, error) {
	peer := c.RemoteAddr().(*net.TCPAddr)
	local := c.LocalAddr().(*net.TCPAddr)
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return -1, err
	}
	defer f.Close()
	want := hexAddr(peer) + " " + hexAddr(local)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 7 && fields[1]+" "+fields[2] == want {
			return strconv.Atoi(fields[7])
		}
	}
	return -1, fmt.Errorf("no socket %s in /proc/net/tcp", want)
}

// hexAddr is an IPv4 address and port as /proc/net/tcp writes them.
func hexAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	if ip == nil {
		return ""
	}
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port)
}
