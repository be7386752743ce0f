// Package console attaches a terminal to a VM's serial console.
package console

import (
	"bytes"
	"io"
	"os"

	"golang.org/x/term"
)

// DetachKey is Ctrl-], the key telnet and virsh console use to get out.
const DetachKey = 0x1d

// Attach copies between the user's terminal and conn until the VM ends
// (conn reaches EOF) or the user presses the detach key. A terminal on
// stdin is put in raw mode so keys reach the guest as typed.
func Attach(conn io.ReadWriteCloser, stdin *os.File, stdout io.Writer) (detached bool, err error) {
	if term.IsTerminal(int(stdin.Fd())) {
		old, err := term.MakeRaw(int(stdin.Fd()))
		if err == nil {
			defer term.Restore(int(stdin.Fd()), old)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(stdout, conn)
		done <- err
	}()
	input := make(chan bool, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := stdin.Read(buf)
			if n > 0 {
				chunk := buf[:n]
				i := bytes.IndexByte(chunk, DetachKey)
				if i >= 0 {
					chunk = chunk[:i]
				}
				if _, werr := conn.Write(chunk); werr != nil {
					return
				}
				if i >= 0 {
					input <- true
					return
				}
			}
			if err != nil {
				// End of input is not a detach: keep showing output
				// until the VM ends, as a piped `run` expects.
				return
			}
		}
	}()
	select {
	case err := <-done:
		conn.Close()
		return false, err
	case <-input:
		conn.Close()
		return true, nil
	}
}
