// Package hostproc reads what the tests assert about live host processes.
package hostproc

import (
	"os"
	"strconv"
	"strings"
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
func Descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st := Status(p); st != nil {
			pp, _ := strconv.Atoi(st["PPid"])
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	for queue := []int{pid}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}
