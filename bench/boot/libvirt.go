package main

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// libvirtDaemons are the processes libvirt's session mode starts for the
// user on the first connection (Debian 12's libvirt 9.0 ships the
// monolithic libvirtd, no virtqemud) and leaves running until they have
// been idle for --timeout=120 seconds.
var libvirtDaemons = map[string]bool{"libvirtd": true, "virtlogd": true}

// libvirtSession is libvirt's session mode for the bench user, kept for the
// whole run the way a user keeps theirs: one XDG_RUNTIME_DIR (the daemon's
// sockets and pid files), XDG_CONFIG_HOME (domain state, QEMU capabilities
// ride in the cache) and XDG_CACHE_HOME (QEMU logs, capabilities cache).
// Nothing else is needed: the session daemon runs without a D-Bus session
// bus, logind or a login session.
type libvirtSession struct {
	b      *bench
	env    []string
	runDir string
	logDir string
}

func (b *bench) newLibvirt() (*libvirtSession, error) {
	if _, err := exec.LookPath("virsh"); err != nil {
		return nil, fmt.Errorf("libvirt: %w (install libvirt-clients libvirt-daemon libvirt-daemon-driver-qemu, or pass -libvirt=false)", err)
	}
	if _, err := os.Stat("/usr/sbin/libvirtd"); err != nil {
		return nil, fmt.Errorf("libvirt: no session daemon: %w (install libvirt-daemon)", err)
	}
	root := filepath.Join(b.scratch, "libvirt")
	if err := os.Mkdir(root, 0o755); err != nil {
		return nil, err
	}
	l := &libvirtSession{b: b, runDir: filepath.Join(root, "run")}
	config, cache := filepath.Join(root, "config"), filepath.Join(root, "cache")
	for _, d := range []string{l.runDir, config, cache} {
		if err := b.userDir(d); err != nil {
			return nil, fmt.Errorf("libvirt: %w", err)
		}
	}
	l.logDir = filepath.Join(cache, "libvirt", "qemu", "log")
	l.env = b.env("XDG_RUNTIME_DIR="+l.runDir, "XDG_CONFIG_HOME="+config, "XDG_CACHE_HOME="+cache)
	return l, nil
}

func (l *libvirtSession) virsh(args ...string) *exec.Cmd {
	c := exec.Command("virsh", append([]string{"-c", "qemu:///session"}, args...)...)
	c.Env = l.env
	c.Dir = "/"
	c.SysProcAttr = l.b.cred()
	return c
}

func (l *libvirtSession) run(args ...string) error {
	if out, err := l.virsh(args...).CombinedOutput(); err != nil {
		return fmt.Errorf("virsh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// daemons are the pids of the bench user's libvirt session daemons, all of
// them started by this driver's virsh calls.
func (l *libvirtSession) daemons() []int {
	var pids []int
	for pid, comm := range userProcs(l.b.uid) {
		if libvirtDaemons[comm] {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stopDaemons ends the session daemons (SIGTERM, then SIGKILL after 5 s)
// and waits until they are gone, so that the next virsh call starts cold.
func (l *libvirtSession) stopDaemons() error {
	pids := l.daemons()
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	for _, pid := range pids {
		if !waitGone(pid, 5*time.Second) {
			syscall.Kill(pid, syscall.SIGKILL)
			if !waitGone(pid, 5*time.Second) {
				return fmt.Errorf("libvirt session daemon %d survives SIGKILL", pid)
			}
		}
	}
	return nil
}

// ensureDaemon makes sure the session daemon runs (it exits by itself
// after 120 s idle) with a call that boots nothing and restarts its idle
// clock.
func (l *libvirtSession) ensureDaemon() error {
	return l.run("list", "--all")
}

// daemonUse sums the daemons' resident memory (KiB) and CPU time.
func (l *libvirtSession) daemonUse() (rss int, cpu time.Duration) {
	for _, pid := range l.daemons() {
		m, _ := readMemory(pid)
		rss += m.rss
		cpu += procCPU(pid)
	}
	return rss, cpu
}

// domainXML is the libvirt domain equivalent to the VM hutch boots: the
// same kernel, initrd and command line, memory, one CPU, q35 with ACPI
// (libvirt passes -no-acpi without <acpi/>), TCG (type='qemu'), the serial
// console to a file, no USB controller or balloon (hutch's -nodefaults
// has neither). libvirt 9.0's session mode has no way to forward a host
// port (its <interface type='user'> takes no <portForward> before passt
// support), so the NIC comes through <qemu:commandline>, as users do it:
// the same -netdev user,hostfwd=... and virtio-net-pci as hutch's.
func domainXML(name string, mem int, kernel, initrd, cmdline, serial string, netdev, device string) string {
	e := func(s string) string {
		var b strings.Builder
		xml.EscapeText(&b, []byte(s))
		return strings.ReplaceAll(b.String(), "'", "&#39;")
	}
	return fmt.Sprintf(`<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>%s</name>
  <memory unit='MiB'>%d</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>%s</kernel>
    <initrd>%s</initrd>
    <cmdline>%s</cmdline>
  </os>
  <features><acpi/></features>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='%s'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='%s'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='%s'/>
  </qemu:commandline>
</domain>
`, e(name), mem, e(kernel), e(initrd), e(cmdline), e(serial), e(netdev), e(device))
}

// netArgs takes hutch's -netdev and -device values for the NIC out of the
// raw template, with the port placeholder left in.
func netArgs(raw []string) (netdev, device string, err error) {
	for i := 0; i+1 < len(raw); i++ {
		switch {
		case raw[i] == "-netdev":
			netdev = raw[i+1]
		case raw[i] == "-device" && strings.Contains(raw[i+1], "netdev=n0"):
			device = raw[i+1]
		}
	}
	if netdev == "" || device == "" {
		return "", "", fmt.Errorf("no -netdev or NIC in %q", raw)
	}
	return netdev, device, nil
}

// libvirtBoot returns the boot function of one libvirt side: cold stops
// the session daemon first, warm makes sure it runs; neither is timed.
func (l *libvirtSession) libvirtBoot(cold bool) func(string) (measurement, error) {
	return func(tag string) (measurement, error) {
		var m measurement
		prep := l.ensureDaemon
		if cold {
			prep = l.stopDaemons
		}
		if err := prep(); err != nil {
			return m, err
		}
		dir := filepath.Join(l.b.scratch, tag)
		if err := l.b.userDir(dir); err != nil {
			return m, err
		}
		port := l.b.port()
		if err := waitPortFree(port); err != nil {
			return m, err
		}
		name := "bench-" + tag
		serial := filepath.Join(dir, "serial.log")
		mem, _ := strconv.Atoi(strings.TrimSuffix(memory, "M"))
		netdev, device, err := netArgs(l.b.rawTemplate)
		if err != nil {
			return m, err
		}
		netdev = strings.ReplaceAll(netdev, ":"+portPlaceholder+"-", fmt.Sprintf(":%d-", port))
		dom := filepath.Join(dir, "domain.xml")
		x := domainXML(name, mem, l.b.guestFiles.Kernel, l.b.guestFiles.Initrd, appendArg, serial, netdev, device)
		if err := os.WriteFile(dom, []byte(x), 0o644); err != nil {
			return m, err
		}

		cmd := l.virsh("create", dom)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		ctx, cancel := context.WithTimeout(context.Background(), bootLimit)
		defer cancel()
		_, daemonCPU0 := l.daemonUse()
		win := openWindow()
		boot0 := bootTime()
		start := time.Now()
		if err := cmd.Start(); err != nil {
			return m, err
		}
		l.b.liveDomains[name] = l
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		page := pollPage(ctx, port, start, pollEvery)
		var r pageResult
		select {
		case err = <-exited:
			m.returned = time.Since(start)
			if err == nil {
				r = <-page
			}
		case r = <-page:
			err = <-exited
			m.returned = time.Since(start)
		}
		qemuLog := filepath.Join(l.logDir, name+".log")
		if err != nil {
			cancel()
			return m, fmt.Errorf("virsh create: %w: %s; qemu log: %s", err, strings.TrimSpace(out.String()), tail(qemuLog))
		}
		if r.err != nil {
			return m, fmt.Errorf("%w; console: %s; qemu log: %s", r.err, tail(serial), tail(qemuLog))
		}
		m.page = r.at
		pid, err := l.qemuPid(name)
		if err != nil {
			return m, err
		}
		daemonRSS, daemonCPU := l.daemonUse()
		m.vmmCPU = procCPU(pid)
		// The daemons' CPU time since the exec is the boot's own; a cold
		// daemon started inside the window counts from zero.
		m.others = win.others(m.vmmCPU + daemonCPU - min(daemonCPU0, daemonCPU))
		m.vmmExec = procStart(pid) + tick/2 - boot0
		m.vmmRSS, _ = readMemory(pid)
		m.vmRSS = m.vmmRSS.rss
		m.daemonRSS = daemonRSS

		gone := watchExit(pid)
		t := time.Now()
		if err := l.run("destroy", name); err != nil {
			return m, err
		}
		if _, ok := gone(10 * time.Second); !ok {
			return m, fmt.Errorf("qemu %d still running after virsh destroy", pid)
		}
		m.teardown = time.Since(t)
		delete(l.b.liveDomains, name)
		return m, waitPortFree(port)
	}
}

// qemuPid reads the pid libvirt wrote for a running domain.
func (l *libvirtSession) qemuPid(name string) (int, error) {
	b, err := os.ReadFile(filepath.Join(l.runDir, "libvirt", "qemu", "run", name+".pid"))
	if err != nil {
		return 0, fmt.Errorf("libvirt's pid of domain %s: %w", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("libvirt's pid of domain %s: %w", name, err)
	}
	return pid, nil
}

// cleanup destroys what is left and stops the daemons, so the user keeps
// no process of the benchmark's.
func (l *libvirtSession) cleanup(domains []string) error {
	var errs []error
	for _, d := range domains {
		if err := l.run("destroy", d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(append(errs, l.stopDaemons())...)
}
