// Package zerortt tells an HTTP/3 handler whether its request arrived as 0-RTT early data, and
// on which QUIC stream, for quic-go 0.29's http3.Server (which exposes neither).
//
// A quic-go connection tracer sees every received packet with its type and frames before the
// frames are processed; the stream ids of STREAM frames in 0-RTT packets are remembered per
// connection. The listener returned by Wrap hands http3.Server connections whose accepted
// streams carry (connection, stream id) in their context, which becomes the request context.
// A request is early data when any part of its stream arrived in 0-RTT packets — the rule of
// the reference server (lab/http/quic_engine.py).
package zerortt

import (
	"context"
	"sync"

	"github.com/lucas-clemente/quic-go"
	"github.com/lucas-clemente/quic-go/logging"
)

// Tracker is the quic.Config.Tracer that records 0-RTT stream ids per connection.
type Tracker struct {
	logging.NullTracer
	mu    sync.Mutex
	conns map[uint64]*streamSet // by quic.ConnectionTracingKey
}

// NewTracker is an empty Tracker.
func NewTracker() *Tracker { return &Tracker{conns: map[uint64]*streamSet{}} }

type streamSet struct {
	mu  sync.Mutex
	ids map[int64]struct{}
}

func (s *streamSet) add(id int64) {
	s.mu.Lock()
	s.ids[id] = struct{}{}
	s.mu.Unlock()
}

func (s *streamSet) has(id int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}

// TracerForConnection starts the record of one connection (quic-go calls it for each).
func (t *Tracker) TracerForConnection(ctx context.Context, _ logging.Perspective, _ logging.ConnectionID) logging.ConnectionTracer {
	id, ok := ctx.Value(quic.ConnectionTracingKey).(uint64)
	if !ok {
		return nil
	}
	set := &streamSet{ids: map[int64]struct{}{}}
	t.mu.Lock()
	t.conns[id] = set
	t.mu.Unlock()
	return &connTracer{set: set, forget: func() { t.mu.Lock(); delete(t.conns, id); t.mu.Unlock() }}
}

func (t *Tracker) lookup(id uint64) *streamSet {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[id]
}

type connTracer struct {
	logging.NullConnectionTracer
	set    *streamSet
	forget func()
}

func (c *connTracer) ReceivedPacket(hdr *logging.ExtendedHeader, _ logging.ByteCount, frames []logging.Frame) {
	if logging.PacketTypeFromHeader(&hdr.Header) != logging.PacketType0RTT {
		return
	}
	for _, f := range frames {
		if sf, ok := f.(*logging.StreamFrame); ok {
			c.set.add(int64(sf.StreamID))
		}
	}
}

func (c *connTracer) Close() { c.forget() }

// Wrap returns a listener for http3.Server.ServeListener whose request contexts answer Info.
func (t *Tracker) Wrap(ln quic.EarlyListener) quic.EarlyListener { return listener{ln, t} }

type listener struct {
	quic.EarlyListener
	tracker *Tracker
}

func (l listener) Accept(ctx context.Context) (quic.EarlyConnection, error) {
	conn, err := l.EarlyListener.Accept(ctx)
	if err != nil {
		return nil, err
	}
	id, _ := conn.Context().Value(quic.ConnectionTracingKey).(uint64)
	return connection{conn, id, l.tracker.lookup(id)}, nil
}

type connection struct {
	quic.EarlyConnection
	id  uint64     // quic.ConnectionTracingKey
	set *streamSet // nil when the connection was not traced
}

func (c connection) AcceptStream(ctx context.Context) (quic.Stream, error) {
	str, err := c.EarlyConnection.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	info := &RequestInfo{StreamID: int64(str.StreamID()), Connection: c.id, set: c.set}
	return stream{str, context.WithValue(str.Context(), infoKey{}, info)}, nil
}

type stream struct {
	quic.Stream
	ctx context.Context
}

func (s stream) Context() context.Context { return s.ctx }

type infoKey struct{}

// RequestInfo is what an HTTP/3 request's context knows about its QUIC stream.
type RequestInfo struct {
	StreamID   int64
	Connection uint64 // the connection's quic.ConnectionTracingKey (other tracers key by it)
	set        *streamSet
}

// EarlyData is true when any part of the request's stream arrived in 0-RTT packets.
func (i *RequestInfo) EarlyData() bool { return i.set != nil && i.set.has(i.StreamID) }

// Info is the RequestInfo of an HTTP/3 request context (nil for other requests).
func Info(ctx context.Context) *RequestInfo {
	info, _ := ctx.Value(infoKey{}).(*RequestInfo)
	return info
}
