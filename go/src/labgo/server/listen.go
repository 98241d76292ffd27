package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// listeners are the TCP (h2) and UDP (h3) sockets on one port.
type listeners struct {
	tcp  net.Listener
	udp  *net.UDPConn
	port int
}

// listen binds TCP first (port 0 picks a free one), then UDP on the same port; with port 0 it
// retries when that UDP port is taken. tcpCC, when set, is the TCP listener's TCP_CONGESTION,
// which accepted connections inherit.
func listen(host string, port int, tcpCC string) (listeners, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		if tcpCC == "" {
			return nil
		}
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, tcpCC)
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("TCP_CONGESTION %q: %w", tcpCC, serr)
		}
		return nil
	}}
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		tcp, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return listeners{}, err
		}
		got := tcp.Addr().(*net.TCPAddr).Port
		udpAddr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(host, strconv.Itoa(got)))
		if err != nil {
			tcp.Close()
			return listeners{}, err
		}
		udp, err := net.ListenUDP("udp", udpAddr)
		if err == nil {
			return listeners{tcp: tcp, udp: udp, port: got}, nil
		}
		tcp.Close()
		lastErr = err
		if port != 0 {
			break
		}
	}
	return listeners{}, lastErr
}

// tcpCongestion is the TCP_CONGESTION of a TCP listener.
func tcpCongestion(ln net.Listener) string {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return "?"
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return "?"
	}
	name := "?"
	_ = raw.Control(func(fd uintptr) {
		if v, err := unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION); err == nil {
			name = strings.TrimRight(v, "\x00")
		}
	})
	return name
}
