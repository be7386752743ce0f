package netstack

import (
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParsePublish(t *testing.T) {
	tests := []struct {
		spec string
		want []Forward
	}{
		{"8080:80", []Forward{{"127.0.0.1", 8080, 80, "tcp"}}},
		{"127.0.0.1:8080:80", []Forward{{"127.0.0.1", 8080, 80, "tcp"}}},
		{"0.0.0.0:8080:80/tcp", []Forward{{"0.0.0.0", 8080, 80, "tcp"}}},
		{":5353:53/udp", []Forward{{"127.0.0.1", 5353, 53, "udp"}}},
		{"[::1]:8080:80", []Forward{{"::1", 8080, 80, "tcp"}}},
		{"9000-9002:80-82", []Forward{{"127.0.0.1", 9000, 80, "tcp"}, {"127.0.0.1", 9001, 81, "tcp"}, {"127.0.0.1", 9002, 82, "tcp"}}},
	}
	for _, tt := range tests {
		got, err := ParsePublish(tt.spec)
		if err != nil {
			t.Errorf("ParsePublish(%q): %v", tt.spec, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParsePublish(%q) = %v, want %v", tt.spec, got, tt.want)
		}
	}
}

func TestParsePublishRejects(t *testing.T) {
	tests := []struct{ spec, why string }{
		{"80", "host port is required"},
		{"70000:80", "out of range"},
		{"a:b", "not a number"},
		{"1-3:1-2", "differ in length"},
		{"0:80", "out of range"},
		{"8080:80/sctp", "tcp or udp"},
		{"::1:8080:80", "too many fields"},
		{"[127.0.0.1]:8080:80", "not an IPv6"},
		{"[::1:8080:80", "unterminated"},
		{"localhost:8080:80", "not an IPv4"},
		{"5-3:5-3", "backwards"},
		{"+80:80", "not a number"},
		{"", "host port is required"},
	}
	for _, tt := range tests {
		_, err := ParsePublish(tt.spec)
		if err == nil || !strings.Contains(err.Error(), tt.why) {
			t.Errorf("ParsePublish(%q) error = %v, want one containing %q", tt.spec, err, tt.why)
		}
	}
}

func TestCheckFree(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	err = CheckFree([]Forward{{"127.0.0.1", port, 80, "tcp"}})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:"+strconv.Itoa(port)+"/tcp is already in use") {
		t.Fatalf("CheckFree of a held port: %v", err)
	}
	if !strings.Contains(err.Error(), "held by pid") {
		t.Errorf("CheckFree did not name the holder (this test's own process): %v", err)
	}
	free := freePort(t)
	if err := CheckFree([]Forward{{"127.0.0.1", free, 80, "tcp"}}); err != nil {
		t.Fatalf("CheckFree of a free port: %v", err)
	}
	if err := CheckFree([]Forward{{"127.0.0.1", free, 80, "tcp"}, {"127.0.0.1", free, 81, "tcp"}}); err == nil {
		t.Fatal("CheckFree accepted one host port twice")
	}
}

func TestSlirpNetdev(t *testing.T) {
	got := SlirpNetdev("n0", []Forward{{"127.0.0.1", 8080, 80, "tcp"}, {"::1", 5353, 53, "udp"}})
	want := "user,id=n0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:[::1]:5353-:53"
	if got != want {
		t.Errorf("SlirpNetdev = %q, want %q", got, want)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestPasstArgs(t *testing.T) {
	got := PasstArgs("/run/x/passt.sock", []Forward{{"127.0.0.1", 8080, 80, "tcp"}, {"::1", 5353, 53, "udp"}})
	want := []string{"--foreground", "--quiet", "--one-off", "--socket", "/run/x/passt.sock",
		"--tcp-ports", "127.0.0.1/8080:80", "--udp-ports", "::1/5353:53"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PasstArgs = %q, want %q", got, want)
	}
	if _, ok := HasIPv6([]Forward{{"127.0.0.1", 1, 1, "tcp"}}); ok {
		t.Error("HasIPv6 of an IPv4 forward")
	}
	if f, ok := HasIPv6([]Forward{{"127.0.0.1", 1, 1, "tcp"}, {"::1", 2, 2, "tcp"}}); !ok || f.HostPort != 2 {
		t.Error("HasIPv6 missed an IPv6 forward")
	}
}
