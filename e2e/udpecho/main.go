// Command udpecho is a test helper put into the e2e suites' images (busybox
// has no UDP server or client): as a server it answers each datagram it
// receives on the port its argument names with "echo:" and the datagram,
// to the sender; as a client it sends one datagram and prints the answer.
// Its tcp modes serve the e2e network benchmark (bench_net_test.go): a TCP
// server, and a client that measures throughput both ways and one-byte
// round trips against it.
//
//	udpecho PORT
//	udpecho ask HOST:PORT MESSAGE
//	udpecho tcpserve PORT
//	udpecho tcpbench HOST:PORT MIB PINGS
//
// Both tcp modes are internal/tcpbench's server and client (the protocol
// vmm's BenchmarkVirtioNet uses too; see its doc). tcpbench prints one
// line, times as the client measured them:
//
//	tcpbench bytes=N tx_ns=T rx_ns=R rtt_median_ns=M rtt_p10_ns=A rtt_p90_ns=B pings=K
package main

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/hyperhq/hyperd-go/internal/tcpbench"
)

const usage = "usage: udpecho PORT | udpecho ask HOST:PORT MESSAGE | udpecho tcpserve PORT | udpecho tcpbench HOST:PORT MIB PINGS"

func main() {
	if len(os.Args) == 4 && os.Args[1] == "ask" {
		ask(os.Args[2], os.Args[3])
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "tcpserve" {
		tcpServe(os.Args[2])
		return
	}
	if len(os.Args) == 5 && os.Args[1] == "tcpbench" {
		tcpBench(os.Args[2], os.Args[3], os.Args[4])
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, usage)
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

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "udpecho: "+format+"\n", args...)
	os.Exit(1)
}

// tcpServe serves internal/tcpbench's protocol on port.
func tcpServe(port string) {
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		die("%v", err)
	}
	fmt.Println("udpecho: tcp listening on", ln.Addr())
	s := &tcpbench.Server{Report: func(_ tcpbench.Result, err error) {
		if err != nil {
			fmt.Fprintln(os.Stderr, "udpecho:", err)
		}
	}}
	die("%v", s.Serve(ln))
}

// tcpBench measures, against a tcpserve at addr, the time to send mib MiB
// (until the server has them all), to receive as much, and pings one-byte
// round trips (after tcpbench.Warmup not counted), and prints them.
func tcpBench(addr, mibArg, pingsArg string) {
	mib, err1 := strconv.Atoi(mibArg)
	pings, err2 := strconv.Atoi(pingsArg)
	if err1 != nil || err2 != nil || mib <= 0 || pings <= 0 {
		die("tcpbench: MIB and PINGS must be positive numbers")
	}
	n := int64(mib) << 20
	// the server's container may not listen yet
	c := tcpbench.Client{Addr: addr, DialFor: 30 * time.Second}
	tx, _, err := c.Sink(n)
	if err != nil {
		die("tcpbench: %v", err)
	}
	rx, _, err := c.Source(n)
	if err != nil {
		die("tcpbench: %v", err)
	}
	rtts, err := c.Ping(pings)
	if err != nil {
		die("tcpbench: %v", err)
	}
	slices.Sort(rtts)
	fmt.Printf("tcpbench bytes=%d tx_ns=%d rx_ns=%d rtt_median_ns=%d rtt_p10_ns=%d rtt_p90_ns=%d pings=%d\n", n, tx.Nanoseconds(), rx.Nanoseconds(),
		rtts[len(rtts)/2].Nanoseconds(), rtts[len(rtts)/10].Nanoseconds(), rtts[len(rtts)*9/10].Nanoseconds(), len(rtts))
}
