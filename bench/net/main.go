// Command net measures TCP throughput through a VM's forwarded port, for
// each user-mode backend, against a direct loopback transfer on the host
// as the ceiling. It runs hutch as an unprivileged user and drives the
// test guest through its serial console.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type guestFiles struct{ Kernel, Initrd string }

var (
	hutch   = flag.String("hutch", "bin/hutch", "the hutch binary")
	guestJS = flag.String("guest", "", "JSON from test/buildguest")
	uname   = flag.String("user", "hutchbench", "unprivileged user to run hutch as")
	runs    = flag.Int("runs", 5, "transfers per backend and direction")
	sizeMiB = flag.Int("size", 1024, "MiB per transfer")
	out     = flag.String("out", "", "write the markdown report here (default stdout)")
	only    = flag.String("backends", "passt,slirp", "backends to measure")
)

func main() {
	flag.Parse()
	var g guestFiles
	if err := json.Unmarshal([]byte(*guestJS), &g); err != nil {
		fatalf("-guest: %v", err)
	}
	u, err := user.Lookup(*uname)
	if err != nil {
		fatalf("user %s: %v (bench/run.sh creates it)", *uname, err)
	}
	env, err := userEnv(u)
	if err != nil {
		fatalf("%v", err)
	}
	size := int64(*sizeMiB) << 20
	results := map[string][]float64{}
	order := []string{"loopback", "passt host->guest", "passt guest->host", "slirp host->guest", "slirp guest->host"}
	for i := 0; i < *runs; i++ {
		results["loopback"] = append(results["loopback"], loopback(size))
	}
	for _, backend := range strings.Split(*only, ",") {
		vm := startVM(u, env, g, backend)
		for i := 0; i < *runs; i++ {
			results[backend+" host->guest"] = append(results[backend+" host->guest"], vm.hostToGuest(size))
			results[backend+" guest->host"] = append(results[backend+" guest->host"], vm.guestToHost(size))
		}
		vm.stop()
	}
	w := os.Stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			fatalf("%v", err)
		}
		defer f.Close()
		w = f
	}
	ceiling := median(results["loopback"])
	fmt.Fprintf(w, "| path | median MB/s | min | max | ratio to loopback |\n|---|---|---|---|---|\n")
	for _, k := range order {
		r := results[k]
		fmt.Fprintf(w, "| %s | %.1f | %.1f | %.1f | %.4f |\n", k, median(r), slices.Min(r), slices.Max(r), median(r)/ceiling)
	}
	for _, backend := range strings.Split(*only, ",") {
		fmt.Fprintf(w, "\n%s: %d of %d guest->host transfers arrived short.\n", backend, lost["bench-"+backend], *runs)
	}
}

func userEnv(u *user.User) ([]string, error) {
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	run, err := os.MkdirTemp("", "hutch-bench-run-")
	if err != nil {
		return nil, err
	}
	data, err := os.MkdirTemp("", "hutch-bench-data-")
	if err != nil {
		return nil, err
	}
	for _, d := range []string{run, data} {
		os.Chown(d, uid, gid)
	}
	return []string{"HOME=" + u.HomeDir, "PATH=/usr/local/bin:/usr/bin:/bin", "XDG_RUNTIME_DIR=" + run, "XDG_DATA_HOME=" + data}, nil
}

func asUser(u *user.User, env []string, args ...string) ([]byte, error) {
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	c := exec.Command(*hutch, args...)
	c.Env = env
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	return c.Output()
}

type vm struct {
	u       *user.User
	env     []string
	name    string
	fwd     int // host port forwarded to guest port 5001
	gateway string
	console net.Conn
	lines   chan string
}

func startVM(u *user.User, env []string, g guestFiles, backend string) *vm {
	v := &vm{u: u, env: env, name: "bench-" + backend, fwd: freePort()}
	started = append(started, v)
	if _, err := asUser(u, env, "run", "-d", "--name", v.name, "--memory", "512M", "--network", backend,
		"--kernel", g.Kernel, "--initrd", g.Initrd, "--append", "console=ttyS0",
		"-p", fmt.Sprintf("127.0.0.1:%d:5001", v.fwd)); err != nil {
		fatalf("run %s: %v", v.name, err)
	}
	js, err := asUser(u, env, "inspect", v.name)
	if err != nil {
		fatalf("%v", err)
	}
	var insp struct{ RuntimeDir string }
	json.Unmarshal(js, &insp)
	if v.console, err = net.Dial("unix", insp.RuntimeDir+"/console.sock"); err != nil {
		fatalf("%v", err)
	}
	v.lines = make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(v.console)
		for sc.Scan() {
			v.lines <- strings.TrimSpace(sc.Text())
		}
		close(v.lines)
	}()
	v.gateway = "10.0.2.2"
	if backend == "passt" {
		v.gateway = "$(ip route | awk '/default/ {print $3}')"
	}
	// Wait for the shell: answer a computed token.
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		v.send("echo ready-$((20+22))")
		if v.waitLine(func(l string) bool { return strings.HasSuffix(l, "ready-42") }, 3*time.Second) != "" {
			return v
		}
	}
	fatalf("%s: no shell on the console", v.name)
	return nil
}

func (v *vm) send(cmd string) { v.console.Write([]byte(cmd + "\r")) }

func (v *vm) waitLine(match func(string) bool, timeout time.Duration) string {
	t := time.After(timeout)
	for {
		select {
		case l, ok := <-v.lines:
			if !ok {
				fatalf("%s: console closed", v.name)
			}
			if match(l) {
				return l
			}
		case <-t:
			return ""
		}
	}
}

// hostToGuest sends size bytes into the forwarded port; the guest counts
// them and prints the count, which ends the measurement.
func (v *vm) hostToGuest(size int64) float64 {
	want := strconv.FormatInt(size, 10)
	v.send("nc -l -p 5001 | wc -c")
	time.Sleep(500 * time.Millisecond)
	var c net.Conn
	var err error
	for i := 0; i < 50; i++ {
		if c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", v.fwd)); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		fatalf("%s: connect: %v", v.name, err)
	}
	start := time.Now()
	if _, err := io.CopyN(c, zero{}, size); err != nil {
		fatalf("%s: send: %v", v.name, err)
	}
	c.Close()
	if v.waitLine(func(l string) bool { return l == want }, 10*time.Minute) == "" {
		fatalf("%s: guest never counted %s bytes", v.name, want)
	}
	return mbps(size, time.Since(start))
}

// guestToHost has the guest send size bytes to a listener on the host's
// loopback, through the backend's gateway address.
func (v *vm) guestToHost(size int64) float64 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("%v", err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	v.send(fmt.Sprintf("dd if=/dev/zero bs=1M count=%d 2>/dev/null | nc %s %d", size>>20, v.gateway, port))
	c, err := l.Accept()
	if err != nil {
		fatalf("%v", err)
	}
	defer c.Close()
	start := time.Now()
	n, _ := io.Copy(io.Discard, c)
	d := time.Since(start)
	if n != size {
		// Report the loss and count only what arrived.
		log.Printf("%s: received %d bytes, want %d", v.name, n, size)
		lost[v.name]++
	}
	return mbps(n, d)
}

func (v *vm) stop() {
	v.console.Close()
	asUser(v.u, v.env, "rm", "-f", v.name)
}

func loopback(size int64) float64 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("%v", err)
	}
	defer l.Close()
	done := make(chan time.Duration)
	go func() {
		c, _ := l.Accept()
		start := time.Now()
		io.Copy(io.Discard, c)
		done <- time.Since(start)
	}()
	c, _ := net.Dial("tcp", l.Addr().String())
	io.CopyN(c, zero{}, size)
	c.Close()
	return mbps(size, <-done)
}

// started are the VMs to remove if the benchmark dies midway.
var started []*vm

// fatalf removes what the benchmark started, then exits: a failed run
// must not leave VMs eating the CPU of the next one.
func fatalf(format string, a ...any) {
	for _, v := range started {
		asUser(v.u, v.env, "rm", "-f", v.name)
	}
	log.Fatalf(format, a...)
}

// lost counts, per VM, guest->host transfers that arrived short.
var lost = map[string]int{}

type zero struct{}

func (zero) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

func freePort() int {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
