package supervise

import (
	"os"

	"github.com/hutch-vm/hutch/internal/netstack"
)

// openTap makes the VM's tap: as root directly, as a user through QEMU's
// setuid bridge helper, which enforces the administrator's ACL.
func (s *supervisor) openTap() (*os.File, error) {
	if h := s.rec.Plan.BridgeHelper; h != nil {
		return netstack.OpenBridgeTap(h.Binary, h.Args[0])
	}
	return netstack.CreateTap(s.rec.Spec.Bridge)
}
