// Package senderlog samples quic-go's sender state per connection for the lab's runner (issue
// 11, item 3), in the format of the reference server's lab/http/sender_log.py, which
// lab/run/sender_sampler.py read_quic_log reads: every Interval one CSV line per live
// connection,
//
//	time_ns,sender,cwnd_bytes,bytes_in_flight,datagram_bytes,waiting
//
// time_ns: CLOCK_MONOTONIC (labgo/monoclock), the clock of the lab's events and drop log.
// sender: the connection's quic.ConnectionTracingKey (an integer unique in the process).
// cwnd_bytes, bytes_in_flight: the latest values quic-go's sent-packet handler reported to the
// connection tracer (logging.ConnectionTracer.UpdatedMetrics: after every ack-eliciting packet
// sent and every ACK received).
// datagram_bytes: the max datagram size quic-go's congestion controller uses. It starts at
// quic-go's initial packet size for the peer's address family (getMaxPacketSize in
// packet_packer.go: 1252 bytes for IPv4, 1232 for IPv6) and grows when a path-MTU probe is
// acknowledged (mtu_discoverer.go calls SetMaxDatagramSize with the probe's size). The tracer
// sees both: a probe is a 1-RTT packet with a single PING frame larger than the current size
// (no other packet may exceed it), and its acknowledgement by packet number.
// waiting: quic-go does not tell whether stream data waits to be sent. 1 when at least one
// HTTP/3 request handler of the connection is running (Sender.Handling: from the request's
// arrival at the handler to the handler's return, after which http3.Server finishes the
// stream); 0 otherwise. It over-states waiting while a handler is idle between writes (a watch
// stream between events, a request body being read) and misses the last ≤ 1452 bytes quic-go
// still holds after the handler returned (sendStream.Write returns when all but one packet's
// worth of its data is framed).
//
// Bounds: at most MaxConnections connections are logged at once (later ones are not, and
// counted); a connection is forgotten when quic-go closes its tracer.
package senderlog

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lucas-clemente/quic-go"
	"github.com/lucas-clemente/quic-go/logging"

	"labgo/monoclock"
)

// Env names the file to write (the runner sets it for every server it starts); unset: no log.
const Env = "LAB_QUIC_SENDER_LOG"

// Interval is the sampling period (lab.http.sender_log.SENDER_SAMPLE_INTERVAL_S: 50 Hz).
const Interval = 20 * time.Millisecond

// Header is the CSV header (lab.http.sender_log.SENDER_LOG_HEADER).
const Header = "time_ns,sender,cwnd_bytes,bytes_in_flight,datagram_bytes,waiting\n"

// MaxConnections is how many connections are logged at once.
const MaxConnections = 4096

// quic-go 0.29's initial max packet sizes (internal/protocol/params.go InitialPacketSizeIPv4,
// InitialPacketSizeIPv6; not exported).
const (
	initialDatagramIPv4 = 1252
	initialDatagramIPv6 = 1232
)

// Log is the quic.Config.Tracer that keeps each connection's Sender and writes the samples.
type Log struct {
	logging.NullTracer
	mu        sync.Mutex
	conns     map[uint64]*Sender // by quic.ConnectionTracingKey
	file      *os.File
	out       *bufio.Writer
	stop      chan struct{}
	done      chan struct{}
	Untracked atomic.Int64 // connections not logged (MaxConnections reached)
}

// Open truncates `path`, writes the header and samples every Interval until Close.
func Open(path string) (*Log, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	l := &Log{
		conns: map[uint64]*Sender{},
		file:  f,
		out:   bufio.NewWriterSize(f, 64<<10),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if _, err := l.out.WriteString(Header); err != nil {
		f.Close()
		return nil, err
	}
	if err := l.out.Flush(); err != nil {
		f.Close()
		return nil, err
	}
	go l.run()
	return l, nil
}

// TracerForConnection starts the Sender of one connection (quic-go calls it for each).
func (l *Log) TracerForConnection(ctx context.Context, _ logging.Perspective, _ logging.ConnectionID) logging.ConnectionTracer {
	id, ok := ctx.Value(quic.ConnectionTracingKey).(uint64)
	if !ok {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) >= MaxConnections {
		l.Untracked.Add(1)
		return nil
	}
	s := &Sender{}
	s.forget = func() { l.mu.Lock(); delete(l.conns, id); l.mu.Unlock() }
	l.conns[id] = s
	return s
}

// Sender is the logged Sender of connection `id` (quic.ConnectionTracingKey), nil if none.
func (l *Log) Sender(id uint64) *Sender {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns[id]
}

// Close stops the sampling, flushes and closes the file; says on stderr how many connections
// were not logged, if any.
func (l *Log) Close() error {
	close(l.stop)
	<-l.done
	if n := l.Untracked.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "senderlog: %d connection(s) not logged (over %d at once)\n", n, MaxConnections)
	}
	return l.file.Close()
}

func (l *Log) run() {
	defer close(l.done)
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	var line []byte
	for {
		select {
		case <-l.stop:
			_ = l.out.Flush()
			return
		case <-tick.C:
		}
		now := monoclock.NowNs()
		l.mu.Lock()
		ids := make([]uint64, 0, len(l.conns))
		senders := make([]*Sender, 0, len(l.conns))
		for id, s := range l.conns {
			ids, senders = append(ids, id), append(senders, s)
		}
		l.mu.Unlock()
		for i, s := range senders {
			st, ok := s.state()
			if !ok {
				continue
			}
			line = strconv.AppendInt(line[:0], now, 10)
			line = append(line, ',')
			line = strconv.AppendUint(line, ids[i], 10)
			for _, v := range [...]int64{st.cwnd, st.inFlight, st.datagram, st.waiting} {
				line = append(line, ',')
				line = strconv.AppendInt(line, v, 10)
			}
			line = append(line, '\n')
			_, _ = l.out.Write(line)
		}
		if err := l.out.Flush(); err != nil {
			fmt.Fprintf(os.Stderr, "senderlog: %v: no more samples\n", err)
			<-l.stop
			return
		}
	}
}

// Sender is one connection's ConnectionTracer: its latest congestion state.
type Sender struct {
	logging.NullConnectionTracer
	handlers atomic.Int64 // HTTP/3 request handlers running (see Handling)
	forget   func()

	mu       sync.Mutex // the fields below; quic-go calls the tracer from the connection's loop
	seen     bool       // UpdatedMetrics was called
	cwnd     int64      // bytes
	inFlight int64      // bytes
	datagram int64      // bytes; 0 until StartedConnection
	probing  bool       // a path-MTU probe is in flight
	probePN  logging.PacketNumber
	probeLen int64 // bytes
}

type senderState struct{ cwnd, inFlight, datagram, waiting int64 }

func (s *Sender) state() (senderState, bool) {
	s.mu.Lock()
	st := senderState{s.cwnd, s.inFlight, s.datagram, 0}
	ok := s.seen && s.datagram > 0
	s.mu.Unlock()
	if s.handlers.Load() > 0 {
		st.waiting = 1
	}
	return st, ok
}

// Handling counts a running HTTP/3 request handler of the connection (waiting = 1 while any
// runs); call the returned function when the handler returns. Safe on a nil Sender.
func (s *Sender) Handling() (done func()) {
	if s == nil {
		return func() {}
	}
	s.handlers.Add(1)
	return func() { s.handlers.Add(-1) }
}

// StartedConnection sets the initial datagram size from the peer's address family, as quic-go.
func (s *Sender) StartedConnection(_, remote net.Addr, _, _ logging.ConnectionID) {
	size := int64(initialDatagramIPv6)
	if u, ok := remote.(*net.UDPAddr); ok && u.IP.To4() != nil {
		size = initialDatagramIPv4
	}
	s.mu.Lock()
	if s.datagram == 0 {
		s.datagram = size
	}
	s.mu.Unlock()
}

// UpdatedMetrics records the congestion window and bytes in flight.
func (s *Sender) UpdatedMetrics(_ *logging.RTTStats, cwnd, bytesInFlight logging.ByteCount, _ int) {
	s.mu.Lock()
	s.seen, s.cwnd, s.inFlight = true, int64(cwnd), int64(bytesInFlight)
	s.mu.Unlock()
}

// SentPacket notes a path-MTU probe: a short-header packet of one PING frame larger than the
// current datagram size.
func (s *Sender) SentPacket(hdr *logging.ExtendedHeader, size logging.ByteCount, _ *logging.AckFrame, frames []logging.Frame) {
	if hdr.IsLongHeader || len(frames) != 1 {
		return
	}
	if _, ok := frames[0].(*logging.PingFrame); !ok {
		return
	}
	s.mu.Lock()
	if int64(size) > s.datagram && s.datagram > 0 {
		s.probing, s.probePN, s.probeLen = true, hdr.PacketNumber, int64(size)
	}
	s.mu.Unlock()
}

// AcknowledgedPacket adopts an acknowledged probe's size, as quic-go's MTU discoverer does.
func (s *Sender) AcknowledgedPacket(level logging.EncryptionLevel, pn logging.PacketNumber) {
	if level != logging.Encryption1RTT {
		return
	}
	s.mu.Lock()
	if s.probing && pn == s.probePN {
		s.probing = false
		if s.probeLen > s.datagram {
			s.datagram = s.probeLen
		}
	}
	s.mu.Unlock()
}

// LostPacket forgets a lost probe (quic-go then lowers its search range).
func (s *Sender) LostPacket(level logging.EncryptionLevel, pn logging.PacketNumber, _ logging.PacketLossReason) {
	s.mu.Lock()
	if level == logging.Encryption1RTT && s.probing && pn == s.probePN {
		s.probing = false
	}
	s.mu.Unlock()
}

// Close forgets the connection (quic-go calls it when the connection is closed).
func (s *Sender) Close() { s.forget() }
