// Package machine describes the host a benchmark ran on, for its report.
package machine

import (
	"os"
	"os/exec"
	"strings"
)

// CPUModel is /proc/cpuinfo's model name.
func CPUModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// FirstLine is the first line a command prints (a version), or "".
func FirstLine(c *exec.Cmd) string {
	b, _ := c.Output()
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line)
}

// Verdict words a target's outcome.
func Verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}
