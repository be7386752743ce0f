// Package hostproc reads what the tests assert about live host processes.
package hostproc

import (
	"os"
	"strconv"
	"strings"

	"github.com/hutch-vm/hutch/internal/store"
)

// Status reads /proc/<pid>/status as a map; nil if the process is gone.
// A zombie counts as gone: it has exited and holds nothing, and whether
// it is reaped soon is up to the machine's init.
func Status(pid int) map[string]string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	if strings.HasPrefix(m["State"], "Z") {
		return nil
	}
	return m
}

// Descendants lists the live processes below pid, nearest first.
func Descendants(pid int) []int { return store.Descendants(pid) }
