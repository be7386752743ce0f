// Package cloudinit makes the NoCloud seed a cloud image reads at first
// boot: an ISO 9660 image labelled cidata holding user-data, meta-data and
// network-config, built in memory without root or external tools.
package cloudinit

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Label is the volume label cloud-init's NoCloud source looks for.
const Label = "cidata"

// header is the first line cloud-init requires of cloud-config user-data.
const header = "#cloud-config"

// UserDataError is user-data hutch cannot use; its text names the problem
// and the fix in one line.
type UserDataError struct{ msg string }

func (e *UserDataError) Error() string { return e.msg }

// maxUserData bounds what is read and parsed; cloud-init's own limit for
// a NoCloud seed file is far above what a hand-written config needs.
const maxUserData = 1 << 20

// MaxUserData is how much of a user-data file is ever read: one byte
// past the limit is enough to refuse it.
const MaxUserData = maxUserData

// ParseUserData checks that data is cloud-config: the #cloud-config
// header, then a YAML mapping. It returns the mapping.
func ParseUserData(data []byte) (map[string]any, error) {
	if len(data) > maxUserData {
		return nil, &UserDataError{fmt.Sprintf("user-data is %d bytes: keep it under %d", len(data), maxUserData)}
	}
	first, _, _ := strings.Cut(string(data), "\n")
	if strings.TrimRight(first, " \t\r") != header {
		return nil, &UserDataError{"user-data must start with a line reading " + header + " (scripts and MIME archives are not supported)"}
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := strings.ReplaceAll(err.Error(), "\n", "; ")
		if strings.Contains(msg, "cannot unmarshal") {
			return nil, &UserDataError{"user-data is not a YAML mapping of cloud-config keys: write key: value lines"}
		}
		return nil, &UserDataError{"user-data is not valid YAML (" + strings.TrimPrefix(msg, "yaml: ") + "): fix the file"}
	}
	if doc == nil {
		doc = map[string]any{}
	}
	return doc, nil
}

// Login is the account hutch adds to a guest so that it can ssh in.
type Login struct {
	User      string
	PublicKey string
}

// MergeLogin adds l to the cloud-config doc: a user with passwordless sudo
// and l's key, or l's key on the doc's own user of that name. The doc's
// other users, and "default" when it names no users, are kept.
func MergeLogin(doc map[string]any, l Login) (map[string]any, error) {
	out := make(map[string]any, len(doc)+2)
	for k, v := range doc {
		out[k] = v
	}
	// The hostname hutch's meta-data gives must resolve, or every sudo in
	// the guest warns "unable to resolve host"; the user's own choice stays.
	if _, set := out["manage_etc_hosts"]; !set {
		out["manage_etc_hosts"] = true
	}
	var users []any
	switch u := doc["users"].(type) {
	case nil:
	case []any:
		users = append(users, u...)
	default:
		return nil, &UserDataError{"user-data key users must be a list: write users: followed by - entries"}
	}
	for i, u := range users {
		m, ok := u.(map[string]any)
		if !ok || m["name"] != l.User {
			continue
		}
		m = copyMap(m)
		keys, err := stringList(m["ssh_authorized_keys"], "users: "+l.User+": ssh_authorized_keys")
		if err != nil {
			return nil, err
		}
		m["ssh_authorized_keys"] = append(keys, l.PublicKey)
		users[i] = m
		out["users"] = users
		return out, nil
	}
	users = append(users, map[string]any{
		"name":                l.User,
		"shell":               "/bin/bash",
		"sudo":                "ALL=(ALL) NOPASSWD:ALL",
		"lock_passwd":         true,
		"ssh_authorized_keys": []any{l.PublicKey},
	})
	out["users"] = users
	return out, nil
}

func copyMap(m map[string]any) map[string]any {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func stringList(v any, what string) ([]any, error) {
	switch l := v.(type) {
	case nil:
		return nil, nil
	case []any:
		return append([]any(nil), l...), nil
	default:
		return nil, &UserDataError{"user-data " + what + " must be a list of keys"}
	}
}

// UserData renders doc as cloud-config.
func UserData(doc map[string]any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(header + "\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("render user-data: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render user-data: %w", err)
	}
	return b.Bytes(), nil
}

// MetaData names the instance. A new instance id makes cloud-init run its
// first-boot modules again, as for a new VM.
func MetaData(instanceID, hostname string) []byte {
	return fmt.Appendf(nil, "instance-id: %s\nlocal-hostname: %s\n", instanceID, hostname)
}

// NetworkConfig is version 2 network config that brings up the NIC with
// address mac by DHCP, as the user-mode networks (slirp, passt) and a
// bridge's DHCP server expect. The NIC is matched by its address and
// named eth0: a name pattern would do, but cloud-init's networkd renderer
// (Debian 12) writes the entry's id as the interface name.
func NetworkConfig(mac string) []byte {
	return fmt.Appendf(nil, `version: 2
ethernets:
  eth0:
    match:
      macaddress: "%s"
    set-name: eth0
    dhcp4: true
`, mac)
}

// Seed is what goes into a seed image.
type Seed struct {
	UserData   []byte
	InstanceID string
	Hostname   string
	// MAC is the address of the NIC brought up by DHCP.
	MAC string
}

// ISO returns the seed as an ISO 9660 image labelled cidata.
func (s Seed) ISO(now time.Time) ([]byte, error) {
	if s.InstanceID == "" || s.Hostname == "" || s.MAC == "" {
		return nil, errors.New("seed: instance id, hostname and mac are required")
	}
	return WriteISO(Label, []File{
		{Name: "user-data", Data: s.UserData},
		{Name: "meta-data", Data: MetaData(s.InstanceID, s.Hostname)},
		{Name: "network-config", Data: NetworkConfig(s.MAC)},
	}, now)
}

// MergeBootcmd appends commands to the doc's bootcmd, which cloud-init
// runs early on every boot: what must hold on each boot (mounts of a VM's
// shares) goes there, after the user's own.
func MergeBootcmd(doc map[string]any, cmds ...[]string) (map[string]any, error) {
	out := copyMap(doc)
	var list []any
	switch b := doc["bootcmd"].(type) {
	case nil:
	case []any:
		list = append(list, b...)
	default:
		return nil, &UserDataError{"user-data key bootcmd must be a list: write bootcmd: followed by - entries"}
	}
	for _, c := range cmds {
		argv := make([]any, len(c))
		for i, a := range c {
			argv[i] = a
		}
		list = append(list, argv)
	}
	out["bootcmd"] = list
	return out, nil
}
