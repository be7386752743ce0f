// Package guestssh reaches a guest over ssh with the system's OpenSSH
// client: hutch's own key pair, the guest's host keys as its console
// printed them, the argv of ssh and scp, and readiness.
package guestssh

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Client tools, as Debian's openssh-client ships them.
const (
	SSH    = "ssh"
	SCP    = "scp"
	Keygen = "ssh-keygen"
)

// LookPath finds a client tool or says how to install it.
func LookPath(tool string) (string, error) {
	p, err := exec.LookPath(tool)
	if err != nil {
		return "", fmt.Errorf("%s not found on PATH: install it (Debian: apt-get install openssh-client)", tool)
	}
	return p, nil
}

// EnsureKey returns the public half of the ed25519 key pair at path,
// making the pair first if there is none. The directory is made 0700.
func EnsureKey(path string) (string, error) {
	if pub, err := os.ReadFile(path + ".pub"); err == nil {
		if _, err := os.Stat(path); err == nil {
			return strings.TrimSpace(string(pub)), nil
		}
	}
	bin, err := LookPath(Keygen)
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create ssh key directory: %w", err)
	}
	// Made under a temporary name and renamed, so two first runs at once
	// cannot leave half a pair.
	tmp, err := os.MkdirTemp(dir, ".new-")
	if err != nil {
		return "", fmt.Errorf("create ssh key: %w", err)
	}
	defer os.RemoveAll(tmp)
	key := filepath.Join(tmp, "key")
	out, err := exec.Command(bin, "-q", "-t", "ed25519", "-N", "", "-C", "hutch", "-f", key).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("create ssh key with %s: %s", Keygen, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(key+".pub", path+".pub"); err != nil {
		return "", fmt.Errorf("install ssh key: %w", err)
	}
	if err := os.Rename(key, path); err != nil {
		return "", fmt.Errorf("install ssh key: %w", err)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		return "", fmt.Errorf("read ssh key: %w", err)
	}
	return strings.TrimSpace(string(pub)), nil
}

// The block cloud-init's keys-to-console module prints.
const (
	beginKeys = "-----BEGIN SSH HOST KEY KEYS-----"
	endKeys   = "-----END SSH HOST KEY KEYS-----"
)

var hostKeyRE = regexp.MustCompile(`^(ssh-[a-z0-9-]+|ecdsa-sha2-nistp[0-9]+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+=*`)

// HostKeys returns the public host keys in the last complete block that
// cloud-init printed on the console, without their comments; none if no
// block was printed yet.
func HostKeys(console []byte) []string {
	var keys, block []string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(console))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasSuffix(line, beginKeys):
			in, block = true, nil
		case strings.HasSuffix(line, endKeys) && in:
			in, keys = false, block
		case in:
			if m := hostKeyRE.FindString(line); m != "" {
				block = append(block, m)
			}
		}
	}
	return keys
}

// KnownHosts renders keys as known_hosts lines for host:port.
func KnownHosts(host string, port int, keys []string) []byte {
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "[%s]:%d %s\n", host, port, k)
	}
	return b.Bytes()
}

// WriteKnownHosts replaces the known_hosts file at path with data, so a
// concurrent ssh reads the old keys or the new ones, never half.
func WriteKnownHosts(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".known_hosts-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Target is a guest's ssh endpoint as hutch reaches it.
type Target struct {
	User string
	Host string
	Port int
	// Key is the private key file.
	Key string
	// KnownHosts is the VM's own known_hosts file.
	KnownHosts string
	// Pinned is set when KnownHosts holds the keys the guest printed: the
	// connection then accepts nothing else. Otherwise the first
	// connection records the key it meets.
	Pinned bool
}

// options are what every ssh and scp run gets: hutch's key only, the VM's
// own known_hosts and nobody else's, no prompts about host keys.
func (t Target) options() []string {
	strict := "accept-new"
	if t.Pinned {
		strict = "yes"
	}
	return []string{
		"-i", t.Key,
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-o", "UserKnownHostsFile=" + t.KnownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=" + strict,
		"-o", "CheckHostIP=no",
		"-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=10",
	}
}

// Config is an ssh_config block for alias with the options hutch ssh
// uses, for editors and for ssh's own flags (ssh -F FILE -L ... alias).
func (t Target) Config(alias string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Host %s\n  HostName %s\n  Port %d\n  User %s\n", alias, t.Host, t.Port, t.User)
	o := t.options()
	for i := 0; i+1 < len(o); i += 2 {
		switch o[i] {
		case "-i":
			fmt.Fprintf(&b, "  IdentityFile %s\n", o[i+1])
		case "-o":
			k, v, _ := strings.Cut(o[i+1], "=")
			fmt.Fprintf(&b, "  %s %s\n", k, v)
		}
	}
	return b.String()
}

// SSHArgv is the ssh command line that runs command in the guest (through
// its login shell, as ssh does), or a login shell when command is empty.
// "--" ends ssh's options, so a command's own flags stay its own.
func (t Target) SSHArgv(bin string, command []string) []string {
	a := append([]string{bin, "-p", strconv.Itoa(t.Port)}, t.options()...)
	a = append(a, "--", t.User+"@"+t.Host)
	return append(a, command...)
}

// SCPArgv is the scp command line that copies src to dst, one of them in
// the guest. Directories are copied whole.
func (t Target) SCPArgv(bin string, src, dst Operand) []string {
	a := append([]string{bin, "-q", "-r", "-P", strconv.Itoa(t.Port)}, t.options()...)
	return append(a, "--", t.operand(src), t.operand(dst))
}

func (t Target) operand(o Operand) string {
	if o.VM == "" {
		return o.Path
	}
	return t.User + "@" + t.Host + ":" + o.Path
}

// Operand is one side of a copy: a host path, or a path in the guest of VM.
type Operand struct {
	VM   string
	Path string
}

// vmPrefixRE is NAME: at the start of an operand, NAME a VM name.
var vmPrefixRE = regexp.MustCompile(`^([a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}):`)

// ParseOperand reads NAME:PATH as a guest path and anything else as a host
// path. A host path with a colon in its first element is written ./a:b.
func ParseOperand(s string) (Operand, error) {
	if s == "" {
		return Operand{}, errors.New("empty path: give a host path or NAME:PATH")
	}
	m := vmPrefixRE.FindStringSubmatch(s)
	if m == nil {
		return Operand{Path: s}, nil
	}
	p := s[len(m[0]):]
	if p == "" {
		return Operand{}, fmt.Errorf("%q names no path in vm %s: write %s:/path", s, m[1], m[1])
	}
	return Operand{VM: m[1], Path: p}, nil
}

// ParseCopy reads cp's two operands: exactly one must be in a guest.
func ParseCopy(src, dst string) (Operand, Operand, error) {
	s, err := ParseOperand(src)
	if err != nil {
		return Operand{}, Operand{}, err
	}
	d, err := ParseOperand(dst)
	if err != nil {
		return Operand{}, Operand{}, err
	}
	switch {
	case s.VM == "" && d.VM == "":
		return Operand{}, Operand{}, errors.New("neither path is in a vm: write one as NAME:/path, e.g. hutch cp ./file web:/tmp/")
	case s.VM != "" && d.VM != "":
		return Operand{}, Operand{}, errors.New("both paths are in a vm: copy between a vm and the host (write a host path as ./path)")
	}
	return s, d, nil
}

// banner is how every SSH server starts talking (RFC 4253 4.2).
const banner = "SSH-"

// Answers reports whether an SSH server speaks at addr. A user-mode
// network accepts a forwarded connection before the guest does, so an
// accepted connection alone proves nothing: the banner does.
func Answers(addr string, timeout time.Duration) bool {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	// Speak first: Debian 12's passt connects to the guest only once the
	// client sends something, so a client waiting for the banner would
	// wait forever. An ssh server takes a client's banner before its own.
	if _, err := c.Write([]byte("SSH-2.0-hutch_probe\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, banner)
}

// Probe runs "true" in the guest without prompting; nil once a login with
// hutch's key works.
func Probe(ctx context.Context, bin string, t Target) error {
	argv := t.SSHArgv(bin, []string{"true"})
	argv = append(argv[:1], append([]string{"-o", "BatchMode=yes"}, argv[1:]...)...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = nil
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ssh: %s", strings.TrimSpace(string(out)))
	}
	return nil
}
