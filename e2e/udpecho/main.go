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
// The tcp protocol is vmm/testdata/netinit's, one connection per
// measurement, opened by the client's command line:
//
//	SINK n      the client sends n bytes; the server answers "OK <ns>\n"
//	SOURCE n    the server sends n bytes; the client answers "DONE\n", the
//	            server "OK <ns>\n"
//	ECHO        the server echoes every byte until EOF
//
// tcpbench prints one line, times as the client measured them:
//
//	tcpbench bytes=N tx_ns=T rx_ns=R rtt_median_ns=M rtt_p10_ns=A rtt_p90_ns=B pings=K
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
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

// tcpServe serves SINK, SOURCE and ECHO connections on port.
func tcpServe(port string) {
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		die("%v", err)
	}
	fmt.Println("udpecho: tcp listening on", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			die("%v", err)
		}
		go func() {
			defer c.Close()
			if err := tcpHandle(c.(*net.TCPConn)); err != nil {
				fmt.Fprintln(os.Stderr, "udpecho:", err)
			}
		}()
	}
}

func tcpHandle(c *net.TCPConn) error {
	c.SetNoDelay(true)
	r := bufio.NewReaderSize(c, 256<<10)
	line, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("command: %q %w", line, err)
	}
	cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
	n, _ := strconv.ParseInt(arg, 10, 64)
	switch cmd {
	case "SINK":
		t0 := time.Now()
		if got, err := io.CopyN(io.Discard, r, n); err != nil {
			return fmt.Errorf("SINK: %d of %d bytes: %w", got, n, err)
		}
		_, err := fmt.Fprintf(c, "OK %d\n", time.Since(t0).Nanoseconds())
		return err
	case "SOURCE":
		buf := make([]byte, 64<<10)
		t0 := time.Now()
		for left := n; left > 0; {
			k, err := c.Write(buf[:min(left, int64(len(buf)))])
			if err != nil {
				return fmt.Errorf("SOURCE: %w", err)
			}
			left -= int64(k)
		}
		if done, err := r.ReadString('\n'); err != nil || done != "DONE\n" {
			return fmt.Errorf("SOURCE: the client's DONE: %q %v", done, err)
		}
		_, err := fmt.Fprintf(c, "OK %d\n", time.Since(t0).Nanoseconds())
		return err
	case "ECHO":
		_, err := io.Copy(c, r)
		return err
	}
	return fmt.Errorf("unknown command %q", line)
}

// tcpDial connects to addr, retrying for 30 s (the server's container may
// not listen yet).
func tcpDial(addr string) *net.TCPConn {
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
			return c.(*net.TCPConn)
		}
	}
	die("%v", err)
	return nil
}

// tcpBench measures, against a tcpserve at addr, the time to send mib MiB
// (until the server has them all), to receive as much, and pings one-byte
// round trips (after 10 not counted), and prints them.
func tcpBench(addr, mibArg, pingsArg string) {
	mib, err1 := strconv.Atoi(mibArg)
	pings, err2 := strconv.Atoi(pingsArg)
	if err1 != nil || err2 != nil || mib <= 0 || pings <= 0 {
		die("tcpbench: MIB and PINGS must be positive numbers")
	}
	n := int64(mib) << 20
	buf := make([]byte, 64<<10)

	// client -> server
	c := tcpDial(addr)
	t0 := time.Now()
	fmt.Fprintf(c, "SINK %d\n", n)
	for left := n; left > 0; {
		k, err := c.Write(buf[:min(left, int64(len(buf)))])
		if err != nil {
			die("tcpbench: SINK: %v", err)
		}
		left -= int64(k)
	}
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "OK ") {
		die("tcpbench: SINK answered %q %v", line, err)
	}
	tx := time.Since(t0)
	c.Close()

	// server -> client
	c = tcpDial(addr)
	r := bufio.NewReaderSize(c, 256<<10)
	t0 = time.Now()
	fmt.Fprintf(c, "SOURCE %d\n", n)
	if got, err := io.CopyN(io.Discard, r, n); err != nil {
		die("tcpbench: SOURCE: %d of %d bytes: %v", got, n, err)
	}
	rx := time.Since(t0)
	io.WriteString(c, "DONE\n")
	r.ReadString('\n')
	c.Close()

	// round trips
	c = tcpDial(addr)
	c.SetNoDelay(true)
	io.WriteString(c, "ECHO\n")
	const warm = 10
	b := []byte{'p'}
	var rtts []time.Duration
	for i := 0; i < warm+pings; i++ {
		t := time.Now()
		if _, err := c.Write(b); err != nil {
			die("tcpbench: ping: %v", err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			die("tcpbench: pong %d: %v", i, err)
		}
		if i >= warm {
			rtts = append(rtts, time.Since(t))
		}
	}
	c.Close()
	slices.Sort(rtts)
	fmt.Printf("tcpbench bytes=%d tx_ns=%d rx_ns=%d rtt_median_ns=%d rtt_p10_ns=%d rtt_p90_ns=%d pings=%d\n", n, tx.Nanoseconds(), rx.Nanoseconds(),
		rtts[len(rtts)/2].Nanoseconds(), rtts[len(rtts)/10].Nanoseconds(), rtts[len(rtts)*9/10].Nanoseconds(), len(rtts))
}
