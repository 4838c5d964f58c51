// go-echo: a TCP echo server on Go's net package, the idiomatic way: one goroutine per
// connection, each with its own 32 KiB buffer, blocking Read and Write (the runtime's netpoller
// does the epoll). A baseline for reflectd's benchmarks; see ../README.md for the conventions.
//
//	go-echo [--port P]
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

const bufferSize = 32 * 1024

func usage(status int) {
	fmt.Fprintln(os.Stderr, "usage: go-echo [--port P]   (default port 8887; 0 picks a free port)")
	os.Exit(status)
}

func parsePort(args []string) int {
	port := 8887
	set := func(v string) {
		p, err := strconv.Atoi(v)
		if err != nil || p < 0 || p > 65535 {
			fmt.Fprintf(os.Stderr, "go-echo: bad port %q\n", v)
			os.Exit(2)
		}
		port = p
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--help" || a == "-h":
			usage(0)
		case a == "--port" || a == "-p":
			if i+1 >= len(args) {
				fmt.Fprintf(os.Stderr, "go-echo: %s needs a value\n", a)
				os.Exit(2)
			}
			i++
			set(args[i])
		case strings.HasPrefix(a, "--port="):
			set(strings.TrimPrefix(a, "--port="))
		case !strings.HasPrefix(a, "-"):
			set(a)
		default:
			fmt.Fprintf(os.Stderr, "go-echo: unknown option %s\n", a)
			usage(2)
		}
	}
	return port
}

func main() {
	port := parsePort(os.Args[1:])
	// Go's listener sets SO_REUSEADDR, and accepted TCP connections get TCP_NODELAY by default.
	ln, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-echo: listen: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "listening on 0.0.0.0:%d\n", ln.Addr().(*net.TCPAddr).Port)

	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	var wg sync.WaitGroup
	stopping := false

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		mu.Lock()
		stopping = true
		ln.Close()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()

	for {
		c, err := ln.Accept()
		if err != nil {
			mu.Lock()
			done := stopping
			mu.Unlock()
			if done {
				break
			}
			// EMFILE and friends: the accept loop retries; Go's netpoller does not spin on it.
			continue
		}
		mu.Lock()
		if stopping {
			mu.Unlock()
			c.Close()
			continue
		}
		conns[c] = struct{}{}
		wg.Add(1)
		mu.Unlock()
		go func(c net.Conn) {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			// A plain Read/Write loop, not io.Copy: io.Copy between TCP connections would use
			// splice(2), and the point is the ordinary read-into-a-buffer echo every server does.
			buf := make([]byte, bufferSize)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}(c)
	}
	wg.Wait()
	os.Exit(0)
}
