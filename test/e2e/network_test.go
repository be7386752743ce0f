package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Both user-mode backends forward TCP and UDP; passt is the default and
// runs as the user.
func TestForwardsTCPAndUDP(t *testing.T) {
	for _, network := range []string{"", "slirp", "passt"} {
		name := network
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			u := newUser(t, "hutchtest2")
			udp := freeUDPPort(t)
			extra := []string{"-p", fmt.Sprintf("127.0.0.1:%d:7/udp", udp)}
			if network != "" {
				extra = append(extra, "--network", network)
			}
			port := u.runGuest("net", extra...)
			waitPage(t, port)
			udpEcho(t, udp)

			v := u.inspect("net")
			want := network
			if want == "" {
				want = "slirp"
			}
			if v.Network != want {
				t.Errorf("network = %q, want %q", v.Network, want)
			}
			if want == "passt" {
				st := procStatus(v.PasstPid)
				comm, _ := os.ReadFile("/proc/" + strconv.Itoa(v.PasstPid) + "/comm")
				if st == nil || !strings.HasPrefix(string(comm), "passt") || strings.Fields(st["Uid"])[0] != strconv.Itoa(u.uid) {
					t.Fatalf("passtPid %d is not a passt of uid %d: comm %q status %v", v.PasstPid, u.uid, comm, st)
				}
				// QEMU gone, passt gone.
				u.ok("kill", "net")
				if !waitFor(10*time.Second, func() bool { return procStatus(v.PasstPid) == nil }) {
					t.Errorf("passt %d outlived its qemu", v.PasstPid)
				}
			}
		})
	}
}

// A host port held by another VM, or by any program, is refused before
// anything starts, naming the port.
func TestPortClashIsRefused(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	port := u.runGuest("first")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	held := l.Addr().(*net.TCPAddr).Port
	before := u.tree()
	for _, p := range []int{port, held} {
		r := u.run("run", "-d", "--name", "second", "--kernel", guest.Kernel, "--initrd", guest.Initrd, "-p", strconv.Itoa(p)+":80")
		want := fmt.Sprintf("host port 127.0.0.1:%d/tcp is already in use", p)
		if r.code != 2 || !strings.Contains(r.err, want) {
			t.Errorf("second vm on port %d: %v; want exit 2 and %q", p, r, want)
		}
		if after := u.tree(); after != before {
			t.Errorf("a refused run left state behind:\n%s", after)
		}
	}
	if vs := u.ps(true); len(vs) != 1 {
		t.Errorf("ps lists %d vms after refused runs, want 1", len(vs))
	}
}

// Ranges and an IPv6 loopback forward (passt); slirp refuses IPv6 clearly.
func TestPortRangesAndIPv6(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	v6 := freePort(t)
	lo := freeRange(t, 2)
	u.ok("run", "-d", "--name", "r", "--memory", "256M", "--kernel", guest.Kernel, "--initrd", guest.Initrd,
		"--append", "console=ttyS0", "-p", fmt.Sprintf("[::1]:%d:80", v6), "-p", fmt.Sprintf("%d-%d:80-81", lo, lo+1))
	waitURL(t, fmt.Sprintf("http://[::1]:%d/", v6))
	waitURL(t, fmt.Sprintf("http://127.0.0.1:%d/", lo))
	if v := u.inspect("r"); v.Network != "passt" {
		t.Errorf("an IPv6 forward without --network runs on %q, want passt", v.Network)
	}
	if ports := u.inspect("r").Ports; len(ports) != 3 || ports[2].HostPort != lo+1 || ports[2].GuestPort != 81 {
		t.Errorf("inspect ports = %+v", ports)
	}
	if _, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", lo+1)); err == nil {
		t.Errorf("host port %d of the range is not held by the vm", lo+1)
	}
	out := u.ok("port", "r")
	if !strings.Contains(out, fmt.Sprintf("80/tcp -> [::1]:%d", v6)) || !strings.Contains(out, fmt.Sprintf("81/tcp -> 127.0.0.1:%d", lo+1)) {
		t.Errorf("port r =\n%s", out)
	}
	r := u.run("run", "-d", "--network", "slirp", "--kernel", guest.Kernel, "-p", "[::1]:8080:80")
	if r.code != 2 || !strings.Contains(r.err, "slirp cannot forward IPv6") || !strings.Contains(r.err, "--network passt") {
		t.Errorf("slirp with IPv6: %v", r)
	}
}

// kill -9 of passt is reported by ps and inspect.
func TestKilledPasstIsReported(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	port := u.runGuest("p", "--network", "passt")
	waitPage(t, port)
	v := u.inspect("p")
	syscall.Kill(v.PasstPid, syscall.SIGKILL)
	if !waitFor(10*time.Second, func() bool { return strings.Contains(u.inspect("p").NetworkError, "passt") }) {
		t.Fatalf("inspect after kill -9 of passt: %+v", u.inspect("p"))
	}
	if table := u.ok("ps"); !strings.Contains(table, "no network") {
		t.Errorf("ps does not say the vm lost its network:\n%s", table)
	}
}

// The guest reaches a server on the host's loopback through the backend's
// gateway address.
func TestGuestReachesHostLoopback(t *testing.T) {
	for _, network := range []string{"passt", "slirp"} {
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			token := "host-says-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, token) })}
			go srv.Serve(l)
			defer srv.Close()
			u := newUser(t, "hutchtest2")
			u.runGuest("out", "--network", network)
			u.waitLog("out", guest.Marker)
			gw := "10.0.2.2"
			if network == "passt" {
				gw = "$(ip route | awk '/default/ {print $3}')"
			}
			guestShell(t, u, "out", fmt.Sprintf("wget -q -O- http://%s:%d/", gw, l.Addr().(*net.TCPAddr).Port), token)
		})
	}
}

// guestShell types cmd into the VM's serial console and waits for want.
func guestShell(t *testing.T, u *tUser, name, cmd, want string) {
	t.Helper()
	c, err := net.Dial("unix", u.inspect(name).RuntimeDir+"/console.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out := &syncBuffer{}
	go func() {
		r := bufio.NewReader(c)
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	c.Write([]byte(cmd + "\r"))
	if !waitFor(30*time.Second, func() bool { return strings.Count(out.String(), want) > strings.Count(cmd, want) }) {
		t.Fatalf("guest did not print %q for %q; console:\n%s", want, cmd, tail(out.String(), 2000))
	}
}

func udpEcho(t *testing.T, port int) {
	t.Helper()
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := "ping-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	buf := make([]byte, 256)
	if !waitFor(60*time.Second, func() bool {
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		return err == nil && string(buf[:n]) == msg
	}) {
		t.Fatalf("no UDP echo through 127.0.0.1:%d/udp", port)
	}
}

func waitURL(t *testing.T, url string) {
	t.Helper()
	client := http.Client{Timeout: 3 * time.Second}
	if !waitFor(bootTimeout, func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}) {
		t.Fatalf("%s did not answer within %s", url, bootTimeout)
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// freeRange finds n consecutive free TCP ports.
func freeRange(t *testing.T, n int) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		lo := freePort(t)
		ok := lo+n-1 <= 65535
		for p := lo; ok && p < lo+n; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return lo
		}
	}
	t.Fatal("no free port range")
	return 0
}

// A stream the guest sends and then closes reaches the host whole through
// the default backend. (Debian 12's passt loses the tail of such a stream,
// which is why it is not the default.)
func TestGuestStreamArrivesWhole(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	u := newUser(t, "hutchtest1")
	u.runGuest("stream")
	u.waitLog("stream", guest.Marker)
	const size = 8 << 20
	guestShell(t, u, "stream", fmt.Sprintf("dd if=/dev/zero bs=64k count=%d 2>/dev/null | nc 10.0.2.2 %d; echo sent-$((1+1))", size>>16, l.Addr().(*net.TCPAddr).Port), "sent-2")
	select {
	case n := <-got:
		if n != size {
			t.Errorf("the host received %d bytes of the guest's %d", n, size)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the guest's stream never ended")
	}
}
