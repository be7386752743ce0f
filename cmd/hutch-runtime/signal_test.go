package main

import (
	"syscall"
	"testing"
)

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"9": syscall.SIGKILL, "KILL": syscall.SIGKILL, "sigterm": syscall.SIGTERM,
		"SIGUSR1": syscall.SIGUSR1, "hup": syscall.SIGHUP, "64": syscall.Signal(64)} {
		if got, err := parseSignal(in); err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "65", "-1", "", "SIGNOPE", "9x"} {
		if _, err := parseSignal(in); err == nil {
			t.Errorf("parseSignal(%q) accepted", in)
		}
	}
}

func TestParseUser(t *testing.T) {
	if uid, gid, err := parseUser("1234:5678"); err != nil || uid != 1234 || gid != 5678 {
		t.Errorf("parseUser(1234:5678) = %d, %d, %v", uid, gid, err)
	}
	for _, in := range []string{"root", "1:x", "-1", ""} {
		if _, _, err := parseUser(in); err == nil {
			t.Errorf("parseUser(%q) accepted", in)
		}
	}
}
