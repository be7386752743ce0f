package testguest

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/test/testproc"
)

// bootDeadline bounds each boot from exec to Marker. Under TCG this guest
// needs about 3 s; the margin is for loaded CI machines.
const bootDeadline = 60 * time.Second

// microvm is not booted here: under TCG its guest can fail to calibrate
// the TSC against the PIT on a busy host and hang ("tsc: Marking TSC
// unstable due to could not calculate TSC khz"), even with -icount; hutch
// uses q35 under TCG for that reason (see docs/architecture.md).

func TestBuild(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	g, err := Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	if g.Marker != Marker {
		t.Errorf("Marker %q, want %q", g.Marker, Marker)
	}
	for _, p := range []string{dir, g.Kernel, g.Initrd, g.DiskImage} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o644)
		if st.IsDir() {
			want = 0o755
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %o, want %o", p, st.Mode().Perm(), want)
		}
		if !st.IsDir() && st.Size() == 0 {
			t.Errorf("%s is empty", p)
		}
		if !strings.HasPrefix(p, dir) {
			t.Errorf("%s is outside the cache dir %s", p, dir)
		}
	}
	out, err := testproc.Command("qemu-img", "info", g.DiskImage).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "file format: qcow2") {
		t.Errorf("qemu-img info %s: %v\n%s", g.DiskImage, err, out)
	}

	// A second build reuses everything.
	before := inodes(t, g)
	g2, err := Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	if g2 != g {
		t.Errorf("second build returned %+v, want %+v", g2, g)
	}
	if after := inodes(t, g); after != before {
		t.Errorf("second build replaced artefacts: %v -> %v", before, after)
	}

	// A stamp that does not match the inputs causes a rebuild, which also
	// clears what an interrupted build left behind.
	for _, p := range []string{".disk-123", ".initrd.gz.tmp-456"} {
		if err := os.WriteFile(filepath.Join(dir, p), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "stamp"), []byte("stale\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(dir); err != nil {
		t.Fatal(err)
	}
	if after := inodes(t, g); after == before {
		t.Error("stale stamp: artefacts were not rebuilt")
	}
	for _, p := range []string{".disk-123", ".initrd.gz.tmp-456"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("leftover %s not removed", p)
		}
	}
}

func inodes(t *testing.T, g Guest) [3]uint64 {
	t.Helper()
	var ino [3]uint64
	for i, p := range []string{g.Kernel, g.Initrd, g.DiskImage} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		ino[i] = st.Sys().(*syscall.Stat_t).Ino
	}
	return ino
}

func TestBuildConcurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Build(dir)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got, want := strings.Join(names, " "), ".lock disk.qcow2 initrd.gz stamp vmlinuz"; got != want {
		t.Errorf("cache dir holds %q, want %q (temporary files left behind?)", got, want)
	}
}

func TestBootQ35Kernel(t *testing.T) {
	g := buildForBoot(t)
	httpPort, echoPort := freePort(t), freePort(t)
	vm := startVM(t, "-M", "q35",
		"-kernel", g.Kernel, "-initrd", g.Initrd, "-append", "console=ttyS0",
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:%d,hostfwd=tcp:127.0.0.1:%d-:%d", httpPort, HTTPPort, echoPort, EchoPort),
		"-device", "virtio-net-pci,netdev=n0")
	t.Logf("q35 from kernel: marker %.2fs after exec", vm.waitMarker(t).Seconds())
	checkHTTP(t, httpPort)
	checkEcho(t, echoPort)
	vm.run(t, "readlink -f /sys/class/net/eth0/device", "/pci0000:00/")
	// Longer than 80 columns: the console must not wrap typed commands.
	vm.run(t, "echo "+strings.Repeat("x", 100)+" long-$((1+1))", "long-2")
	vm.poweroffFromShell(t)
}

func TestBootQ35Disk(t *testing.T) {
	g := buildForBoot(t)
	sum := fileSum(t, g.DiskImage)
	httpPort, echoPort := freePort(t), freePort(t)
	vm := startVM(t, "-M", "q35",
		// snapshot=on keeps writes in a temporary overlay: the cached image
		// is shared by every test and must never change.
		"-drive", "file="+g.DiskImage+",format=qcow2,if=none,id=d0,snapshot=on",
		"-device", "virtio-blk-pci,drive=d0",
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:%d,hostfwd=tcp:127.0.0.1:%d-:%d", httpPort, HTTPPort, echoPort, EchoPort),
		"-device", "virtio-net-pci,netdev=n0")
	t.Logf("q35 from disk: marker %.2fs after exec", vm.waitMarker(t).Seconds())
	checkHTTP(t, httpPort)
	checkEcho(t, echoPort)
	vm.run(t, "readlink -f /sys/class/net/eth0/device", "/pci0000:00/")
	vm.run(t, "cat /sys/block/vda/size", "131072") // 64 MiB in sectors: the boot disk is visible
	vm.poweroffFromShell(t)
	if fileSum(t, g.DiskImage) != sum {
		t.Error("booting changed the cached disk image")
	}
}

// TestPoweroffArg boots with PoweroffArg: the guest prints Marker and powers
// off, and QEMU must exit by itself.
func TestPoweroffArg(t *testing.T) {
	g := buildForBoot(t)
	vm := startVM(t, "-M", "q35", "-kernel", g.Kernel, "-initrd", g.Initrd, "-append", "console=ttyS0 "+PoweroffArg)
	vm.waitMarker(t)
	vm.waitExit(t, 30*time.Second)
}

func buildForBoot(t *testing.T) Guest {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatalf("qemu-system-x86_64 not found (apt-get install qemu-system-x86): %v", err)
	}
	g, err := Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return g
}

type vm struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	start time.Time
	done  chan struct{} // closed when QEMU has exited
	err   error         // QEMU's exit status, valid after done

	mu  sync.Mutex
	out bytes.Buffer // serial console and QEMU's own messages
}

// startVM runs QEMU under TCG with the serial console on stdio. QEMU is
// killed when the test ends.
func startVM(t *testing.T, args ...string) *vm {
	t.Helper()
	base := []string{"-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none",
		"-m", "256", "-serial", "stdio"}
	cmd := testproc.Command("qemu-system-x86_64", append(base, args...)...)
	v := &vm{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout = (*vmWriter)(v)
	cmd.Stderr = (*vmWriter)(v)
	var err error
	if v.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	v.start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start QEMU: %v", err)
	}
	go func() {
		v.err = cmd.Wait()
		close(v.done)
	}()
	t.Cleanup(func() {
		select {
		case <-v.done:
		default:
			cmd.Process.Kill()
			<-v.done
		}
		if t.Failed() {
			t.Logf("QEMU %s\n--- console ---\n%s", strings.Join(cmd.Args[1:], " "), v.output())
		}
	})
	return v
}

type vmWriter vm

func (w *vmWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.Write(p)
}

func (v *vm) output() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.out.String()
}

// waitFor waits until the console output from offset from on matches re,
// and returns the offset just past the match.
func (v *vm) waitFor(t *testing.T, from int, re *regexp.Regexp, timeout time.Duration) int {
	t.Helper()
	deadline := time.After(timeout)
	for {
		out := v.output()
		if loc := re.FindStringIndex(out[from:]); loc != nil {
			return from + loc[1]
		}
		select {
		case <-v.done:
			if loc := re.FindStringIndex(v.output()[from:]); loc != nil {
				return from + loc[1]
			}
			t.Fatalf("QEMU exited (%v) before the console showed %q", v.err, re)
		case <-deadline:
			t.Fatalf("console did not show %q within %v", re, timeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var markerRE = regexp.MustCompile(`(?m)^` + Marker + `\r?$`)

// waitMarker waits for Marker on a line of its own and returns the time
// since QEMU was started.
func (v *vm) waitMarker(t *testing.T) time.Duration {
	t.Helper()
	v.waitFor(t, 0, markerRE, bootDeadline)
	return time.Since(v.start)
}

// run types cmd into the console shell and waits for want in its output.
// Busybox's line editor follows the prompt with a cursor position query
// (ESC [6n), so the prompt is matched as a prefix only.
func (v *vm) run(t *testing.T, cmd, want string) {
	t.Helper()
	v.waitFor(t, 0, regexp.MustCompile(regexp.QuoteMeta(Prompt)), 30*time.Second)
	off := len(v.output())
	if _, err := io.WriteString(v.stdin, cmd+"\n"); err != nil {
		t.Fatalf("type into console: %v", err)
	}
	// Skip the echoed command line before looking for the answer.
	off = v.waitFor(t, off, regexp.MustCompile(regexp.QuoteMeta(cmd)+`\r?\n`), 30*time.Second)
	v.waitFor(t, off, regexp.MustCompile(regexp.QuoteMeta(want)), 30*time.Second)
}

func (v *vm) poweroffFromShell(t *testing.T) {
	t.Helper()
	v.run(t, "echo hutch-$((40+2))", "hutch-42")
	if _, err := io.WriteString(v.stdin, "poweroff -f\n"); err != nil {
		t.Fatalf("type into console: %v", err)
	}
	v.waitExit(t, 30*time.Second)
}

func (v *vm) waitExit(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-v.done:
		if v.err != nil {
			t.Errorf("QEMU exited with %v after poweroff", v.err)
		}
	case <-time.After(timeout):
		t.Fatalf("QEMU still running %v after the guest powered off", timeout)
	}
}

func checkHTTP(t *testing.T, port int) {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	client := &http.Client{Timeout: 5 * time.Second}
	var lastErr error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := client.Get(url)
		if err != nil {
			lastErr = err
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			lastErr = err
			continue
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), PageText) {
			t.Fatalf("GET %s: %s %q, want 200 with %q", url, resp.Status, body, PageText)
		}
		return
	}
	t.Fatalf("GET %s: %v", url, lastErr)
}

func checkEcho(t *testing.T, port int) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var lastErr error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		got, err := echoOnce(addr, "ping hutch\n")
		if err != nil {
			lastErr = err
			continue
		}
		if got != "ping hutch\n" {
			t.Fatalf("echo via %s returned %q", addr, got)
		}
		return
	}
	t.Fatalf("echo via %s: %v", addr, lastErr)
}

func echoOnce(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return "", err
	}
	return string(buf), nil
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}
