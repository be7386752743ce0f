package guestssh

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// A console as Debian 12's cloud-init leaves it: kernel lines around and
// inside the block, carriage returns, the fingerprints block first.
const console = "[   86.39] hrtimer: interrupt took 8834090 ns\r\n" +
	"<14>Nov 23 04:13:52 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----\r\n" +
	"<14>Nov 23 04:13:54 cloud-init: 256 SHA256:BcTB0e root@deb (ED25519)\r\n" +
	"<14>Nov 23 04:13:54 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----\r\n" +
	"-----BEGIN SSH HOST KEY KEYS-----\r\n" +
	"ecdsa-sha2-nistp256 AAAAE2VjZHNh+/= root@deb\r\n" +
	"[   87.00] random: crng init done\r\n" +
	"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFL root@deb\r\n" +
	"-----END SSH HOST KEY KEYS-----\r\n" +
	"[   88.34] cloud-init[414]: Cloud-init v. 22.4.2 finished\r\n"

func TestHostKeys(t *testing.T) {
	want := []string{"ecdsa-sha2-nistp256 AAAAE2VjZHNh+/=", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFL"}
	if got := HostKeys([]byte(console)); !reflect.DeepEqual(got, want) {
		t.Errorf("HostKeys = %q, want %q", got, want)
	}
	// Only a complete block counts, and the last one wins.
	cut := console[:strings.Index(console, "-----END SSH HOST KEY KEYS")]
	if got := HostKeys([]byte(cut)); got != nil {
		t.Errorf("HostKeys of a cut block = %q", got)
	}
	again := console + "-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 NEW x\n-----END SSH HOST KEY KEYS-----\n"
	if got := HostKeys([]byte(again)); !reflect.DeepEqual(got, []string{"ssh-ed25519 NEW"}) {
		t.Errorf("HostKeys after a second boot = %q", got)
	}
	if got := HostKeys(nil); got != nil {
		t.Errorf("HostKeys(nil) = %q", got)
	}
}

func TestKnownHosts(t *testing.T) {
	got := string(KnownHosts("127.0.0.1", 40022, []string{"ssh-ed25519 AAAA", "ecdsa-sha2-nistp256 BBBB"}))
	want := "[127.0.0.1]:40022 ssh-ed25519 AAAA\n[127.0.0.1]:40022 ecdsa-sha2-nistp256 BBBB\n"
	if got != want {
		t.Errorf("KnownHosts = %q, want %q", got, want)
	}
}

var target = Target{User: "alice", Host: "127.0.0.1", Port: 40022, Key: "/k/id_ed25519", KnownHosts: "/vm/known_hosts"}

func TestSSHArgv(t *testing.T) {
	pinned := target
	pinned.Pinned = true
	for _, tc := range []struct {
		t      Target
		cmd    []string
		strict string
		tail   []string
	}{
		{target, nil, "accept-new", []string{"--", "alice@127.0.0.1"}},
		{pinned, []string{"uname", "-a"}, "yes", []string{"--", "alice@127.0.0.1", "uname", "-a"}},
	} {
		a := tc.t.SSHArgv("/usr/bin/ssh", tc.cmd)
		joined := strings.Join(a, " ")
		for _, w := range []string{"/usr/bin/ssh -p 40022 ", "-i /k/id_ed25519", "-o IdentitiesOnly=yes", "-o UserKnownHostsFile=/vm/known_hosts",
			"-o GlobalKnownHostsFile=/dev/null", "-o StrictHostKeyChecking=" + tc.strict} {
			if !strings.Contains(joined, w) {
				t.Errorf("argv %q lacks %q", joined, w)
			}
		}
		if got := a[len(a)-len(tc.tail):]; !reflect.DeepEqual(got, tc.tail) {
			t.Errorf("argv ends %q, want %q", got, tc.tail)
		}
	}
}

func TestSCPArgv(t *testing.T) {
	a := target.SCPArgv("scp", Operand{Path: "./f"}, Operand{VM: "web", Path: "/tmp/f"})
	if a[0] != "scp" || !strings.Contains(strings.Join(a, " "), "-q -r -P 40022 -i /k/id_ed25519") {
		t.Errorf("argv %q", a)
	}
	if got := a[len(a)-3:]; !reflect.DeepEqual(got, []string{"--", "./f", "alice@127.0.0.1:/tmp/f"}) {
		t.Errorf("argv ends %q", got)
	}
}

func TestParseCopy(t *testing.T) {
	for _, tc := range []struct {
		src, dst string
		s, d     Operand
		err      string
	}{
		{"web:/etc/hosts", "./hosts", Operand{"web", "/etc/hosts"}, Operand{Path: "./hosts"}, ""},
		{"/tmp/a", "web:b", Operand{Path: "/tmp/a"}, Operand{"web", "b"}, ""},
		{"./a:b", "vm-1.x:/c:d", Operand{Path: "./a:b"}, Operand{"vm-1.x", "/c:d"}, ""},
		{"a", "b", Operand{}, Operand{}, "neither path is in a vm"},
		{"a:/x", "b:/y", Operand{}, Operand{}, "both paths are in a vm"},
		{"web:", "x", Operand{}, Operand{}, `"web:" names no path in vm web`},
		{"", "web:/x", Operand{}, Operand{}, "empty path"},
		{"-x:/y", "z", Operand{}, Operand{}, "neither path is in a vm"},
	} {
		s, d, err := ParseCopy(tc.src, tc.dst)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseCopy(%q, %q) error %v, want %q", tc.src, tc.dst, err, tc.err)
			}
		case err != nil:
			t.Errorf("ParseCopy(%q, %q): %v", tc.src, tc.dst, err)
		case s != tc.s || d != tc.d:
			t.Errorf("ParseCopy(%q, %q) = %+v, %+v; want %+v, %+v", tc.src, tc.dst, s, d, tc.s, tc.d)
		}
	}
}

func TestEnsureKey(t *testing.T) {
	if _, err := LookPath(Keygen); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ssh", "id_ed25519")
	pub, err := EnsureKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pub, "ssh-ed25519 ") {
		t.Errorf("public key %q", pub)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key: %v, %v", fi, err)
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o700 {
		t.Errorf("key dir mode %v", di.Mode())
	}
	again, err := EnsureKey(path)
	if err != nil || again != pub {
		t.Errorf("second EnsureKey made a new key: %q, %v", again, err)
	}
}

func TestAnswers(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	banner := make(chan string, 2)
	banner <- ""                          // accepts and closes, as slirp does with no server behind
	banner <- "SSH-2.0-OpenSSH_9.2p1\r\n" // a real server
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(<-banner))
			c.Close()
		}
	}()
	addr := l.Addr().String()
	if Answers(addr, 2*time.Second) {
		t.Error("a silent listener counts as ssh")
	}
	if !Answers(addr, 2*time.Second) {
		t.Error("an ssh banner does not count")
	}
}

// A forwarder that connects to the guest only once the client speaks (as
// Debian 12's passt does): the probe must send its banner first.
func TestAnswersSpeaksFirst(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if line, err := bufio.NewReader(c).ReadString('\n'); err == nil && strings.HasPrefix(line, "SSH-2.0-") {
					c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
				}
			}()
		}
	}()
	if !Answers(l.Addr().String(), 3*time.Second) {
		t.Fatal("Answers waited for a banner from a server that speaks second")
	}
}

// ssh-config gives ssh itself what hutch ssh passes on its command line.
func TestConfig(t *testing.T) {
	got := target.Config("hutch-web")
	for _, w := range []string{"Host hutch-web\n", "  HostName 127.0.0.1\n", "  Port 40022\n", "  User alice\n",
		"  IdentityFile /k/id_ed25519\n", "  IdentitiesOnly yes\n", "  UserKnownHostsFile /vm/known_hosts\n", "  StrictHostKeyChecking accept-new\n"} {
		if !strings.Contains(got, w) {
			t.Errorf("config lacks %q:\n%s", w, got)
		}
	}
	if strings.Contains(got, "=") {
		t.Errorf("config keeps a -o key=value form:\n%s", got)
	}
}
