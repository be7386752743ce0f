// Command udpecho answers every UDP datagram on port 7 with itself: the
// test guest's UDP service, since busybox has no UDP server to offer.
package main

import (
	"log"
	"net"
)

func main() {
	c, err := net.ListenPacket("udp", ":7")
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 65536)
	for {
		n, addr, err := c.ReadFrom(buf)
		if err != nil {
			continue
		}
		c.WriteTo(buf[:n], addr)
	}
}
