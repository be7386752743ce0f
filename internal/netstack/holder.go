package netstack

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// holder names the process bound to f's host port, as " (held by pid N,
// NAME)", or "" when the host does not tell (another user's process).
func holder(f Forward) string {
	tables := []string{"/proc/net/" + f.Protocol, "/proc/net/" + f.Protocol + "6"}
	inodes := map[string]bool{}
	for _, t := range tables {
		for _, ino := range socketInodes(t, f.HostPort, f.Protocol == "tcp") {
			inodes[ino] = true
		}
	}
	if len(inodes) == 0 {
		return ""
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		link, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		if inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
			pid := strings.Split(fd, "/")[2]
			comm, _ := os.ReadFile("/proc/" + pid + "/comm")
			return fmt.Sprintf(" (held by pid %s, %s)", pid, strings.TrimSpace(string(comm)))
		}
	}
	return ""
}

// socketInodes reads a /proc/net table for sockets bound to port; for TCP
// only listening ones (state 0A).
func socketInodes(table string, port int, listenOnly bool) []string {
	f, err := os.Open(table)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 10 {
			continue
		}
		_, hexPort, ok := strings.Cut(fl[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil || int(p) != port || (listenOnly && fl[3] != "0A") {
			continue
		}
		out = append(out, fl[9])
	}
	return out
}
