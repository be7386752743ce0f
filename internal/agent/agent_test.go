package agent

import (
	"bufio"
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestFramesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	c := NewConn(&buf)
	if err := c.SendJSON(TypeStart, 7, Process{Args: []string{"sh"}, Cwd: "/"}); err != nil {
		t.Fatal(err)
	}
	c.Send(TypeStdout, 7, []byte("out"))
	c.Send(TypeClose, 7, nil)
	f, err := c.Recv()
	var p Process
	if err != nil || f.Type != TypeStart || f.ID != 7 || f.Decode(&p) != nil || p.Args[0] != "sh" {
		t.Fatalf("first frame %+v, %v", f, err)
	}
	if f, err := c.Recv(); err != nil || string(f.Payload) != "out" {
		t.Fatalf("second frame %+v, %v", f, err)
	}
	if f, err := c.Recv(); err != nil || f.Type != TypeClose || len(f.Payload) != 0 {
		t.Fatalf("third frame %+v, %v", f, err)
	}
	if _, err := c.Recv(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
}

func TestFrameLimits(t *testing.T) {
	c := NewConn(&bytes.Buffer{})
	if err := c.Send(TypeStdout, 0, make([]byte, MaxPayload+1)); err == nil {
		t.Fatal("an oversized frame was sent")
	}
	// A header announcing more than the limit is refused before reading it.
	bad := NewConn(bytes.NewBuffer([]byte{byte(TypeStdout), 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}))
	if _, err := bad.Recv(); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Recv of a huge length: %v", err)
	}
	short := NewConn(bytes.NewBuffer([]byte{byte(TypeStdout), 0, 0, 0, 0, 0, 0, 0, 5, 'a'}))
	if _, err := short.Recv(); err == nil {
		t.Fatal("a truncated payload was accepted")
	}
}

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		e    Exit
		want int
	}{{Exit{Code: 3}, 3}, {Exit{Signal: 9}, 137}, {Exit{Signal: 15}, 143}, {Exit{}, 0}} {
		if got := tc.e.Status(); got != tc.want {
			t.Errorf("%+v.Status() = %d, want %d", tc.e, got, tc.want)
		}
	}
}

func TestListeningPorts(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0F0200C0:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
   3: 0F0200C0:0050 0202000A:D431 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 20 4 30 10 -1
   4: 00000000000000000000000001000000:0277 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 5
   5: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 6
`
	got := ListeningPorts(bufio.NewScanner(strings.NewReader(table)), tcpListen)
	if want := []int{80, 22, 8081}; !slices.Equal(got, want) {
		t.Fatalf("ListeningPorts = %v, want %v (not loopback-only 8080 or 631, not the established 80)", got, want)
	}
	// UDP: a server's socket has no peer; a resolver's connected one does.
	udp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  0: 00000000:0007 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0
  1: 0F0200C0:A1B2 0302000A:0035 01 00000000:00000000 00:00000000 00000000     0        0 2 2 0000000000000000 0
  2: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0000000000000000 0
  3: 0F0200C0:C350 0302000A:0035 07 00000000:00000000 00:00000000 00000000     0        0 4 2 0000000000000000 0
`
	if got := ListeningPorts(bufio.NewScanner(strings.NewReader(udp)), udpUnconnected); !slices.Equal(got, []int{7}) {
		t.Fatalf("UDP ListeningPorts = %v, want [7] (not the resolver's, not loopback 53)", got)
	}
}

func TestParseMountOptions(t *testing.T) {
	flags, data := ParseMountOptions([]string{"nosuid", "noexec", "rw", "mode=755", "size=65536k", "rbind", "rprivate", "ro"})
	if data != "mode=755,size=65536k" {
		t.Errorf("data %q", data)
	}
	const nosuid, noexec, rdonly = 0x2, 0x8, 0x1
	if flags != nosuid|noexec|rdonly {
		t.Errorf("flags %#x", flags)
	}
	if flags, _ := ParseMountOptions([]string{"ro", "rw"}); flags != 0 {
		t.Errorf("rw after ro left flags %#x", flags)
	}
}
