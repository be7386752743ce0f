package console

import (
	"bytes"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func TestDetachKeyStopsAtTheKey(t *testing.T) {
	guest, conn := net.Pipe()
	stdinR, stdinW, _ := os.Pipe()
	defer stdinW.Close()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(guest)
		got <- b
	}()
	res := make(chan bool, 1)
	go func() {
		d, _ := Attach(conn, stdinR, io.Discard)
		res <- d
	}()
	stdinW.Write([]byte("ls\r\x1dnot this"))
	select {
	case d := <-res:
		if !d {
			t.Fatal("Attach returned without detaching")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Ctrl-] did not detach")
	}
	if b := <-got; !bytes.Equal(b, []byte("ls\r")) {
		t.Errorf("guest received %q, want what came before Ctrl-]", b)
	}
}

func TestAttachEndsWhenTheVMDoes(t *testing.T) {
	guest, conn := net.Pipe()
	stdinR, stdinW, _ := os.Pipe()
	defer stdinW.Close()
	var out bytes.Buffer
	res := make(chan bool, 1)
	go func() {
		d, _ := Attach(conn, stdinR, &out)
		res <- d
	}()
	guest.Write([]byte("reboot: Power down\r\n"))
	guest.Close()
	select {
	case d := <-res:
		if d {
			t.Error("a VM that ended was reported as a detach")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Attach did not return when the console closed")
	}
	if out.String() != "reboot: Power down\r\n" {
		t.Errorf("output %q", out.String())
	}
}
