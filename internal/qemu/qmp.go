package qemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// QMP is a connection to a VM's QEMU Machine Protocol socket, past the
// capabilities handshake.
type QMP struct {
	conn net.Conn
	r    *bufio.Reader
}

// DialQMP connects and negotiates capabilities within timeout.
func DialQMP(path string, timeout time.Duration) (*QMP, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, fmt.Errorf("connect to qmp: %w", err)
	}
	q, err := NewQMP(c, timeout)
	if err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

// NewQMP runs the handshake on an open connection.
func NewQMP(c net.Conn, timeout time.Duration) (*QMP, error) {
	q := &QMP{conn: c, r: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(timeout))
	var greeting struct {
		QMP json.RawMessage `json:"QMP"`
	}
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("read qmp greeting: %w", err)
	}
	if err := json.Unmarshal(line, &greeting); err != nil || greeting.QMP == nil {
		return nil, fmt.Errorf("unexpected qmp greeting %q", line)
	}
	if err := q.Execute("qmp_capabilities"); err != nil {
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return q, nil
}

// Execute runs a command without arguments and waits for its reply,
// skipping asynchronous events.
func (q *QMP) Execute(cmd string) error {
	_, err := q.execute(map[string]any{"execute": cmd})
	return err
}

// HumanCommand runs a human monitor command (for those QMP lacks, like
// hostfwd_add) and returns its output, which is where such commands say
// they failed.
func (q *QMP) HumanCommand(line string) (string, error) {
	ret, err := q.execute(map[string]any{"execute": "human-monitor-command", "arguments": map[string]string{"command-line": line}})
	if err != nil {
		return "", err
	}
	var out string
	json.Unmarshal(ret, &out)
	return out, nil
}

func (q *QMP) execute(msg map[string]any) (json.RawMessage, error) {
	cmd := msg["execute"]
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		var reply struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
		}
		if err := json.Unmarshal(line, &reply); err != nil {
			return nil, fmt.Errorf("qmp %s: bad reply %q", cmd, line)
		}
		if reply.Error != nil {
			return nil, fmt.Errorf("qmp %s: %s", cmd, reply.Error.Desc)
		}
		if reply.Return != nil {
			return reply.Return, nil
		}
	}
}

// Close ends the connection.
func (q *QMP) Close() error { return q.conn.Close() }
