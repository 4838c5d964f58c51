// The UDP echo as a Go programmer writes it with the standard library: one goroutine,
// ReadFrom + WriteTo per datagram (net.PacketConn), for benchmarks/udp.sh.
//
//	go-udp PORT   (binds 127.0.0.1:PORT; PORT 0 picks one; prints "listening on udp ...")
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	port := "0"
	if len(os.Args) > 1 {
		port = os.Args[1]
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on udp %s\n", conn.LocalAddr())
	buffer := make([]byte, 65536)
	for {
		n, from, err := conn.ReadFrom(buffer)
		if err != nil {
			continue
		}
		conn.WriteTo(buffer[:n], from)
	}
}
