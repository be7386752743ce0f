package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The density test polls every VM's page less often than a single boot:
// twenty pollers every 20 ms would take CPU from the guests they wait for.
const (
	densityPoll  = 100 * time.Millisecond
	densityLimit = 10 * time.Minute
)

// densityResult is N VMs started at once by N concurrent hutch run -d, in
// one hutch state of the user, then stopped and removed concurrently.
type densityResult struct {
	n        int
	memory   string
	page     []time.Duration // per VM, from the common start; 0 when it never answered
	returned []time.Duration // per VM, hutch run -d exiting
	errs     []string
	vmRSS    int     // KiB: every VM's supervisor, QEMU and helpers
	vmmRSS   int     // KiB: QEMU alone, summed
	availKiB int     // drop of the host's MemAvailable, before to all answering
	others   float64 // CPUs other processes used meanwhile
	// Teardown: hutch stop -t 0 NAME then hutch rm NAME, one pair per VM,
	// all pairs at once.
	teardown time.Duration
	allGone  time.Duration // to every supervisor and QEMU gone
	tearErrs []string
	leftover []string // processes of the user, or VMs hutch ps -a lists, after teardown
}

func (b *bench) densityRun() (*densityResult, error) {
	d := &densityResult{n: b.density, memory: b.densMem,
		page: make([]time.Duration, b.density), returned: make([]time.Duration, b.density)}
	h, _, _, err := b.freshHutch("density")
	if err != nil {
		return nil, err
	}
	names, ports := make([]string, d.n), make([]int, d.n)
	for i := range names {
		names[i] = fmt.Sprintf("dens%02d", i+1)
		ports[i] = b.port()
		if err := waitPortFree(ports[i]); err != nil {
			return nil, err
		}
		b.liveVM[names[i]] = h
	}
	fmt.Fprintf(os.Stderr, "density: %d VMs of %s at once\n", d.n, d.memory)
	waitQuiet(b.quietWait)
	avail0 := meminfo("MemAvailable")
	ctx, cancel := context.WithTimeout(context.Background(), densityLimit)
	defer cancel()
	var mu sync.Mutex
	fail := func(format string, a ...any) {
		mu.Lock()
		d.errs = append(d.errs, fmt.Sprintf(format, a...))
		mu.Unlock()
	}
	var wg sync.WaitGroup
	win := openWindow()
	start := time.Now()
	for i := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			page := pollPage(ctx, ports[i], start, densityPoll)
			c := h.command("run", "-d", "--name", names[i], "--cpus", cpus, "--memory", d.memory,
				"--kernel", b.guestFiles.Kernel, "--initrd", b.guestFiles.Initrd, "--append", appendArg,
				"--network", "slirp", "-p", fmt.Sprintf("127.0.0.1:%d:%d", ports[i], guestPort))
			var stderr strings.Builder
			c.Stderr = &stderr
			err := c.Run()
			d.returned[i] = time.Since(start)
			if err != nil {
				fail("%s: hutch run: %v: %s", names[i], err, strings.TrimSpace(stderr.String()))
				return
			}
			if r := <-page; r.err != nil {
				fail("%s: %v", names[i], r.err)
			} else {
				d.page[i] = r.at
			}
		}()
	}
	wg.Wait()
	d.availKiB = avail0 - meminfo("MemAvailable")
	vms, err := h.list()
	if err != nil {
		return nil, err
	}
	var ours time.Duration
	for _, v := range vms {
		if v.SupervisorPid == 0 {
			continue
		}
		d.vmRSS += treeRSS(v.SupervisorPid)
		m, _ := readMemory(v.Pid)
		d.vmmRSS += m.rss
		ours += treeCPU(v.SupervisorPid)
	}
	d.others = win.others(ours)
	fmt.Fprintf(os.Stderr, "density: %d of %d answered, last at %.1fs; %d errors; tearing down\n",
		d.answered(), d.n, d.last().Seconds(), len(d.errs))

	var pids []int
	for _, v := range vms {
		pids = append(pids, v.Pid, v.SupervisorPid)
	}
	t := time.Now()
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err1 := h.hutch("stop", "-t", "0", name)
			_, err2 := h.hutch("rm", name)
			if err := errors.Join(err1, err2); err != nil {
				mu.Lock()
				d.tearErrs = append(d.tearErrs, err.Error())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	d.teardown = time.Since(t)
	for _, pid := range pids {
		if pid != 0 && !waitGone(pid, 10*time.Second) {
			d.leftover = append(d.leftover, fmt.Sprintf("pid %d still running 10 s after its rm", pid))
		}
	}
	d.allGone = time.Since(t)
	for pid, comm := range userProcs(b.uid) {
		d.leftover = append(d.leftover, fmt.Sprintf("process %d (%s) of %s", pid, comm, b.userName))
	}
	if left, err := h.list(); err != nil {
		d.leftover = append(d.leftover, err.Error())
	} else {
		for _, v := range left {
			d.leftover = append(d.leftover, fmt.Sprintf("hutch ps -a lists %s (%s)", v.Name, v.State))
		}
	}
	if len(d.tearErrs) == 0 {
		for _, name := range names {
			delete(b.liveVM, name)
		}
	}
	sort.Strings(d.leftover)
	return d, nil
}

// list is hutch ps -a.
func (h *hutchEnv) list() ([]inspectView, error) {
	out, err := h.hutch("ps", "-a", "--format", "json")
	if err != nil {
		return nil, err
	}
	var vms []inspectView
	if err := json.Unmarshal([]byte(out), &vms); err != nil {
		return nil, fmt.Errorf("hutch ps --format json: %w", err)
	}
	return vms, nil
}

func (d *densityResult) answered() int {
	n := 0
	for _, p := range d.page {
		if p > 0 {
			n++
		}
	}
	return n
}

func (d *densityResult) last() time.Duration {
	var l time.Duration
	for _, p := range d.page {
		l = max(l, p)
	}
	return l
}

// meminfo is one line of /proc/meminfo (MemTotal, MemAvailable...), in KiB.
func meminfo(key string) int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return 0
}
