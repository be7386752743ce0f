package oci

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hutch-vm/hutch/internal/console"
	"github.com/hutch-vm/hutch/test/ocitest"
)

// result is a finished command.
type result struct {
	stdout, stderr   string
	code             int
	outPath, errPath string // where a file-backed run left its output
}

func runCmd(t *testing.T, c *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	if c.Stdout == nil {
		c.Stdout = &out
	}
	c.Stderr = &errb
	err := c.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s: %v", c.Args, err)
		}
		r.code = ee.ExitCode()
	}
	return r
}

func TestPodmanRunOutputAndExitStatus(t *testing.T) {
	r := runCmd(t, podman.podman("run", "--rm", image, "sh", "-c", "echo hi; uname -r; exit 3"))
	if r.code != 3 {
		t.Fatalf("exit %d, want 3\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Fields(r.stdout)
	if len(lines) != 2 || lines[0] != "hi" || lines[1] != guestKernel {
		t.Fatalf("stdout %q, want hi and the guest kernel %s", r.stdout, guestKernel)
	}
	var u unix.Utsname
	unix.Uname(&u)
	if host := unix.ByteSliceToString(u.Release[:]); host != guestKernel && lines[1] == host {
		t.Fatalf("the container saw the host's kernel %s", host)
	}
}

// TestPodmanMissingCommand: as with runc, create finds the command, and
// Podman reports the exit status a shell gives for a missing one.
func TestPodmanMissingCommand(t *testing.T) {
	r := runCmd(t, podman.podman("run", "--rm", image, "no-such-command"))
	if r.code != 127 || !strings.Contains(r.stderr, `executable file not found in $PATH`) {
		t.Fatalf("exit %d (want 127), stderr %s", r.code, r.stderr)
	}
	// By path: missing is 127, not executable 126, as with runc.
	if r := runCmd(t, podman.podman("run", "--rm", image, "/no/such")); r.code != 127 || !strings.Contains(r.stderr, "no such file or directory") {
		t.Errorf("/no/such: exit %d (want 127), stderr %s", r.code, r.stderr)
	}
	if r := runCmd(t, podman.podman("run", "--rm", image, "/etc/passwd")); r.code != 126 || !strings.Contains(r.stderr, "permission denied") {
		t.Errorf("/etc/passwd: exit %d (want 126), stderr %s", r.code, r.stderr)
	}
}

func TestPodmanStdin(t *testing.T) {
	c := podman.podman("run", "-i", "--rm", image, "cat")
	c.Stdin = strings.NewReader("x\n")
	if r := runCmd(t, c); r.code != 0 || r.stdout != "x\n" {
		t.Fatalf("echo x | podman run -i cat: exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
}

// TestPodmanTerminal runs a shell through a real pty, as a user at a
// terminal would, and resizes the terminal while it runs.
func TestPodmanTerminal(t *testing.T) {
	master, slave, err := console.OpenPty("/dev/ptmx")
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	setSize(t, master, 30, 100)
	c := podman.podman("run", "-it", "--rm", image, "sh")
	c.Stdin, c.Stdout, c.Stderr = slave, slave, slave
	c.SysProcAttr.Setsid, c.SysProcAttr.Setctty, c.SysProcAttr.Ctty = true, true, 0
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	out := &syncBuffer{}
	go io.Copy(out, master)

	expect := func(want string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(out.String(), want) {
			if time.Now().After(deadline) {
				c.Process.Kill()
				t.Fatalf("the terminal never showed %q; it showed:\n%s", want, out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	expect("# ")
	fmt.Fprint(master, "tty; stty size\r")
	expect("/dev/pts/")
	expect("30 100")
	setSize(t, master, 40, 120)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "40 120") && time.Now().Before(deadline) {
		fmt.Fprint(master, "stty size\r")
		time.Sleep(500 * time.Millisecond)
	}
	expect("40 120")
	fmt.Fprint(master, "exit 7\r")
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
			t.Fatalf("podman run -it: %v, want exit 7; terminal:\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		c.Process.Kill()
		t.Fatalf("podman run -it did not end after exit; terminal:\n%s", out.String())
	}
}

func setSize(t *testing.T, f *os.File, rows, cols uint16) {
	if err := unix.IoctlSetWinsize(int(f.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
}

// TestPodmanDetachStopRemove also runs podman exec in the container, and
// checks who the VMM is: under rootless
// Podman it is the user's own uid on the host, with nothing more.
func TestPodmanDetachStopRemove(t *testing.T) {
	name := "hutch-oci-detach"
	runCmd(t, podman.podman("rm", "-f", name))
	r := runCmd(t, podman.podman("run", "-d", "--name", name, image, "sleep", "1000"))
	if r.code != 0 {
		t.Fatalf("podman run -d: exit %d: %s", r.code, r.stderr)
	}
	inspect := runCmd(t, podman.podman("inspect", "--format", "{{.State.Pid}}", name))
	pid, _ := strconv.Atoi(strings.TrimSpace(inspect.stdout))
	vmm := childQEMU(pid)
	if vmm == 0 {
		t.Fatalf("no VMM under the container's pid %q: %s", inspect.stdout, inspect.stderr)
	}
	// The container's pid lives in the network namespace Podman made for
	// it, which is bind-mounted in Podman's own mount namespace.
	sandbox := strings.TrimSpace(runCmd(t, podman.podman("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", name)).stdout)
	ino := runCmd(t, podman.podman("unshare", "stat", "-L", "-c", "%i", sandbox))
	if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); ino.code != 0 || link != "net:["+strings.TrimSpace(ino.stdout)+"]" {
		t.Errorf("the container's pid is in %s, not in its namespace %s (inode %q, %s)", link, sandbox, ino.stdout, ino.stderr)
	}
	st := procStatus(vmm)
	for field, want := range map[string]string{"CapEff": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"} {
		if st[field] != want {
			t.Errorf("VMM %s = %q, want %q", field, st[field], want)
		}
	}
	if uid := strings.Fields(st["Uid"]); uid[0] != fmt.Sprint(podman.UID) || uid[1] != uid[0] {
		t.Errorf("VMM Uid %q, want the user's uid %d", st["Uid"], podman.UID)
	}
	if r := runCmd(t, podman.podman("ps", "--format", "{{.Names}} {{.Status}}")); !strings.Contains(r.stdout, name+" Up") {
		t.Fatalf("podman ps does not show %s running:\n%s%s", name, r.stdout, r.stderr)
	}
	if r := runCmd(t, podman.podman("exec", name, "sh", "-c", "echo exec-out; echo exec-err >&2; exit 5")); r.code != 5 ||
		r.stdout != "exec-out\n" || !strings.Contains(r.stderr, "exec-err") {
		t.Errorf("podman exec: exit %d (want 5), stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	in := podman.podman("exec", "-i", name, "cat")
	in.Stdin = strings.NewReader("piped\n")
	if r := runCmd(t, in); r.code != 0 || r.stdout != "piped\n" {
		t.Errorf("podman exec -i cat: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// podman top reads the container's pid's /proc: that of the shim's
	// namespace, with the VM's host processes. ps(1) descriptors make it
	// run ps in the container, where the container's own are.
	if r := runCmd(t, podman.podman("top", name)); r.code != 0 || !strings.Contains(r.stdout, "qemu-system-x86_64") {
		t.Errorf("podman top: exit %d, want the VMM:\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCmd(t, podman.podman("top", name, "aux")); r.code != 0 || !strings.Contains(r.stdout, "sleep 1000") {
		t.Errorf("podman top %s aux: exit %d, want the container's sleep:\n%s%s", name, r.code, r.stdout, r.stderr)
	}
	if r := runCmd(t, podman.podman("stop", "-t", "10", name)); r.code != 0 {
		t.Fatalf("podman stop: exit %d: %s", r.code, r.stderr)
	}
	if r := runCmd(t, podman.podman("rm", name)); r.code != 0 {
		t.Fatalf("podman rm: exit %d: %s", r.code, r.stderr)
	}
	if left := podman.vmms(5 * time.Second); len(left) != 0 {
		t.Fatalf("VMMs left after podman stop and rm: %v", left)
	}
	if left := shims(); len(left) != 0 {
		t.Fatalf("hutch-runtime processes left after podman stop and rm: %v", left)
	}
}

// shims lists live hutch-runtime processes.
func shims() []string {
	var left []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(b, []byte(runtimeBin)) {
			continue
		}
		var pid int
		fmt.Sscan(e.Name(), &pid)
		if procStatus(pid) != nil {
			left = append(left, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return left
}

func TestPodmanPublish(t *testing.T) {
	name := "hutch-oci-web"
	port := freePort(t)
	runCmd(t, podman.podman("rm", "-f", name))
	r := runCmd(t, podman.podman("run", "-d", "--name", name, "-p", fmt.Sprintf("127.0.0.1:%d:80", port), image,
		"httpd", "-f", "-p", "80", "-h", "/www"))
	if r.code != 0 {
		t.Fatalf("podman run -d -p: exit %d: %s", r.code, r.stderr)
	}
	defer runCmd(t, podman.podman("rm", "-f", name))
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if body, err := pollHTTP(url, 60*time.Second); err != nil || !strings.Contains(body, ocitest.PageText) {
		t.Fatalf("GET %s: %q, %v", url, body, err)
	}
}

// pollHTTP GETs url until it answers 200 or timeout passes.
func pollHTTP(url string, timeout time.Duration) (string, error) {
	client := http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(body), nil
			}
			err = fmt.Errorf("status %s, body %q", resp.Status, body)
		}
		if time.Now().After(deadline) {
			return "", err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a buffer one goroutine writes while another reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestPodmanOutbound: the guest's traffic leaves through the container's
// network namespace (here slirp4netns's) and reaches a server on the host.
func TestPodmanOutbound(t *testing.T) {
	hostIP := outwardIP(t)
	l, err := net.Listen("tcp", net.JoinHostPort(hostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "reached the host\n")
	})}
	go srv.Serve(l)
	defer srv.Close()
	url := "http://" + l.Addr().String() + "/"
	r := runCmd(t, podman.podman("run", "--rm", image, "wget", "-q", "-O", "-", url))
	if r.code != 0 || r.stdout != "reached the host\n" {
		t.Fatalf("wget %s from the container: exit %d, stdout %q, stderr %s", url, r.code, r.stdout, r.stderr)
	}
}

// outwardIP is an address of this host that is not loopback: a container
// reaches it through its namespace's route to the outside.
func outwardIP(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Fatal("this host has no non-loopback IPv4 address for the container to reach")
	return ""
}

// TestPodmanBootTimeout: a guest whose agent does not answer within the
// configured boot_timeout fails create within that bound and leaves no
// VMM. One second is shorter than any boot to the agent, so the limit
// trips; the user's own config is what rootless hutch-runtime reads.
func TestPodmanBootTimeout(t *testing.T) {
	userConfig(t, "boot_timeout = \"1s\"\n")
	start := time.Now()
	r := runCmd(t, podman.podman("run", "--rm", image, "true"))
	took := time.Since(start)
	if r.code == 0 || !strings.Contains(r.stderr, "did not start its agent within 1s") {
		t.Errorf("podman run with boot_timeout 1s: exit %d, stderr %s; want a failure naming the limit", r.code, r.stderr)
	}
	if took > 90*time.Second {
		t.Errorf("the failed create took %s", took)
	}
	if left := podman.vmms(10 * time.Second); len(left) > 0 {
		t.Errorf("VMMs left after the failed create: %v", left)
	}
}

// userConfig writes the Podman user's hutch.toml, which rootless
// hutch-runtime reads, for the rest of the test.
func userConfig(t *testing.T, content string) {
	t.Helper()
	dir := filepath.Join(podman.Home, ".config", "hutch")
	cfg := filepath.Join(dir, "hutch.toml")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(cfg) })
}

// TestPodmanContainerConfig: the [container] keys reach the VM: the guest
// kernel sees the parameters after hutch's own, and TCG's code buffer has
// the size given.
func TestPodmanContainerConfig(t *testing.T) {
	userConfig(t, "[container]\ntcg_tb_size = 1\n")
	if r := runCmd(t, podman.podman("run", "--rm", image, "true")); r.code == 0 || !strings.Contains(r.stderr, "[container] tcg_tb_size = 1: give the code buffer in MiB, from 4 to 1024") {
		t.Errorf("podman run with tcg_tb_size = 1: exit %d, stderr %s; want a failure naming the key", r.code, r.stderr)
	}
	userConfig(t, "[container]\nkernel_params = \"hutch.test=yes quiet\"\ntcg_tb_size = 24\n")
	name := "hutch-oci-config"
	runCmd(t, podman.podman("rm", "-f", name))
	t.Cleanup(func() { runCmd(t, podman.podman("rm", "-f", "-t", "0", name)) })
	if r := runCmd(t, podman.podman("run", "-d", "--name", name, image, "sleep", "1000")); r.code != 0 {
		t.Fatalf("podman run -d: exit %d: %s", r.code, r.stderr)
	}
	r := runCmd(t, podman.podman("exec", name, "cat", "/proc/cmdline"))
	if r.code != 0 || !strings.HasSuffix(strings.TrimSpace(r.stdout), "initcall_blacklist=tracer_init_tracefs hutch.test=yes quiet") {
		t.Errorf("the guest's command line %q (exit %d, %s); want it to end with the configured parameters", r.stdout, r.code, r.stderr)
	}
	inspect := runCmd(t, podman.podman("inspect", "--format", "{{.State.Pid}}", name))
	pid, _ := strconv.Atoi(strings.TrimSpace(inspect.stdout))
	vmm := childQEMU(pid)
	if vmm == 0 {
		t.Fatalf("no VMM under the container's pid %q: %s", inspect.stdout, inspect.stderr)
	}
	// Under KVM there is no code buffer to size.
	if got, want := vmmAccel(vmm), "tcg,tb-size=24"; got != want && got != "kvm" {
		t.Errorf("VMM -accel %q, want %s under TCG", got, want)
	}
}

// TestPodmanNetworkNone: a container with no network has a VM with no NIC,
// as runc's has only loopback.
func TestPodmanNetworkNone(t *testing.T) {
	r := runCmd(t, podman.podman("run", "--rm", "--network", "none", image, "ls", "/sys/class/net"))
	if r.code != 0 || r.stdout != "lo\n" {
		t.Errorf("--network none: exit %d, interfaces %q (want only lo), stderr %s", r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, podman.podman("run", "--rm", image, "ls", "/sys/class/net"))
	if r.code != 0 || !strings.Contains(r.stdout, "eth0") {
		t.Errorf("default network: exit %d, interfaces %q (want eth0), stderr %s", r.code, r.stdout, r.stderr)
	}
}

// TestPodmanPublishUDP: -p .../udp reaches a UDP server in the container,
// as TCP ports do.
func TestPodmanPublishUDP(t *testing.T) {
	name := "hutch-oci-udp"
	port := freePort(t)
	runCmd(t, podman.podman("rm", "-f", name))
	r := runCmd(t, podman.podman("run", "-d", "--name", name, "-v", toolsDir+":/tools:ro",
		"-p", fmt.Sprintf("127.0.0.1:%d:7/udp", port), image, "/tools/udpecho"))
	if r.code != 0 {
		t.Fatalf("podman run -d -p udp: exit %d: %s", r.code, r.stderr)
	}
	defer runCmd(t, podman.podman("rm", "-f", "-t", "0", name))
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	deadline := time.Now().Add(60 * time.Second)
	for {
		c.Write([]byte("ping-42"))
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "ping-42" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no UDP echo through -p 127.0.0.1:%d:7/udp within a minute", port)
		}
	}
}

// TestPodmanPID1: the container's process is PID 1 of a PID namespace of
// its own in the guest, as under runc, so signals behave as they do
// there. PID 1 ignores a signal it has no handler for, from inside (`kill
// -9 $$` leaves the shell running) and from the engine (`podman stop`
// waits its timeout, then kills). Each case is run with runc side by side.
func TestPodmanPID1(t *testing.T) {
	script := `echo pid=$$; kill -9 $$; echo alive; hostname; ls /proc | grep -c '^[0-9]'`
	var want result
	for _, rt := range []string{"runc", runtimeBin} {
		r := runCmd(t, podman.Podman(rt, "run", "--rm", "--hostname", "pid1-test", image, "sh", "-c", script))
		if rt == "runc" {
			want = r
			if r.code != 0 || !strings.HasPrefix(r.stdout, "pid=1\nalive\npid1-test\n") {
				t.Fatalf("runc, the reference: exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
			}
			continue
		}
		if r.code != want.code || r.stdout != want.stdout {
			t.Errorf("sh -c %q: exit %d, stdout %q; runc: exit %d, stdout %q (stderr %s)", script, r.code, r.stdout, want.code, want.stdout, r.stderr)
		}
	}

	const timeout = 4
	for _, rt := range []string{"runc", runtimeBin} {
		name := "hutch-oci-pid1"
		runCmd(t, podman.Podman(rt, "rm", "-f", name))
		if r := runCmd(t, podman.Podman(rt, "run", "-d", "--name", name, image, "sh", "-c", "while :; do sleep 1; done")); r.code != 0 {
			t.Fatalf("%s: podman run -d: exit %d: %s", rt, r.code, r.stderr)
		}
		start := time.Now()
		r := runCmd(t, podman.Podman(rt, "stop", "-t", strconv.Itoa(timeout), name))
		took := time.Since(start)
		status := strings.TrimSpace(runCmd(t, podman.Podman(rt, "inspect", "--format", "{{.State.ExitCode}}", name)).stdout)
		runCmd(t, podman.Podman(rt, "rm", "-f", name))
		if r.code != 0 || took < timeout*time.Second || status != "137" {
			t.Errorf("%s: podman stop -t %d of a shell: exit %d after %s, container status %s; want the timeout waited and 137 (stderr %s)",
				rt, timeout, r.code, took.Round(100*time.Millisecond), status, r.stderr)
		}
	}
	if left := podman.vmms(5 * time.Second); len(left) != 0 {
		t.Fatalf("VMMs left: %v", left)
	}
}
