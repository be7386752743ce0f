package vm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"regexp"
	"time"

	"github.com/hutch-vm/hutch/internal/cloudinit"
	"github.com/hutch-vm/hutch/internal/guestssh"
	"github.com/hutch-vm/hutch/internal/image"
	"github.com/hutch-vm/hutch/internal/netstack"
	"github.com/hutch-vm/hutch/internal/virtiofs"
)

// cloudPlan is what goes into a VM's cloud-init seed: the user's own
// cloud-config (empty without --cloud-init), checked before anything is
// made.
type cloudPlan struct {
	doc map[string]any
}

// shareCommand is the bootcmd that mounts a VM's shares on every boot.
func shareCommand(mounts []virtiofs.GuestMount) []string {
	return []string{"sh", "-c", virtiofs.Script(mounts)}
}

// resolveImage lets IMAGE name a cached image: a path that exists wins,
// then an image of that name in the cache.
func (e *Engine) resolveImage(name string) string {
	if _, err := os.Stat(name); err == nil {
		return name
	}
	if p, ok := image.Lookup(e.Layout, name); ok {
		return p
	}
	return name
}

// planCloud checks --cloud-init and --ssh, forwards a free host port to
// the guest's port 22 for --ssh, and attaches the seed (made later, in the
// VM's data dir) as a read-only disk. It returns nil when there is no seed.
//
// A disk image with shares gets a seed even without either: cloud-init is
// what mounts them.
func (e *Engine) planCloud(s *Spec, mounts []virtiofs.GuestMount) (*cloudPlan, error) {
	if s.SSH == nil && s.CloudInit == "" && (len(mounts) == 0 || s.Image == "") {
		return nil, nil
	}
	c := &cloudPlan{doc: map[string]any{}}
	if s.CloudInit != "" {
		path, err := readable("--cloud-init", s.CloudInit, os.O_RDONLY)
		if err != nil {
			return nil, err
		}
		data, err := readLimited(path, cloudinit.MaxUserData+1)
		if err != nil {
			return nil, invalid("--cloud-init %s: %v", s.CloudInit, err)
		}
		if c.doc, err = cloudinit.ParseUserData(data); err != nil {
			return nil, invalid("--cloud-init %s: %v", s.CloudInit, err)
		}
		s.CloudInit = path
	}
	if len(mounts) > 0 && s.Image != "" {
		var err error
		if c.doc, err = cloudinit.MergeBootcmd(c.doc, shareCommand(mounts)); err != nil {
			return nil, invalid("--cloud-init %s: %v", s.CloudInit, err)
		}
	}
	if s.SSH != nil {
		if s.SSH.User == "" {
			s.SSH.User = guestUser()
		}
		// Merged now with a stand-in key, so a config that cannot take
		// the login fails before anything is made.
		if _, err := cloudinit.MergeLogin(c.doc, cloudinit.Login{User: s.SSH.User, PublicKey: "ssh-ed25519 AAAA"}); err != nil {
			return nil, invalid("--cloud-init %s: %v", s.CloudInit, err)
		}
		if s.SSH.HostPort == 0 {
			port, err := freePort()
			if err != nil {
				return nil, err
			}
			s.SSH.HostPort = port
			s.Ports = append(s.Ports, netstack.Forward{HostIP: netstack.DefaultHostIP, HostPort: port, GuestPort: 22, Protocol: "tcp"})
		}
	}
	return c, nil
}

// writeSeed makes the seed image at path: the user's cloud-config, with
// hutch's login merged in for --ssh (the key pair is made on first use).
func (e *Engine) writeSeed(s Spec, mac string, c *cloudPlan, path string) error {
	doc := c.doc
	if s.SSH != nil {
		pub, err := guestssh.EnsureKey(e.Layout.SSHKey())
		if err != nil {
			return err
		}
		if doc, err = cloudinit.MergeLogin(doc, cloudinit.Login{User: s.SSH.User, PublicKey: pub}); err != nil {
			return invalid("--cloud-init %s: %v", s.CloudInit, err)
		}
	}
	ud, err := cloudinit.UserData(doc)
	if err != nil {
		return err
	}
	iso, err := cloudinit.Seed{UserData: ud, InstanceID: "hutch-" + s.Name + "-" + newName(), Hostname: s.Name, MAC: mac}.ISO(time.Now())
	if err != nil {
		return fmt.Errorf("make cloud-init seed: %w", err)
	}
	if err := os.WriteFile(path, iso, 0o600); err != nil {
		return fmt.Errorf("write cloud-init seed: %w", err)
	}
	return nil
}

// userRE is a user name every distribution's useradd accepts.
var userRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// guestUser is the account hutch creates in the guest: the caller's own
// name, or "hutch" for root or a name a guest would refuse.
func guestUser() string {
	u, err := user.Current()
	if err != nil || u.Username == "root" || !userRE.MatchString(u.Username) {
		return "hutch"
	}
	return u.Username
}

// freePort asks the kernel for a free loopback port. The ports lock and
// the check before start guard the moment until QEMU binds it.
func freePort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(netstack.DefaultHostIP, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free host port for ssh: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// SSHTarget is how to reach a running VM's guest over ssh. It pins the
// host keys the guest has printed on its console, if it has.
func (e *Engine) SSHTarget(name string) (guestssh.Target, error) {
	rec, err := e.Get(name)
	if err != nil {
		return guestssh.Target{}, fmt.Errorf("%w: see hutch ps -a", err)
	}
	if rec.Spec.SSH == nil {
		return guestssh.Target{}, invalid("vm %q was started without --ssh: run a new one with hutch run --ssh IMAGE", name)
	}
	if st := rec.live(); st.State != StateRunning {
		return guestssh.Target{}, invalid("vm %q is %s: ssh needs a running vm: start it with hutch start %s", name, st.State, name)
	}
	p := e.Layout.VM(name)
	t := guestssh.Target{
		User: rec.Spec.SSH.User, Host: netstack.DefaultHostIP, Port: rec.Spec.SSH.HostPort,
		Key: e.Layout.SSHKey(), KnownHosts: p.KnownHosts(),
	}
	console, err := os.ReadFile(p.ConsoleLog())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return guestssh.Target{}, fmt.Errorf("read console of vm %q: %w", name, err)
	}
	if keys := guestssh.HostKeys(console); len(keys) > 0 {
		if err := guestssh.WriteKnownHosts(t.KnownHosts, guestssh.KnownHosts(t.Host, t.Port, keys)); err != nil {
			return guestssh.Target{}, fmt.Errorf("record host keys of vm %q: %w", name, err)
		}
		t.Pinned = true
	}
	return t, nil
}

// WaitSSH waits until a login over ssh works in the guest, or timeout.
func (e *Engine) WaitSSH(name string, timeout time.Duration) error {
	bin, err := guestssh.LookPath(guestssh.SSH)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	last := "the guest's ssh server never answered"
	for time.Now().Before(deadline) {
		if rec, err := e.Get(name); err == nil && rec.live().State == StateStopped {
			return fmt.Errorf("vm %q stopped before ssh answered: see what it printed with hutch logs %s", name, name)
		}
		t, err := e.SSHTarget(name)
		if err != nil {
			return err
		}
		addr := net.JoinHostPort(t.Host, fmt.Sprint(t.Port))
		if guestssh.Answers(addr, 5*time.Second) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := guestssh.Probe(ctx, bin, t)
			cancel()
			if err == nil {
				return nil
			}
			last = err.Error()
		}
		time.Sleep(2 * time.Second)
	}
	return fmt.Errorf("vm %q: no ssh login within %s (%s): see what the guest printed with hutch logs %s", name, timeout, last, name)
}

// SSHCommand is the ssh command that runs command in vm name's guest.
func (e *Engine) SSHCommand(name string, command []string) (*exec.Cmd, error) {
	bin, err := guestssh.LookPath(guestssh.SSH)
	if err != nil {
		return nil, err
	}
	t, err := e.SSHTarget(name)
	if err != nil {
		return nil, err
	}
	argv := t.SSHArgv(bin, command)
	return exec.Command(argv[0], argv[1:]...), nil
}

// CopyCommand is the scp command that copies src to dst, exactly one of
// them written NAME:PATH.
func (e *Engine) CopyCommand(src, dst string) (*exec.Cmd, error) {
	s, d, err := guestssh.ParseCopy(src, dst)
	if err != nil {
		return nil, invalid("%v", err)
	}
	bin, err := guestssh.LookPath(guestssh.SCP)
	if err != nil {
		return nil, err
	}
	vm := s.VM + d.VM
	t, err := e.SSHTarget(vm)
	if err != nil {
		return nil, err
	}
	argv := t.SCPArgv(bin, s, d)
	return exec.Command(argv[0], argv[1:]...), nil
}
