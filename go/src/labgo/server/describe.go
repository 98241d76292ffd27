package main

import (
	"fmt"
	"strings"

	"github.com/lucas-clemente/quic-go"
	"golang.org/x/net/http2"

	"labgo/sockbuf"
	"labgo/version"
)

// describe is the readiness text on stdout (like `lab serve`'s): addresses, certificate,
// protocol settings, UDP socket buffers, the QUIC sender log and versions.
func describe(o options, l listeners, h2 *http2.Server, q *quic.Config) string {
	rcv, snd := sockbuf.Sizes(l.udp)
	cc := o.tcpCC
	if cc == "" {
		cc = "kernel-default"
	}
	senderLog := o.senderLog
	if senderLog == "" {
		senderLog = "off"
	}
	lines := []string{
		fmt.Sprintf("%s: listening on port %d", program, l.port),
		fmt.Sprintf("  h2   tcp  %s  (TLS 1.3, ALPN h2, http/1.1; Go net/http + x/net/http2)", l.tcp.Addr()),
		fmt.Sprintf("  h3   udp  %s  (QUIC, ALPN h3; quic-go http3.Server)", l.udp.LocalAddr()),
		fmt.Sprintf("  certificate %s", o.certFile),
		fmt.Sprintf("  h2 settings: max_concurrent_streams=%d max_upload_buffer_per_stream=%d "+
			"max_upload_buffer_per_connection=%d max_read_frame_size=%d idle_timeout_s=%.0f "+
			"tcp_congestion=%s (%s)", h2.MaxConcurrentStreams, h2.MaxUploadBufferPerStream,
			h2.MaxUploadBufferPerConnection, h2.MaxReadFrameSize, h2.IdleTimeout.Seconds(), cc,
			tcpCongestion(l.tcp)),
		fmt.Sprintf("  quic settings: max_streams=%d cc=reno (quic-go 0.29's only: NewReno, its "+
			"cubicSender in Reno mode) idle_timeout_s=30 udp_rcvbuf=%d udp_sndbuf=%d sender_log=%s",
			q.MaxIncomingStreams, rcv, snd, senderLog),
		fmt.Sprintf("  grace_s=%g pods=%d×%d B body_cache=%d MiB (warmed %d B)", o.grace.Seconds(),
			o.podCount, o.podSize, o.bodyCacheMB, o.warmBytes),
		"  versions: " + strings.TrimPrefix(version.Line(program), program+" "),
	}
	return strings.Join(lines, "\n") + "\n"
}
