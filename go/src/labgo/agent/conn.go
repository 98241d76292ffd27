package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lucas-clemente/quic-go"
	"github.com/lucas-clemente/quic-go/http3"
	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"

	"labgo/monoclock"
	"labgo/sockbuf"
)

// earlyDataHeader is the reference server's "this request arrived as 0-RTT data" header.
const earlyDataHeader = "lab-early-data"

// timings are a connection's steps, CLOCK_MONOTONIC ns (0 = did not happen / not yet), as
// lab.http.types.ConnectionTimings.
type timings struct {
	connectStartNs    int64 // before the socket connects
	tcpConnectedNs    int64 // h2 only
	handshakeDoneNs   atomic.Int64
	resumed           bool // the TLS session / QUIC ticket was accepted
	earlyDataSent     bool // a request went out before the handshake completed, with a ticket
	earlyDataAccepted bool // the server accepted 0-RTT (TLS state; h2: never)
}

// response is one exchange, as lab.http.types.Response (CLOCK_MONOTONIC ns).
type response struct {
	status        int
	header        http.Header
	requestSentNs int64
	firstByteNs   int64 // 0 = empty body
	endNs         int64
	bodyBytes     int64
	body          []byte // only with keepBody
	earlyData     bool   // the server's lab-early-data: 1
}

// sentNs is when the request left, never after its response arrived (lab.workloads.base.sent_ns).
func (r *response) sentNs() int64 {
	first := r.endNs
	if r.firstByteNs != 0 {
		first = r.firstByteNs
	}
	return min64(r.requestSentNs, min64(first, r.endNs))
}

func min64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

// chunkFunc receives each piece of a response body with its receive time (ns).
type chunkFunc func(data []byte, nowNs int64)

// connection is one HTTP/2 or HTTP/3 connection; requests may run concurrently.
type connection struct {
	protocol  string
	authority string // server_name:port
	mode      string
	times     *timings
	h2        *http2.ClientConn
	h3        *http3.RoundTripper
	quicConn  quic.EarlyConnection
	udp       *net.UDPConn
	sessions  *ticketStore
}

// ticketStore holds TLS sessions (h2) and QUIC tickets (h3) between the connections of one
// workload, as lab.http.types.TicketStore; `puts` counts the tickets received.
type ticketStore struct {
	cache tls.ClientSessionCache
	puts  atomic.Int64
}

func newTicketStore() *ticketStore {
	return &ticketStore{cache: tls.NewLRUClientSessionCache(16)}
}

// sessionCache is what one connection sees of the store: cold connections store the tickets
// they receive but never resume.
type sessionCache struct {
	store  *ticketStore
	resume bool
}

func (c sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	if !c.resume {
		return nil, false
	}
	return c.store.cache.Get(key)
}

func (c sessionCache) Put(key string, cs *tls.ClientSessionState) {
	c.store.cache.Put(key, cs)
	if cs != nil {
		c.store.puts.Add(1)
	}
}

// dialer connects to the server of one agent config.
type dialer struct {
	cfg  *agentConfig
	pool *x509.CertPool // nil: do not verify (third-party peers with their own CA)
	// last QUIC socket's buffers as the kernel reports them (quic-go tries to raise them)
	udpRcvBuf, udpSndBuf atomic.Int64
}

func newDialer(cfg *agentConfig) (*dialer, error) {
	d := &dialer{cfg: cfg}
	if cfg.CAFile != nil && *cfg.CAFile != "" {
		pem, err := os.ReadFile(*cfg.CAFile)
		if err != nil {
			return nil, err
		}
		d.pool = x509.NewCertPool()
		if !d.pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in %s", *cfg.CAFile)
		}
	}
	return d, nil
}

func (d *dialer) tlsConfig(alpn string, cache tls.ClientSessionCache) *tls.Config {
	return &tls.Config{
		ServerName:         d.cfg.ServerName,
		RootCAs:            d.pool,
		InsecureSkipVerify: d.pool == nil,
		NextProtos:         []string{alpn},
		MinVersion:         tls.VersionTLS13,
		ClientSessionCache: cache,
	}
}

func (d *dialer) address() string {
	return net.JoinHostPort(d.cfg.Host, strconv.Itoa(d.cfg.Port))
}

// connect opens one connection in `mode` (cold, resumed, zero_rtt). For cold and resumed the
// handshake is complete on return; for zero_rtt (h3) it is not, so that the first requests
// travel as 0-RTT data. HTTP/2 has no early data in Go's TLS: zero_rtt runs as resumed.
func (d *dialer) connect(ctx context.Context, mode string, store *ticketStore) (*connection, error) {
	if store == nil {
		store = newTicketStore()
	}
	c := &connection{
		protocol:  d.cfg.Protocol,
		authority: net.JoinHostPort(d.cfg.ServerName, strconv.Itoa(d.cfg.Port)),
		mode:      mode,
		times:     &timings{connectStartNs: monoclock.NowNs()},
		sessions:  store,
	}
	cache := sessionCache{store: store, resume: mode != "cold"}
	var err error
	if d.cfg.Protocol == "h2" {
		err = d.connectH2(ctx, c, cache)
	} else {
		err = d.connectH3(ctx, c, cache)
	}
	if err != nil {
		return nil, requestFailed(err)
	}
	return c, nil
}

func (d *dialer) tcpControl(_, _ string, raw syscall.RawConn) error {
	st := d.cfg.Stack
	return raw.Control(func(fd uintptr) {
		if st.TCPCongestion != "" {
			if err := unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, st.TCPCongestion); err != nil {
				fmt.Fprintf(os.Stderr, "lab-go-agent: TCP_CONGESTION=%s refused (%v); using the default\n", st.TCPCongestion, err)
			}
		}
		if st.TCPNotsentLowatBytes != nil {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, *st.TCPNotsentLowatBytes)
		}
	})
}

func (d *dialer) connectH2(ctx context.Context, c *connection, cache sessionCache) error {
	nd := net.Dialer{Control: d.tcpControl}
	raw, err := nd.DialContext(ctx, "tcp", d.address())
	if err != nil {
		return err
	}
	c.times.tcpConnectedNs = monoclock.NowNs()
	tc := tls.Client(raw, d.tlsConfig("h2", cache))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return err
	}
	c.times.handshakeDoneNs.Store(monoclock.NowNs())
	state := tc.ConnectionState()
	if state.NegotiatedProtocol != "h2" {
		tc.Close()
		return fmt.Errorf("server chose ALPN %q, not h2", state.NegotiatedProtocol)
	}
	c.times.resumed = state.DidResume
	// net/http's HTTP/2 (x/net/http2; client-go enables it with http2.ConfigureTransports and
	// these health-check settings); one ClientConn = one connection, requests beyond the
	// server's stream limit wait for a slot
	t := &http2.Transport{
		StrictMaxConcurrentStreams: true,
		ReadIdleTimeout:            30 * time.Second,
		PingTimeout:                15 * time.Second,
		DisableCompression:         true,
	}
	c.h2, err = t.NewClientConn(tc)
	if err != nil {
		tc.Close()
	}
	return err
}

func (d *dialer) connectH3(ctx context.Context, c *connection, cache sessionCache) error {
	remote, err := net.ResolveUDPAddr("udp", d.address())
	if err != nil {
		return err
	}
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		return err
	}
	quicConf := &quic.Config{
		Versions:           []quic.VersionNumber{quic.Version1},
		MaxIncomingStreams: -1, // the server opens no request streams (http3's client default)
		KeepAlivePeriod:    10 * time.Second,
	}
	tlsConf := d.tlsConfig("h3", cache)
	conn, err := quic.DialEarlyContext(ctx, udp, remote, d.cfg.ServerName, tlsConf, quicConf)
	if err != nil {
		udp.Close()
		return err
	}
	rcv, snd := sockbuf.Sizes(udp)
	d.udpRcvBuf.Store(int64(rcv))
	d.udpSndBuf.Store(int64(snd))
	c.udp, c.quicConn = udp, conn
	handshake := make(chan struct{})
	go func() {
		select {
		case <-conn.HandshakeComplete().Done():
			c.times.handshakeDoneNs.Store(monoclock.NowNs())
		case <-conn.Context().Done():
		}
		close(handshake)
	}()
	c.h3 = &http3.RoundTripper{
		TLSClientConfig:    tlsConf,
		QuicConfig:         quicConf,
		DisableCompression: true,
		Dial: func(context.Context, string, *tls.Config, *quic.Config) (quic.EarlyConnection, error) {
			return conn, nil // this one connection, already dialled
		},
	}
	if c.mode == "zero_rtt" {
		return nil
	}
	select {
	case <-handshake:
	case <-ctx.Done():
		c.close()
		return ctx.Err()
	}
	if c.times.handshakeDoneNs.Load() == 0 {
		c.close()
		return errors.New("QUIC handshake failed")
	}
	state := conn.ConnectionState().TLS
	c.times.resumed, c.times.earlyDataAccepted = state.DidResume, state.Used0RTT
	return nil
}

// finishTLSState records resumption and 0-RTT acceptance once the handshake is done (h3
// zero_rtt connections learn them only then).
func (c *connection) finishTLSState() {
	if c.quicConn == nil || c.times.handshakeDoneNs.Load() == 0 {
		return
	}
	state := c.quicConn.ConnectionState().TLS
	c.times.resumed, c.times.earlyDataAccepted = state.DidResume, state.Used0RTT
}

// request sends one request and reads the whole response. GETs on an h3 zero_rtt connection
// whose handshake is not done yet go out as 0-RTT data (quic-go's GET_0RTT).
func (c *connection) request(ctx context.Context, method, path string, keepBody bool, onChunk chunkFunc) (*response, error) {
	url := "https://" + c.authority + path
	wire := method
	early := c.protocol == "h3" && c.mode == "zero_rtt" && method == http.MethodGet &&
		c.times.handshakeDoneNs.Load() == 0
	if early {
		wire = http3.MethodGet0RTT
	}
	var sent atomic.Int64
	if c.protocol == "h2" { // stamped once the request is written to the connection
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { sent.CompareAndSwap(0, monoclock.NowNs()) },
		})
	}
	req, err := http.NewRequestWithContext(ctx, wire, url, nil)
	if err != nil {
		return nil, err
	}
	before := monoclock.NowNs()
	var resp *http.Response
	if c.protocol == "h2" {
		resp, err = c.h2.RoundTrip(req)
	} else {
		resp, err = c.h3.RoundTrip(req)
	}
	if err != nil {
		return nil, requestFailed(err)
	}
	if early && c.sessions.puts.Load() > 0 {
		c.times.earlyDataSent = true
	}
	sent.CompareAndSwap(0, before)
	out := &response{status: resp.StatusCode, header: resp.Header, requestSentNs: sent.Load()}
	out.earlyData = resp.Header.Get(earlyDataHeader) == "1"
	defer resp.Body.Close()
	buf := make([]byte, 64*1024)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			now := monoclock.NowNs()
			if out.firstByteNs == 0 {
				out.firstByteNs = now
			}
			out.bodyBytes += int64(n)
			if keepBody {
				out.body = append(out.body, buf[:n]...)
			}
			if onChunk != nil {
				onChunk(buf[:n], now)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, requestFailed(err)
		}
	}
	out.endNs = monoclock.NowNs()
	return out, nil
}

// close ends the connection gracefully (GOAWAY / CONNECTION_CLOSE).
func (c *connection) close() {
	if c.h2 != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if c.h2.Shutdown(ctx) != nil {
			c.h2.Close()
		}
		cancel()
	}
	if c.h3 != nil {
		c.h3.Close()
	}
	if c.quicConn != nil {
		_ = c.quicConn.CloseWithError(0, "")
	}
	if c.udp != nil {
		c.udp.Close()
	}
}

// waitForTicket waits up to `wait` for a ticket newer than the `before`-th (post-handshake
// tickets arrive shortly after the handshake).
func (s *ticketStore) waitForTicket(before int64, wait time.Duration) {
	deadline := time.Now().Add(wait)
	for s.puts.Load() <= before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// failure is an error with the Python exception name the agent's output uses.
type failure struct {
	kind string // "WorkloadError" or "RequestFailed"
	msg  string
}

func (f *failure) Error() string { return f.kind + ": " + f.msg }

func requestFailed(err error) error {
	var f *failure
	if errors.As(err, &f) {
		return err
	}
	return &failure{"RequestFailed", err.Error()}
}

func workloadError(format string, args ...any) error {
	return &failure{"WorkloadError", fmt.Sprintf(format, args...)}
}
