// Command lab-go-server mirrors kube-apiserver's serving stack for the lab: Go net/http with
// HTTP/2 (golang.org/x/net/http2, kube-apiserver's settings) on TCP and quic-go's http3.Server
// on UDP, same port, serving the route contract of docs/routes.md (labgo/routes).
//
//	lab-go-server --host 127.0.0.1 --port 8443 --cert-dir DIR   # or --cert FILE --key FILE
//
// It prints a readiness description on stdout once both listeners are bound. SIGTERM or SIGINT
// starts a graceful shutdown: HTTP/2 sends GOAWAY and in-flight requests get --grace seconds;
// HTTP/3 (quic-go 0.29 has no GOAWAY) lets in-flight requests finish within the same grace,
// then closes its connections. A second signal stops at once.
//
// With LAB_QUIC_SENDER_LOG set (the runner sets it), each QUIC connection's congestion window
// and bytes in flight are sampled to that file every 20 ms (labgo/senderlog); unset: no log.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lucas-clemente/quic-go"
	"github.com/lucas-clemente/quic-go/http3"
	"github.com/lucas-clemente/quic-go/logging"
	"golang.org/x/net/http2"

	"labgo/body"
	"labgo/h2stream"
	"labgo/routes"
	"labgo/senderlog"
	"labgo/version"
	"labgo/zerortt"
)

const program = "lab-go-server"

// kube-apiserver's HTTP/2 settings (k8s.io/apiserver/pkg/server/secure_serving.go): 256 KiB per
// stream receive buffer and read frame size, a connection buffer for all streams, 90 s idle.
const (
	resourceBody99PercentileBytes = 256 * 1024
	idleTimeout                   = 90 * time.Second
	readHeaderTimeout             = 32 * time.Second
	maxHeaderBytes                = 1 << 20
)

// h3Linger is how long the HTTP/3 side waits, after its last request finished, before it
// closes its connections on shutdown (delivery and retransmission of the last bytes).
const h3Linger = time.Second

type options struct {
	host, certDir, certFile, keyFile, tcpCC, requestLog string
	senderLog                                           string // LAB_QUIC_SENDER_LOG; "" = none
	port, maxStreams, podSize, podCount                 int
	warmBytes, bodyCacheMB                              int64
	grace                                               time.Duration
}

func parseFlags() options {
	var o options
	var graceS float64
	showVersion := flag.Bool("version", false, "print the go, quic-go and x/net versions and exit")
	flag.StringVar(&o.host, "host", "127.0.0.1", "address to bind; '::' = all, dual-stack")
	flag.IntVar(&o.port, "port", 8443, "TCP and UDP port (0 = pick one)")
	flag.StringVar(&o.certDir, "cert-dir", "", "directory with cert.pem and key.pem (lab.http.tls)")
	flag.StringVar(&o.certFile, "cert", "", "certificate PEM (instead of --cert-dir)")
	flag.StringVar(&o.keyFile, "key", "", "private key PEM (instead of --cert-dir)")
	flag.IntVar(&o.maxStreams, "max-streams", 100, "max concurrent streams (HTTP/2 and QUIC)")
	flag.IntVar(&o.podSize, "pod-size", 2048, "bytes per synthetic pod")
	flag.IntVar(&o.podCount, "pod-count", 500, "pods per namespace")
	flag.Float64Var(&graceS, "grace", 10, "graceful-shutdown grace (s)")
	flag.StringVar(&o.tcpCC, "tcp-cc", "", "TCP_CONGESTION of the TCP listener (default: the kernel's)")
	flag.StringVar(&o.requestLog, "request-log", "", "append one JSON line per request that reaches a route")
	flag.Int64Var(&o.bodyCacheMB, "body-cache-mb", 256, "MiB of /bytes keystream kept in memory")
	flag.Int64Var(&o.warmBytes, "warm-bytes", 0, "compute the cached /bytes keystream up to this size before serving")
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Line(program))
		os.Exit(0)
	}
	if o.certFile == "" && o.keyFile == "" && o.certDir != "" {
		o.certFile, o.keyFile = filepath.Join(o.certDir, "cert.pem"), filepath.Join(o.certDir, "key.pem")
	}
	if o.certFile == "" || o.keyFile == "" {
		fatal("give --cert-dir, or --cert and --key")
	}
	if o.maxStreams <= 0 || o.podSize < 0 || o.podCount < 0 || graceS < 0 || o.bodyCacheMB < 0 {
		fatal("--max-streams must be > 0; --pod-size, --pod-count, --grace, --body-cache-mb ≥ 0")
	}
	o.grace = time.Duration(graceS * float64(time.Second))
	return o
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, program+": "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	o := parseFlags()
	cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
	if err != nil {
		fatal("%v", err)
	}
	tlsConf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13, // as the reference server; QUIC requires it anyway
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if path := os.Getenv("SSLKEYLOGFILE"); path != "" {
		if f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			tlsConf.KeyLogWriter = f
		}
	}
	body.CacheBytes = o.bodyCacheMB << 20
	body.Warm(o.warmBytes)
	l, err := listen(o.host, o.port, o.tcpCC)
	if err != nil {
		fatal("%v", err)
	}

	cfg := routes.DefaultConfig()
	cfg.Port, cfg.PodSizeBytes, cfg.PodCount = l.port, o.podSize, o.podCount
	handler := &routes.Handler{Config: cfg, Stream: streamOf}
	if o.requestLog != "" {
		if handler.Observer, err = requestLogger(o.requestLog); err != nil {
			fatal("%v", err)
		}
	}

	h2srv := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsConf,
		IdleTimeout:       idleTimeout,
		ReadHeaderTimeout: readHeaderTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
	h2conf := &http2.Server{
		MaxConcurrentStreams:         uint32(o.maxStreams),
		MaxUploadBufferPerStream:     resourceBody99PercentileBytes,
		MaxUploadBufferPerConnection: resourceBody99PercentileBytes * int32(o.maxStreams),
		MaxReadFrameSize:             resourceBody99PercentileBytes,
		IdleTimeout:                  idleTimeout,
	}
	if err := http2.ConfigureServer(h2srv, h2conf); err != nil {
		fatal("%v", err)
	}

	tracker := zerortt.NewTracker()
	var tracer logging.Tracer = tracker
	var senders *senderlog.Log // nil: no sender log
	if path := os.Getenv(senderlog.Env); path != "" {
		if senders, err = senderlog.Open(path); err != nil {
			fatal("%s: %v", senderlog.Env, err)
		}
		o.senderLog = path
		tracer = logging.NewMultiplexedTracer(tracker, senders)
	}
	h3 := &h3Requests{senders: senders}
	quicConf := &quic.Config{MaxIncomingStreams: int64(o.maxStreams), Tracer: tracer}
	quicLn, err := quic.ListenEarly(l.udp, http3.ConfigureTLSConfig(tlsConf), quicConf)
	if err != nil {
		fatal("%v", err)
	}
	h3srv := &http3.Server{Handler: h3.wrap(handler), MaxHeaderBytes: maxHeaderBytes}

	errs := make(chan error, 2)
	go func() { errs <- h2srv.ServeTLS(l.tcp, "", "") }()
	go func() { errs <- h3srv.ServeListener(tracker.Wrap(quicLn)) }()
	fmt.Print(describe(o, l, h2conf, quicConf))

	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	select {
	case sig := <-signals:
		fmt.Fprintf(os.Stderr, "%s: %v: graceful shutdown (grace %v)\n", program, sig, o.grace)
		go func() {
			<-signals
			fmt.Fprintf(os.Stderr, "%s: second signal: stopping now\n", program)
			os.Exit(1)
		}()
		shutdown(h2srv, h3srv, h3, o.grace)
		if senders != nil {
			_ = senders.Close()
		}
	case err := <-errs:
		fatal("serving stopped: %v", err)
	}
}

// streamOf is the protocol stream id of a request and whether it arrived as 0-RTT data. Go's
// TLS has no early data, so HTTP/2 requests never did.
func streamOf(w http.ResponseWriter, r *http.Request) (int64, bool) {
	if info := zerortt.Info(r.Context()); info != nil {
		return info.StreamID, info.EarlyData()
	}
	if id, ok := h2stream.ID(w); ok {
		return id, false
	}
	return -1, false
}

// h3Requests counts the HTTP/3 requests being handled and remembers when the last one ended;
// with a sender log, also per connection (its `waiting` column).
type h3Requests struct {
	inflight   atomic.Int64
	lastDoneNs atomic.Int64   // Unix ns; 0 = none yet
	senders    *senderlog.Log // nil: no sender log
}

func (c *h3Requests) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.inflight.Add(1)
		if info := zerortt.Info(r.Context()); info != nil && c.senders != nil {
			defer c.senders.Sender(info.Connection).Handling()()
		}
		defer func() {
			c.lastDoneNs.Store(time.Now().UnixNano())
			c.inflight.Add(-1)
		}()
		h.ServeHTTP(w, r)
	})
}

func (c *h3Requests) lastDone() time.Time {
	if ns := c.lastDoneNs.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// shutdown drains both servers within `grace`: h2 GOAWAY + wait; h3 waits for its in-flight
// requests and lingers for their last bytes; whatever is still open after it is closed.
func shutdown(h2srv *http.Server, h3srv *http3.Server, h3 *h3Requests, grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	h2done := make(chan struct{})
	go func() {
		defer close(h2done)
		if err := h2srv.Shutdown(ctx); err != nil {
			_ = h2srv.Close()
		}
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for h3.inflight.Load() > 0 && ctx.Err() == nil {
		<-tick.C
	}
	// Closing sends CONNECTION_CLOSE at once, dropping stream data quic-go has not delivered
	// yet (there is no "all acknowledged" to wait for): linger for it, within the grace.
	if wait := time.Until(h3.lastDone().Add(h3Linger)); wait > 0 && ctx.Err() == nil {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
	_ = h3srv.Close()
	<-h2done
	fmt.Fprintf(os.Stderr, "%s: stopped\n", program)
}

// requestLogger appends one JSON line per request that reaches a route, before the route runs.
func requestLogger(path string) (routes.Observer, error) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	return func(r *http.Request, streamID int64, early bool) {
		proto := map[int]string{1: "http/1.1", 2: "h2", 3: "h3"}[r.ProtoMajor]
		line, _ := json.Marshal(map[string]any{
			"method": r.Method, "path": r.RequestURI, "protocol": proto,
			"stream": streamID, "early_data": early,
		})
		mu.Lock()
		defer mu.Unlock()
		_, _ = f.Write(append(line, '\n'))
	}, nil
}
