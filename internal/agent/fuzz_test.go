package agent

import (
	"bytes"
	"testing"
)

// FuzzRecv: whatever arrives on the channel, Recv returns frames within
// the limit or an error; it never panics or allocates past MaxPayload.
func FuzzRecv(f *testing.F) {
	var buf bytes.Buffer
	c := NewConn(&buf)
	c.SendJSON(TypeSetup, 0, Setup{Rootfs: "/dev/vda", Mounts: []Mount{{Destination: "/proc", Type: "proc"}}})
	c.Send(TypeStdin, 3, []byte("data"))
	f.Add(buf.Bytes())
	f.Add([]byte{1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, stream []byte) {
		c := NewConn(bytes.NewBuffer(stream))
		for {
			fr, err := c.Recv()
			if err != nil {
				return
			}
			if len(fr.Payload) > MaxPayload {
				t.Fatalf("payload of %d bytes", len(fr.Payload))
			}
			var s Setup
			fr.Decode(&s)
		}
	})
}
