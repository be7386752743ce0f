package vm

import (
	"strings"
	"testing"
)

func TestParseMemory(t *testing.T) {
	good := map[string]int{"256M": 256, "256": 256, "2G": 2048, "1g": 1024, "512MiB": 512, "1GB": 1024, "16384K": 16, "1T": 1 << 20}
	for in, want := range good {
		got, err := ParseMemory(in)
		if err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	bad := map[string]string{"0": "at least 16M", "lots": "give a size", "": "give a size", "-1G": "give a size",
		"15M": "at least 16M", "1500K": "whole number of MiB", "5T": "at most 4T", "99999999999999999999G": "too large", "1.5G": "give a size"}
	for in, want := range bad {
		_, err := ParseMemory(in)
		if err == nil || !strings.Contains(err.Error(), want) || !IsInput(err) {
			t.Errorf("ParseMemory(%q) error = %v, want an input error containing %q", in, err, want)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, n := range []string{"web", "a", "vm-1.test_2", strings.Repeat("x", 63)} {
		if err := ValidName(n); err != nil {
			t.Errorf("ValidName(%q): %v", n, err)
		}
	}
	for _, n := range []string{"", "..", ".", "a/b", "-x", ".hidden", "a b", strings.Repeat("x", 64), "ü"} {
		if err := ValidName(n); err == nil {
			t.Errorf("ValidName(%q) accepted", n)
		}
	}
}

func TestParseSpec(t *testing.T) {
	s, err := ParseSpec(Options{Kernel: "k", CPUs: DefaultCPUs, Publish: []string{"8080:80", "127.0.0.1:5353:53/udp"}, Disks: []string{"a.img", "b.img,ro"}})
	if err != nil {
		t.Fatal(err)
	}
	if s.CPUs != DefaultCPUs || s.MemoryMiB != DefaultMemoryMiB || s.Network != "" || len(s.Ports) != 2 {
		t.Errorf("defaults not applied: %+v", s)
	}
	if s.Disks[0] != (Disk{Path: "a.img"}) || s.Disks[1] != (Disk{Path: "b.img", ReadOnly: true}) {
		t.Errorf("disks = %+v", s.Disks)
	}
	bad := []struct {
		o    Options
		want string
	}{
		{Options{CPUs: 1, Kernel: "k", SSH: true}, "give the IMAGE to boot"},
		{Options{CPUs: 1, CloudInit: "u.yaml"}, "give the IMAGE to boot"},
		{Options{CPUs: 1, Image: "i", SSH: true, Network: NetNone}, "--ssh forwards a host port"},
		{Options{CPUs: 1, Image: "i", SSH: true, Network: "bridge=br0"}, "--ssh forwards a host port"},
		{Options{CPUs: 1, Image: "i", Append: "x"}, "need --kernel"},
		{Options{Kernel: "k", CPUs: -1}, "invalid --cpus"},
		{Options{Kernel: "k", CPUs: 0}, "invalid --cpus"},
		{Options{Kernel: "k", CPUs: 1000}, "invalid --cpus"},
		{Options{CPUs: 1, Kernel: "k", Network: "tap"}, "unknown --network"},
		{Options{CPUs: 1, Kernel: "k", Network: NetNone, Publish: []string{"80:80"}}, "-p needs a network"},
		{Options{CPUs: 1, Kernel: "k", Publish: []string{"80"}}, "host port is required"},
		{Options{CPUs: 1, Kernel: "k", Disks: []string{",ro"}}, "invalid --disk"},
		{Options{CPUs: 1, Kernel: "k", Name: "../x"}, "invalid name"},
	}
	for _, tt := range bad {
		_, err := ParseSpec(tt.o)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !IsInput(err) {
			t.Errorf("ParseSpec(%+v) error = %v, want input error with %q", tt.o, err, tt.want)
		}
	}
}

func TestParseDisk(t *testing.T) {
	for _, c := range []struct {
		arg  string
		want Disk
		err  string
	}{
		{arg: "a.img", want: Disk{Path: "a.img"}},
		{arg: "a.img,rw", want: Disk{Path: "a.img"}},
		{arg: "a.img,ro", want: Disk{Path: "a.img", ReadOnly: true}},
		{arg: "a.img,format=qcow2,ro", want: Disk{Path: "a.img", ReadOnly: true, Format: "qcow2"}},
		{arg: "size=2G", want: Disk{Size: 2 << 30, Format: "qcow2"}},
		{arg: "size=512M,format=raw", want: Disk{Size: 512 << 20, Format: "raw"}},
		{arg: "size=2G,ro", err: "a blank disk is for writing"},
		{arg: "a.img,format=vmdk", err: "format=vmdk: use format=raw or format=qcow2"},
		{arg: "a.img,cache=none", err: `unknown option "cache=none"`},
		{arg: "size=0", err: "at least 1M"},
	} {
		got, err := parseDisk(c.arg)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("parseDisk(%q) = %+v, %v; want %q", c.arg, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("parseDisk(%q) = %+v, %v; want %+v", c.arg, got, err, c.want)
		}
	}
}

func TestParseVolume(t *testing.T) {
	v, err := parseVolume("/src:/data:ro")
	if err != nil || v != (Volume{Source: "/src", Target: "/data", ReadOnly: true}) {
		t.Errorf("parseVolume = %+v, %v", v, err)
	}
	if v, err := parseVolume("/src:/data/:rw"); err != nil || v.ReadOnly || v.Target != "/data" {
		t.Errorf("parseVolume rw = %+v, %v", v, err)
	}
	for _, bad := range []string{"/src", "/src:", ":/data", "/src:data", "/src:/", "/src:/d:rx", "/src:/a,b", "/src:/a b", "/a:/b:ro:x"} {
		if _, err := parseVolume(bad); err == nil || !IsInput(err) {
			t.Errorf("parseVolume(%q) = %v, want an input error", bad, err)
		}
	}
}
