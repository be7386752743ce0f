package supervise

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// consoleLogMax bounds the console log; one older file is kept beside it.
const consoleLogMax = 1 << 20

// mux fans the serial console out to the log and every attached client,
// and feeds what clients type back to the guest.
type mux struct {
	serial net.Conn
	log    io.WriteCloser
	l      *net.UnixListener

	done chan struct{} // closed when the serial reaches EOF

	mu      sync.Mutex
	clients map[net.Conn]bool
	closed  bool
}

func newMux(serial net.Conn, log io.WriteCloser, l *net.UnixListener) *mux {
	return &mux{serial: serial, log: log, l: l, clients: map[net.Conn]bool{}, done: make(chan struct{})}
}

func (m *mux) run() {
	defer close(m.done)
	go m.accept()
	buf := make([]byte, 32<<10)
	for {
		n, err := m.serial.Read(buf)
		if n > 0 {
			m.log.Write(buf[:n])
			m.broadcast(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (m *mux) accept() {
	for {
		c, err := m.l.Accept()
		if err != nil {
			return
		}
		m.add(c)
	}
}

func (m *mux) add(c net.Conn) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		c.Close()
		return
	}
	m.clients[c] = true
	m.mu.Unlock()
	go func() {
		io.Copy(m.serial, c)
		m.drop(c)
	}()
}

func (m *mux) drop(c net.Conn) {
	m.mu.Lock()
	delete(m.clients, c)
	m.mu.Unlock()
	c.Close()
}

// broadcast writes to every client; a client that cannot keep up within a
// second is dropped rather than stalling the guest's console.
func (m *mux) broadcast(b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for c := range m.clients {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(b); err != nil {
			delete(m.clients, c)
			c.Close()
		}
	}
}

// close ends every client session, which tells an attached user the VM
// has gone.
func (m *mux) close() {
	if m == nil {
		return
	}
	// QEMU has exited, so the serial reaches EOF once its last words are
	// read; wait for them, briefly, before hanging up on clients.
	select {
	case <-m.done:
	case <-time.After(time.Second):
	}
	m.mu.Lock()
	m.closed = true
	for c := range m.clients {
		c.Close()
	}
	m.clients = nil
	m.mu.Unlock()
	m.l.Close()
	m.serial.Close()
	m.log.Close()
}

// ring is a log file that, past max bytes, is moved to path.1 and started
// afresh, so a chatty guest never fills the disk.
type ring struct {
	path string
	max  int64
	f    *os.File
	size int64
}

func openRing(path string, max int64) (*ring, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open console log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open console log: %w", err)
	}
	return &ring{path: path, max: max, f: f, size: fi.Size()}, nil
}

func (r *ring) Write(b []byte) (int, error) {
	if r.size+int64(len(b)) > r.max && r.size > 0 {
		r.f.Close()
		os.Rename(r.path, r.path+".1")
		f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return 0, err
		}
		r.f, r.size = f, 0
	}
	n, err := r.f.Write(b)
	r.size += int64(n)
	return n, err
}

func (r *ring) Close() error { return r.f.Close() }
