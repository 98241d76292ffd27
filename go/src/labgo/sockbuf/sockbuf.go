// Package sockbuf reads a socket's buffer sizes, which the Go server and agent both report
// (the UDP buffers quic-go got).
package sockbuf

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Sizes is SO_RCVBUF and SO_SNDBUF of a socket as the kernel reports them (bytes; Linux
// reports twice the value set, for its bookkeeping); -1, -1 when the socket cannot be read.
func Sizes(c syscall.Conn) (rcv, snd int) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, -1
	}
	_ = raw.Control(func(fd uintptr) {
		rcv, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	return rcv, snd
}
