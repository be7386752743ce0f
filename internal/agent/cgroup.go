//go:build linux

package agent

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroupRoot is where the agent mounts the guest's cgroup v2 tree, outside
// every container's root: each container gets a group there, which its
// processes join before exec, so its usage can be read and its limits
// changed while it runs.
const cgroupRoot = "/run/hutch/cgroup"

// mountCgroups mounts the tree and hands its controllers to the groups.
func mountCgroups() error {
	if err := os.MkdirAll(cgroupRoot, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("cgroup2", cgroupRoot, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount the guest's cgroup tree: %w", err)
	}
	return os.WriteFile(filepath.Join(cgroupRoot, "cgroup.subtree_control"), []byte("+memory +pids +cpu"), 0)
}

// cgroupOf is container id's group.
func cgroupOf(id uint32) string {
	return filepath.Join(cgroupRoot, "c"+strconv.FormatUint(uint64(id), 10))
}

// stats reads what container id uses: its group's memory, CPU time and
// processes, the guest's memory as the limit when the group has none.
func (a *guestAgent) stats(id uint32) (Stats, error) {
	c := a.container(id)
	if c == nil || c.cgroup == "" {
		return Stats{}, fmt.Errorf("container %d has no cgroup in the guest", id)
	}
	var s Stats
	mem, err := readUint(filepath.Join(c.cgroup, "memory.current"))
	if err != nil {
		return s, err
	}
	s.MemoryUsage = mem
	if lim, err := readUint(filepath.Join(c.cgroup, "memory.max")); err == nil {
		s.MemoryLimit = lim
	} else if total, err := meminfo("MemTotal"); err == nil {
		s.MemoryLimit = total
	}
	if p, err := readUint(filepath.Join(c.cgroup, "pids.current")); err == nil {
		s.Pids = int(p)
	}
	f, err := os.Open(filepath.Join(c.cgroup, "cpu.stat"))
	if err != nil {
		return s, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		n, _ := strconv.ParseUint(v, 10, 64)
		switch k {
		case "user_usec":
			s.CPUUser = n * 1000
		case "system_usec":
			s.CPUKernel = n * 1000
		}
	}
	return s, nil
}

// update writes new limits in container id's group.
func (a *guestAgent) update(id uint32, r Resources) error {
	c := a.container(id)
	if c == nil || c.cgroup == "" {
		return fmt.Errorf("container %d has no cgroup in the guest", id)
	}
	limit := func(v int64) string {
		if v < 0 {
			return "max"
		}
		return strconv.FormatInt(v, 10)
	}
	var writes [][2]string
	if r.MemoryMax != nil {
		writes = append(writes, [2]string{"memory.max", limit(*r.MemoryMax)})
	}
	if r.PidsMax != nil {
		writes = append(writes, [2]string{"pids.max", limit(*r.PidsMax)})
	}
	if r.CPUQuota != nil || r.CPUPeriod != nil {
		quota, period := "max", "100000"
		if r.CPUQuota != nil {
			quota = limit(*r.CPUQuota)
		}
		if r.CPUPeriod != nil {
			period = strconv.FormatUint(*r.CPUPeriod, 10)
		}
		writes = append(writes, [2]string{"cpu.max", quota + " " + period})
	}
	for _, w := range writes {
		if err := os.WriteFile(filepath.Join(c.cgroup, w[0]), []byte(w[1]), 0); err != nil {
			return fmt.Errorf("set %s to %s: %w", w[0], w[1], err)
		}
	}
	return nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v := strings.TrimSpace(string(b))
	if v == "max" {
		return 0, errors.New("no limit")
	}
	return strconv.ParseUint(v, 10, 64)
}

func meminfo(key string) (uint64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, err := strconv.ParseUint(f[0], 10, 64)
				return n * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no %s in /proc/meminfo", key)
}
