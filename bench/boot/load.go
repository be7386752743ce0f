package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// userHZ is the unit of /proc/stat and /proc/PID/stat times (USER_HZ,
// 100 on every Linux architecture that matters here).
const userHZ = 100

// tick is one USER_HZ clock tick.
const tick = time.Second / userHZ

// hostBusy is the CPU time every process on the host has used since boot,
// from the cpu line of /proc/stat.
func hostBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	// user nice system idle iowait irq softirq steal (guest time is
	// already inside user).
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * tick
}

// procCPU is the user+system time pid has used, all its threads included.
func procCPU(pid int) time.Duration {
	f := statFields(pid)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * tick
}

// selfCPU is the CPU time of this process and of its children that it
// has waited for.
func selfCPU() time.Duration {
	var t time.Duration
	for _, who := range []int{unix.RUSAGE_SELF, unix.RUSAGE_CHILDREN} {
		var ru unix.Rusage
		unix.Getrusage(who, &ru)
		t += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return t
}

// statFields are the fields of /proc/PID/stat after the command name:
// f[0] is field 3 (state).
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// bootTime is CLOCK_BOOTTIME, the clock of a process's start time in
// /proc/PID/stat.
func bootTime() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return time.Duration(ts.Nano())
}

// procStart is when pid started, on the CLOCK_BOOTTIME scale, in whole
// clock ticks.
func procStart(pid int) time.Duration {
	f := statFields(pid)
	if len(f) < 20 {
		return 0
	}
	ticks, _ := strconv.ParseInt(f[19], 10, 64)
	return time.Duration(ticks) * tick
}

// cpuWindow accounts for the CPU used on the host during one boot, to tell
// how much of it was not the boot's own.
type cpuWindow struct {
	start    time.Time
	hostBusy time.Duration
	self     time.Duration
}

func openWindow() cpuWindow {
	return cpuWindow{start: time.Now(), hostBusy: hostBusy(), self: selfCPU()}
}

// others closes the window: the host's CPU time minus this driver's (and
// its reaped children's) and ours (the boot's other processes, whose CPU
// time is given), as a number of CPUs kept busy on average. It is exact
// to a few clock ticks.
func (w cpuWindow) others(ours time.Duration) float64 {
	elapsed := time.Since(w.start)
	other := hostBusy() - w.hostBusy - (selfCPU() - w.self) - ours
	return max(0, other.Seconds()/elapsed.Seconds())
}

// Quiet host: before each boot the driver waits until the rest of the
// host has used less than quietCPUs for quietSpan.
const (
	quietCPUs = 0.15
	quietSpan = time.Second
)

// waitQuiet waits, up to limit, for the host to be idle enough to time a
// boot, and returns the load it last saw (in CPUs).
func waitQuiet(limit time.Duration) float64 {
	deadline := time.Now().Add(limit)
	said := false
	for {
		w := openWindow()
		time.Sleep(quietSpan)
		load := w.others(0)
		if load < quietCPUs {
			return load
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "host still busy (%.2f CPUs used by other processes) after %s: timing anyway\n", load, limit)
			return load
		}
		if !said {
			fmt.Fprintf(os.Stderr, "host busy (%.2f CPUs used by other processes): waiting for it to settle\n", load)
			said = true
		}
	}
}
