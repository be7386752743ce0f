package vm

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Logs copies the VM's console log to w: the rotated part, then the
// current file. With follow it keeps copying until the VM stops.
func (e *Engine) Logs(name string, follow bool, w io.Writer) error {
	if _, err := e.Get(name); err != nil {
		return err
	}
	p := e.Layout.VM(name)
	if f, err := os.Open(p.ConsoleLog() + ".1"); err == nil {
		_, err = io.Copy(w, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	f, err := os.Open(p.ConsoleLog())
	if errors.Is(err, os.ErrNotExist) && !follow {
		return nil
	}
	for err != nil && follow {
		// Not written yet: the VM is still starting.
		if !e.running(name) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
		f, err = os.Open(p.ConsoleLog())
	}
	if err != nil {
		return fmt.Errorf("read console log: %w", err)
	}
	defer func() { f.Close() }()
	for {
		if _, err := io.Copy(w, f); err != nil {
			return err
		}
		if !follow {
			return nil
		}
		if !e.running(name) {
			_, err := io.Copy(w, f) // what came before the end
			return err
		}
		if rotated(f, p.ConsoleLog()) {
			io.Copy(w, f)
			f.Close()
			if f, err = os.Open(p.ConsoleLog()); err != nil {
				return nil
			}
			continue
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *Engine) running(name string) bool {
	rec, err := e.Get(name)
	return err == nil && rec.live().State == StateRunning
}

// rotated reports whether path no longer names the open file f.
func rotated(f *os.File, path string) bool {
	a, err1 := f.Stat()
	b, err2 := os.Stat(path)
	if err1 != nil || err2 != nil {
		return err2 != nil
	}
	return a.Sys().(*syscall.Stat_t).Ino != b.Sys().(*syscall.Stat_t).Ino
}

// Console connects to a running VM's serial console.
func (e *Engine) Console(name string) (net.Conn, error) {
	rec, err := e.Get(name)
	if err != nil {
		return nil, err
	}
	if rec.live().State != StateRunning {
		return nil, fmt.Errorf("vm %q is not running", name)
	}
	c, err := net.Dial("unix", rec.paths(e.Layout).Console())
	if err != nil {
		return nil, fmt.Errorf("attach to the console of vm %q: %w", name, err)
	}
	return c, nil
}
