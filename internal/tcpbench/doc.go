// Package tcpbench is the TCP benchmark protocol of the network
// benchmarks: one server and one client, shared by vmm's
// BenchmarkVirtioNet (an in-process server, the client in the guest's
// vmm/testdata/netinit) and the e2e pod-network benchmark (both ends in
// e2e/udpecho, the tcpserve and tcpbench modes).
//
// One TCP connection per measurement, each opened by the client with a
// command line:
//
//	SINK n      the client sends n bytes; the server answers "OK <ns>\n",
//	            ns from its first byte read to its last
//	SOURCE n    the server sends n bytes; the client answers "DONE\n" after
//	            the last, the server "OK <ns>\n", ns from its first write
//	            to DONE
//	ECHO        the server echoes every byte until EOF (the client pings);
//	            it times each round trip too, from a pong's write to the
//	            next ping's arrival
//
// The package is internal: a test helper, static and cgo-free, so that
// guest test programs built with CGO_ENABLED=0 can use it.
package tcpbench
