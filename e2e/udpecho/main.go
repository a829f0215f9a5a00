// Command udpecho is a test helper put into the e2e suites' images (busybox
// has no UDP server or client): as a server it answers each datagram it
// receives on the port its argument names with "echo:" and the datagram,
// to the sender; as a client it sends one datagram and prints the answer.
//
//	udpecho PORT
//	udpecho ask HOST:PORT MESSAGE
package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	if len(os.Args) == 4 && os.Args[1] == "ask" {
		ask(os.Args[2], os.Args[3])
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: udpecho PORT | udpecho ask HOST:PORT MESSAGE")
		os.Exit(2)
	}
	c, err := net.ListenPacket("udp", ":"+os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "udpecho:", err)
		os.Exit(1)
	}
	fmt.Println("udpecho: listening on", c.LocalAddr())
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "udpecho:", err)
			os.Exit(1)
		}
		if _, err := c.WriteTo(append([]byte("echo:"), buf[:n]...), from); err != nil {
			fmt.Fprintln(os.Stderr, "udpecho:", err)
		}
	}
}

// ask sends msg to addr, resending once a second, and prints the first
// answer (5 tries).
func ask(addr, msg string) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "udpecho:", err)
		os.Exit(1)
	}
	buf := make([]byte, 65536)
	for i := 0; i < 5; i++ {
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil {
			fmt.Println(string(buf[:n]))
			return
		}
	}
	fmt.Fprintln(os.Stderr, "udpecho: no answer from", addr)
	os.Exit(1)
}
