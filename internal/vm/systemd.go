package vm

import (
	"fmt"
	"path/filepath"
	"strings"
)

// SystemdUnit is a systemd user unit that starts VM name at login (or at
// boot, with lingering) and stops it with the session: hutch start runs
// once and returns, the supervisor it leaves stays in the unit's cgroup,
// and ExecStop asks the guest to power off as hutch stop does.
func (e *Engine) SystemdUnit(name, hutch string) (string, error) {
	if _, err := e.Get(name); err != nil {
		return "", err
	}
	q := func(s string) string {
		// systemd's own quoting: double quotes, with \ and " escaped.
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# hutch-%[1]s.service: made by hutch generate systemd %[1]s
# Install: save as ~/.config/systemd/user/hutch-%[1]s.service, then
#   systemctl --user daemon-reload && systemctl --user enable --now hutch-%[1]s
# To start it at boot without a login: loginctl enable-linger $USER
[Unit]
Description=hutch VM %[1]s
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
Environment=XDG_RUNTIME_DIR=%%t
Environment=%[4]s
ExecStart=%[2]s start %[3]s
ExecStop=%[2]s stop -t 30 %[3]s
TimeoutStopSec=60

[Install]
WantedBy=default.target
`, name, q(hutch), q(name), q("XDG_DATA_HOME="+filepath.Dir(e.Layout.DataRoot)))
	return b.String(), nil
}
