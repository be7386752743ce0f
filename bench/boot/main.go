// Command boot measures how long the test guest takes from the command
// that starts it to its web page answering through a forwarded port, when
// started by `hutch run -d`, by the equivalent raw qemu-system-x86_64
// command line and by libvirt's session mode (virsh create, with its
// daemon running and not), interleaved. It also measures how long the
// commands take to return, the time hutch spends before QEMU starts and
// after it exits, the resident memory of hutch's supervisor, of QEMU and
// of the whole VM, teardown, and N VMs started at once (density), and
// writes the results into docs/benchmarks.md.
//
// It runs as root and starts everything as an unprivileged user, with a
// fresh XDG_RUNTIME_DIR and XDG_DATA_HOME for every hutch run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hutch-vm/hutch/test/testguest"
)

// Fixed shape of the VM, the same for both sides.
const (
	memory    = "256M"
	cpus      = "1"
	appendArg = "console=ttyS0"
	guestPort = testguest.HTTPPort
)

// Polling: a new request every pollEvery, each allowed attemptTimeout, so
// a request stuck on a guest that is not up yet does not coarsen the clock.
const (
	pollEvery      = 20 * time.Millisecond
	attemptTimeout = 500 * time.Millisecond
	bootLimit      = 120 * time.Second
	portFreeLimit  = 30 * time.Second
)

type config struct {
	runs      int
	hutch     string
	userName  string
	guest     string
	out       string
	basePort  int
	keep      bool
	retries   int
	quietWait time.Duration
	// maxDisturbed is how many times a boot that other processes disturbed
	// is done again; on a host that stays busy, a small number keeps the
	// run's length bounded.
	maxDisturbed int
	libvirt      bool
	density      int
	densMem      string
}

func main() {
	var c config
	flag.IntVar(&c.runs, "runs", 7, "measured boots of each side (rounds)")
	flag.StringVar(&c.hutch, "hutch", "bin/hutch", "hutch binary to measure")
	flag.StringVar(&c.userName, "user", "hutchtest1", "unprivileged user that runs the VMs")
	flag.StringVar(&c.guest, "guest", "", "JSON printed by go run ./test/buildguest (required)")
	flag.StringVar(&c.out, "out", "docs/benchmarks.md", "markdown file whose marked results section is (re)written; empty: print only")
	flag.IntVar(&c.basePort, "port", 18400, "first host port; every boot uses its own")
	flag.BoolVar(&c.keep, "keep", false, "keep the scratch directory (logs, console output) for inspection")
	flag.IntVar(&c.retries, "retries", 2, "times a failed boot is retried before giving up")
	flag.IntVar(&c.maxDisturbed, "max-disturbed", 5, "times a boot disturbed by other processes is done again")
	flag.BoolVar(&c.libvirt, "libvirt", true, "also boot the guest with libvirt's session mode (virsh create), warm and cold")
	flag.IntVar(&c.density, "density", 20, "VMs started at once by concurrent hutch run -d in the density test; 0 skips it")
	flag.StringVar(&c.densMem, "density-memory", "128M", "memory of each VM in the density test")
	flag.DurationVar(&c.quietWait, "quiet-wait", 5*time.Minute, "how long to wait for other processes to leave the CPUs idle before each boot")
	flag.Parse()
	if c.guest == "" || c.runs < 1 || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: boot -guest GUEST.json [-runs N] [-hutch PATH] [-user NAME] [-out FILE] [-port N] [-keep]")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fatal(errors.New("run as root: the VMs are started as -user, which needs root"))
	}
	b, err := newBench(c)
	if err != nil {
		fatal(err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "\ninterrupted: cleaning up")
		b.cleanup()
		os.Exit(130)
	}()
	res, err := b.run()
	b.cleanup()
	if err != nil {
		fatal(err)
	}
	md := res.markdown()
	fmt.Print(md)
	if c.out != "" {
		if err := writeSection(c.out, md); err != nil {
			fatal(err)
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", c.out)
	}
	if !res.pass() {
		fmt.Fprintln(os.Stderr, "boot: a target was missed (see the results)")
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "boot:", err)
	os.Exit(1)
}

// bench holds what every boot shares.
type bench struct {
	config
	guestFiles testguest.Guest
	uid, gid   int
	groups     []uint32
	home       string
	scratch    string // root of every boot's directories
	hutchBin   string // copy of the binary, reachable by the user
	next       int    // next port offset
	// rawTemplate is the raw QEMU argv with placeholders for port and serial file.
	rawTemplate []string
	// What cleanup must end if the driver stops early.
	liveVM      map[string]*hutchEnv
	liveRaw     map[int]*exec.Cmd
	liveDomains map[string]*libvirtSession
	lv          *libvirtSession // nil without -libvirt
}

func newBench(c config) (*bench, error) {
	b := &bench{config: c, liveVM: map[string]*hutchEnv{}, liveRaw: map[int]*exec.Cmd{}, liveDomains: map[string]*libvirtSession{}}
	gj, err := os.ReadFile(c.guest)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(gj, &b.guestFiles); err != nil {
		return nil, fmt.Errorf("%s: %w", c.guest, err)
	}
	if b.guestFiles.Kernel == "" || b.guestFiles.Initrd == "" {
		return nil, fmt.Errorf("%s names no kernel or initrd", c.guest)
	}
	u, err := user.Lookup(c.userName)
	if err != nil {
		return nil, fmt.Errorf("user %s: %w (create it, e.g. useradd -m %s)", c.userName, err, c.userName)
	}
	b.uid, _ = strconv.Atoi(u.Uid)
	b.gid, _ = strconv.Atoi(u.Gid)
	b.home = u.HomeDir
	gids, _ := u.GroupIds()
	for _, g := range gids {
		if n, err := strconv.Atoi(g); err == nil {
			b.groups = append(b.groups, uint32(n))
		}
	}
	// Short: the VMs' unix sockets live below it.
	if b.scratch, err = os.MkdirTemp("/tmp", "hb."); err != nil {
		return nil, err
	}
	if err := os.Chmod(b.scratch, 0o755); err != nil {
		return nil, err
	}
	b.hutchBin = filepath.Join(b.scratch, "hutch")
	if err := copyFile(c.hutch, b.hutchBin, 0o755); err != nil {
		return nil, fmt.Errorf("copy hutch binary: %w", err)
	}
	if c.libvirt {
		if b.lv, err = b.newLibvirt(); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *bench) cleanup() {
	for name, h := range b.liveVM {
		h.hutch("rm", "-f", name)
	}
	for _, c := range b.liveRaw {
		c.Process.Kill()
	}
	if b.lv != nil {
		var doms []string
		for d := range b.liveDomains {
			doms = append(doms, d)
		}
		if err := b.lv.cleanup(doms); err != nil {
			fmt.Fprintln(os.Stderr, "boot: libvirt cleanup:", err)
		}
	}
	if !b.keep {
		os.RemoveAll(b.scratch)
	} else {
		fmt.Fprintf(os.Stderr, "kept %s\n", b.scratch)
	}
}

// env is the environment both sides run with.
func (b *bench) env(extra ...string) []string {
	return append([]string{"HOME=" + b.home, "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C"}, extra...)
}

func (b *bench) cred() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(b.uid), Gid: uint32(b.gid), Groups: b.groups}}
}

// userDir makes a directory owned by the user, mode 0700.
func (b *bench) userDir(path string) error {
	if err := os.Mkdir(path, 0o700); err != nil {
		return err
	}
	return os.Chown(path, b.uid, b.gid)
}

func (b *bench) port() int {
	p := b.basePort + b.next
	b.next++
	return p
}

// side is one way of booting the guest.
type side struct {
	key   string // short tag: h, r, w, c
	label string
	boot  func(tag string) (measurement, error)
	dst   *[]measurement
}

// run does an unmeasured warm-up boot of each side, derives the raw
// command line from what hutch ran, then the measured rounds, the order of
// the sides rotating from round to round, then the extra parts.
func (b *bench) run() (*results, error) {
	res := &results{runs: b.runs, maxDisturbed: b.maxDisturbed, quietWait: b.quietWait, started: time.Now()}
	res.machine = machineInfo(b)
	fmt.Fprintf(os.Stderr, "warm-up: hutch\n")
	warm, err := b.attempt("warm-hutch", b.hutchBoot("slirp"), res)
	if err != nil {
		return nil, err
	}
	res.hutchArgv = warm.hutchArgv
	res.vmmArgv = warm.vmmArgv
	res.accel = warm.accel
	if b.rawTemplate, err = rawFromHutch(warm.vmmArgv, b.guestFiles.Kernel, b.guestFiles.Initrd); err != nil {
		return nil, err
	}
	res.rawArgv = b.rawArgv(portPlaceholder, "serial.log")
	sides := []side{
		{"h", "hutch", b.hutchBoot("slirp"), &res.hutch},
		{"r", "raw", b.rawRun, &res.raw},
	}
	if b.lv != nil {
		netdev, device, err := netArgs(b.rawTemplate)
		if err != nil {
			return nil, err
		}
		mem, _ := strconv.Atoi(strings.TrimSuffix(memory, "M"))
		res.domainXML = domainXML("NAME", mem, b.guestFiles.Kernel, b.guestFiles.Initrd, appendArg, "SERIAL", netdev, device)
		sides = append(sides,
			side{"w", "libvirt warm", b.lv.libvirtBoot(false), &res.lvWarm},
			side{"c", "libvirt cold", b.lv.libvirtBoot(true), &res.lvCold})
	}
	// The hutch warm-up is done; one for each other side (for libvirt,
	// its first run also fills its QEMU capabilities cache).
	for _, s := range sides[1:] {
		fmt.Fprintf(os.Stderr, "warm-up: %s\n", s.label)
		if _, err := b.attempt("warm-"+s.key, s.boot, res); err != nil {
			return nil, err
		}
	}
	for i := 1; i <= b.runs; i++ {
		var order []string
		for j := range sides {
			s := sides[(i-1+j)%len(sides)]
			order = append(order, s.key)
			m, err := b.attempt(fmt.Sprintf("%s%d", s.key, i), s.boot, res)
			if err != nil {
				return nil, err
			}
			*s.dst = append(*s.dst, m)
			fmt.Fprintf(os.Stderr, "round %d %-12s page %.3fs (qemu at %.3fs), returned %.3fs, qemu %.1f MiB, vm %.1f MiB, teardown %.3fs, other load %.2f\n",
				i, s.label+":", m.page.Seconds(), m.vmmExec.Seconds(), m.returned.Seconds(), mib(m.vmmRSS.rss), mib(m.vmRSS), m.teardown.Seconds(), m.others)
		}
		res.order = append(res.order, strings.Join(order, " "))
	}
	// Whole-VM memory with passt, which the slirp boots above do not run.
	fmt.Fprintf(os.Stderr, "one boot with --network passt, for its memory\n")
	if m, err := b.attempt("passt", b.hutchBoot("passt"), res); err != nil {
		res.passtErr = err.Error()
	} else {
		res.passt = &m
	}
	if b.lv != nil {
		// Its daemons are the bench user's processes too: end them before
		// the density test counts what is left.
		if err := b.lv.stopDaemons(); err != nil {
			return nil, err
		}
	}
	if b.density > 0 {
		d, err := b.densityRun()
		if err != nil {
			return nil, err
		}
		res.density = d
	}
	res.finished = time.Now()
	return res, nil
}

// A boot during which other processes kept more than maxOthers CPUs busy
// is done again, up to -max-disturbed times; then it is kept as it is.
const maxOthers = 0.2

// attempt runs one boot, retrying a failure (on a shared host something
// else may kill a VM) or a boot that other processes disturbed, and notes
// both in the results.
func (b *bench) attempt(tag string, boot func(string) (measurement, error), res *results) (measurement, error) {
	disturbed, failed := 0, 0
	for try := 0; ; try++ {
		t := tag
		if try > 0 {
			t = fmt.Sprintf("%s-again%d", tag, try)
		}
		waitQuiet(b.quietWait)
		m, err := boot(t)
		if err == nil && m.others > maxOthers && disturbed < b.maxDisturbed {
			disturbed++
			fmt.Fprintf(os.Stderr, "boot %s disturbed: other processes used %.2f CPUs during it; booting again\n", t, m.others)
			res.disturbed = append(res.disturbed, fmt.Sprintf("%s (%.2f CPUs)", t, m.others))
			continue
		}
		if err == nil {
			return m, nil
		}
		fmt.Fprintf(os.Stderr, "boot %s failed: %v\n", t, err)
		res.failures = append(res.failures, fmt.Sprintf("%s: %v", t, err))
		if failed++; failed > b.retries {
			return m, fmt.Errorf("boot %s: %w", tag, err)
		}
	}
}

// measurement is one boot.
type measurement struct {
	page      time.Duration // exec of the command to the first 200
	vmmExec   time.Duration // exec of the command to QEMU's start, ±5 ms (clock ticks)
	returned  time.Duration // exec to hutch run -d exiting (hutch only)
	teardown  time.Duration
	superRSS  memUse // hutch only
	vmmRSS    memUse
	vmRSS     int           // KiB: hutch's supervisor, QEMU and passt; QEMU alone otherwise
	daemonRSS int           // KiB: libvirt's session daemons
	postExit  time.Duration // QEMU's exit to hutch rm returning (hutch only)
	others    float64       // CPUs other processes kept busy during the boot
	vmmCPU    time.Duration // CPU time QEMU used, start to page
	superCPU  time.Duration // CPU time the supervisor used, start to page (hutch only)
	hutchArgv []string
	vmmArgv   []string
	accel     string
}

// hutchEnv is one fresh hutch state for the user.
type hutchEnv struct {
	b   *bench
	env []string
}

func (h *hutchEnv) command(args ...string) *exec.Cmd {
	c := exec.Command(h.b.hutchBin, args...)
	c.Env = h.env
	c.Dir = "/"
	c.SysProcAttr = h.b.cred()
	return c
}

func (h *hutchEnv) hutch(args ...string) (string, error) {
	var out, errb strings.Builder
	c := h.command(args...)
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("hutch %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// inspectView is the part of hutch inspect the driver reads.
type inspectView struct {
	Name          string   `json:"name"`
	State         string   `json:"state"`
	Pid           int      `json:"pid"`
	SupervisorPid int      `json:"supervisorPid"`
	Accel         string   `json:"accel"`
	Command       []string `json:"command"`
}

// hutchBoot returns a boot with hutch run -d in a fresh hutch state and
// the given network backend.
func (b *bench) hutchBoot(network string) func(string) (measurement, error) {
	return func(tag string) (measurement, error) { return b.hutchRun(tag, network) }
}

// freshHutch makes a new hutch state for the user in the scratch dir
// tag: tag/run is its XDG_RUNTIME_DIR, tag/data its XDG_DATA_HOME.
func (b *bench) freshHutch(tag string) (h *hutchEnv, dir, dataDir string, err error) {
	dir = filepath.Join(b.scratch, tag)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, "", "", err
	}
	runDir, dataDir := filepath.Join(dir, "run"), filepath.Join(dir, "data")
	for _, d := range []string{runDir, dataDir} {
		if err := b.userDir(d); err != nil {
			return nil, "", "", err
		}
	}
	return &hutchEnv{b: b, env: b.env("XDG_RUNTIME_DIR="+runDir, "XDG_DATA_HOME="+dataDir)}, dir, dataDir, nil
}

func (b *bench) hutchRun(tag, network string) (measurement, error) {
	var m measurement
	h, dir, dataDir, err := b.freshHutch(tag)
	if err != nil {
		return m, err
	}
	port := b.port()
	if err := waitPortFree(port); err != nil {
		return m, err
	}
	name := "bench-" + tag
	args := []string{"run", "-d", "--name", name, "--cpus", cpus, "--memory", memory,
		"--kernel", b.guestFiles.Kernel, "--initrd", b.guestFiles.Initrd, "--append", appendArg,
		"--network", network, "-p", fmt.Sprintf("127.0.0.1:%d:%d", port, guestPort)}
	m.hutchArgv = append([]string{"hutch"}, args...)
	m.hutchArgv[4] = "NAME"
	m.hutchArgv[len(m.hutchArgv)-1] = fmt.Sprintf("127.0.0.1:%s:%d", portPlaceholder, guestPort)
	consoleLog := filepath.Join(dataDir, "hutch", "vms", name, "console.log")

	cmd := h.command(args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b.liveVM[name] = h
	ctx, cancel := context.WithTimeout(context.Background(), bootLimit)
	defer cancel()
	type exit struct {
		err error
		at  time.Duration
	}
	exited := make(chan exit, 1)
	win := openWindow()
	boot0 := bootTime()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return m, err
	}
	go func() {
		err := cmd.Wait()
		exited <- exit{err, time.Since(start)}
	}()
	page := pollPage(ctx, port, start, pollEvery)
	var r pageResult
	var e exit
	select {
	case e = <-exited:
		if e.err == nil {
			r = <-page
		}
	case r = <-page:
		e = <-exited
	}
	if e.err != nil {
		cancel()
		return m, fmt.Errorf("hutch run: %v: %s", e.err, strings.TrimSpace(stderr.String()))
	}
	m.returned = e.at
	if r.err != nil {
		return m, fmt.Errorf("%w; console: %s", r.err, tail(consoleLog))
	}
	m.page = r.at
	out, err := h.hutch("inspect", name)
	if err != nil {
		return m, err
	}
	var v inspectView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return m, fmt.Errorf("hutch inspect: %w", err)
	}
	if v.State != "running" || v.Pid == 0 || v.SupervisorPid == 0 {
		return m, fmt.Errorf("hutch inspect: state %s, pid %d, supervisor %d", v.State, v.Pid, v.SupervisorPid)
	}
	m.vmmCPU, m.superCPU = procCPU(v.Pid), procCPU(v.SupervisorPid)
	m.others = win.others(treeCPU(v.SupervisorPid))
	m.vmmExec = procStart(v.Pid) + tick/2 - boot0
	m.superRSS, _ = readMemory(v.SupervisorPid)
	m.vmmRSS, _ = readMemory(v.Pid)
	m.vmRSS = treeRSS(v.SupervisorPid)
	m.vmmArgv, m.accel = v.Command, v.Accel
	if b.keep {
		copyFile(consoleLog, filepath.Join(dir, "console.log"), 0o644)
	}

	gone := watchExit(v.Pid)
	t := time.Now()
	_, err1 := h.hutch("stop", "-t", "0", name)
	_, err2 := h.hutch("rm", name)
	end := time.Now()
	m.teardown = end.Sub(t)
	if err := errors.Join(err1, err2); err != nil {
		return m, err
	}
	exitAt, ok := gone(10 * time.Second)
	if !ok {
		return m, fmt.Errorf("qemu %d still running after hutch rm", v.Pid)
	}
	m.postExit = end.Sub(exitAt)
	delete(b.liveVM, name)
	if !waitGone(v.Pid, 10*time.Second) || !waitGone(v.SupervisorPid, 10*time.Second) {
		return m, fmt.Errorf("qemu %d or supervisor %d still running after hutch rm", v.Pid, v.SupervisorPid)
	}
	return m, waitPortFree(port)
}

// rawRun boots the guest with the raw QEMU command line.
func (b *bench) rawRun(tag string) (measurement, error) {
	var m measurement
	dir := filepath.Join(b.scratch, tag)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return m, err
	}
	own := filepath.Join(dir, "vm")
	if err := b.userDir(own); err != nil {
		return m, err
	}
	port := b.port()
	if err := waitPortFree(port); err != nil {
		return m, err
	}
	serial := filepath.Join(own, "serial.log")
	argv := b.rawArgv(strconv.Itoa(port), serial)
	logf, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		return m, err
	}
	defer logf.Close()
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return m, err
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: b.env(), Dir: "/", Stdout: logf, Stderr: logf, SysProcAttr: b.cred()}
	cmd.SysProcAttr.Setsid = true
	ctx, cancel := context.WithTimeout(context.Background(), bootLimit)
	defer cancel()
	win := openWindow()
	boot0 := bootTime()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return m, err
	}
	pid := cmd.Process.Pid
	b.liveRaw[pid] = cmd
	defer delete(b.liveRaw, pid)
	exited := make(chan struct{})
	var state *os.ProcessState
	go func() {
		state, _ = cmd.Process.Wait()
		close(exited)
	}()
	var r pageResult
	select {
	case r = <-pollPage(ctx, port, start, pollEvery):
	case <-exited:
		cancel()
		r.err = fmt.Errorf("qemu exited before the page answered (%v)", state)
	}
	if r.err != nil {
		cmd.Process.Kill()
		<-exited
		log, _ := os.ReadFile(logf.Name())
		return m, fmt.Errorf("%w; qemu: %s; console: %s", r.err, strings.TrimSpace(string(log)), tail(serial))
	}
	m.page = r.at
	m.vmmCPU = procCPU(pid)
	m.others = win.others(m.vmmCPU)
	m.vmmExec = procStart(pid) + tick/2 - boot0
	m.vmmRSS, _ = readMemory(pid)
	m.vmRSS = m.vmmRSS.rss
	t := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	<-exited
	m.teardown = time.Since(t)
	return m, waitPortFree(port)
}

type pageResult struct {
	at  time.Duration
	err error
}

// pollPage starts a GET of the guest's page every `every`, each with its
// own short timeout, and reports when the first one answers 200 with the
// guest's text, measured from start.
func pollPage(ctx context.Context, port int, start time.Time, every time.Duration) <-chan pageResult {
	out := make(chan pageResult, 1)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	client := &http.Client{
		Timeout:   attemptTimeout,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
	go func() {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		found := make(chan time.Duration, 1)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			go func() {
				if get(ctx, client, url) {
					at := time.Since(start)
					select {
					case found <- at:
					default:
					}
				}
			}()
			select {
			case at := <-found:
				out <- pageResult{at: at}
				return
			case <-ctx.Done():
				out <- pageResult{err: fmt.Errorf("no page on %s after %s", url, time.Since(start).Round(time.Second))}
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

func get(ctx context.Context, c *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return err == nil && resp.StatusCode == http.StatusOK && strings.Contains(string(body), testguest.PageText)
}

// waitPortFree waits until 127.0.0.1:port can be listened on.
func waitPortFree(port int) error {
	deadline := time.Now().Add(portFreeLimit)
	for {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("port %d still busy after %s: %w", port, portFreeLimit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitGone waits for a pid to disappear (or to be a zombie, which holds
// neither memory nor ports).
func waitGone(pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		f := statFields(pid)
		if f == nil || f[0] == "Z" {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// memUse is a process's resident memory, in KiB, from /proc/PID/status.
type memUse struct {
	rss, anon, file, hwm int
}

func readMemory(pid int) (memUse, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return memUse{}, err
	}
	var m memUse
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.Atoi(f[0])
		switch k {
		case "VmRSS":
			m.rss = n
		case "RssAnon":
			m.anon = n
		case "RssFile":
			m.file = n
		case "VmHWM":
			m.hwm = n
		}
	}
	return m, nil
}

func mib(kib int) float64 { return float64(kib) / 1024 }

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 800 {
		s = "..." + s[len(s)-800:]
	}
	return s
}

func copyFile(from, to string, mode os.FileMode) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
