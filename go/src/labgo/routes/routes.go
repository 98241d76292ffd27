// Package routes is the route contract of docs/routes.md for Go's net/http (HTTP/2) and
// quic-go's http3.Server alike: the same paths, bodies, headers and status codes as the
// reference server's lab/http/app.py.
//
// Order of the checks, as app.handle does them: request body over the cap → 413; unsafe method
// in 0-RTT early data, or marked `Early-Data: 1` by a previous hop (RFC 8470 §5.1) → 425 (the
// route never runs); header list over the cap → 431; unknown path → 404; OPTIONS → 204 with
// Allow; a method the route does not take → 405 with Allow.
// Every response carries `alt-svc: h3=":PORT"; ma=86400` and `lab-early-data: 1|0`.
package routes

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"labgo/body"
	"labgo/monoclock"
	"labgo/pods"
)

// EarlyDataHeader is the response header that says whether the request arrived as 0-RTT data.
const EarlyDataHeader = "lab-early-data"

// ForwardedEarlyDataHeader is the request header by which a previous hop says it received the
// request in early data (RFC 8470 §5.1): `Early-Data: 1`.
const ForwardedEarlyDataHeader = "Early-Data"

const (
	headerOverheadBytes = 32 // per entry, as HPACK/QPACK size header lists (RFC 7541 §4.1)
	maxWatchIntervalMs  = 3_600_000
	maxWatchCount       = 1 << 40
	maxListLimit        = 1 << 31
)

// Config is what the routes need to know (sizes in bytes); the defaults are `lab serve`'s.
type Config struct {
	Port                  int   // announced in Alt-Svc
	PodSizeBytes          int   // one synthetic pod in List responses
	PodCount              int   // pods per namespace
	MaxRequestHeaderBytes int   // larger header lists get 431
	MaxRequestBodyBytes   int64 // larger request bodies get 413
	MaxBytesN             int64 // cap of GET /bytes/{n}; larger n gets 400
}

// DefaultConfig is the reference server's ServerConfig defaults.
func DefaultConfig() Config {
	return Config{
		PodSizeBytes: 2048, PodCount: 500, MaxRequestHeaderBytes: 64 * 1024,
		MaxRequestBodyBytes: 16 * 1024 * 1024, MaxBytesN: 10 * 1000 * 1000 * 1000,
	}
}

// Stream is how a front end tells the routes about a request's stream: its protocol stream id
// (-1 when unknown) and whether it arrived as early data.
type Stream func(w http.ResponseWriter, r *http.Request) (id int64, early bool)

// Observer, when set, is told about every request that reaches a route's own code (after the
// 0-RTT and size policy), for logs and tests.
type Observer func(r *http.Request, streamID int64, early bool)

// Handler answers requests by the route contract. One Handler serves both protocols of a server
// process, so its /counter is the process's.
type Handler struct {
	Config   Config
	Stream   Stream
	Observer Observer
	counter  atomic.Int64 // /counter: POST adds 1, GET and HEAD read it
}

type route struct {
	pattern *regexp.Regexp
	methods []string // besides OPTIONS
	serve   func(h *Handler, x *exchange, m []string)
}

var (
	safeInEarlyData = map[string]bool{"GET": true, "HEAD": true, "OPTIONS": true}
	getMethods      = []string{"GET", "HEAD"}
	table           = []route{
		{regexp.MustCompile(`^/bytes/([^/]+)$`), getMethods, (*Handler).bytes},
		{regexp.MustCompile(`^/api/v1/namespaces/([^/]+)/pods$`), getMethods, (*Handler).podList},
		{regexp.MustCompile(`^/api/v1/watch/namespaces/([^/]+)/pods$`), getMethods, (*Handler).podWatch},
		{regexp.MustCompile(`^/echo$`), []string{"POST", "PUT"}, (*Handler).echo},
		{regexp.MustCompile(`^/healthz$`), getMethods, (*Handler).healthz},
		{regexp.MustCompile(`^/counter$`), []string{"GET", "HEAD", "POST"}, (*Handler).counterRoute},
	}
)

// exchange is one request and its response writer, with the common headers applied.
type exchange struct {
	w        http.ResponseWriter
	r        *http.Request
	head     bool // HEAD: headers only
	streamID int64
	reqBody  []byte
	sent     bool // the response head is out
}

func (x *exchange) header(status int, kv ...string) {
	for i := 0; i+1 < len(kv); i += 2 {
		x.w.Header().Set(kv[i], kv[i+1])
	}
	x.w.WriteHeader(status)
	x.sent = true
}

// respond sends a complete response with a known body.
func (x *exchange) respond(status int, b []byte, kv ...string) {
	x.header(status, append(kv, "Content-Length", strconv.Itoa(len(b)))...)
	if !x.head {
		_, _ = x.w.Write(b)
	}
}

type httpError struct {
	status int
	msg    string
	kv     []string
}

func (e *httpError) Error() string { return e.msg }

func fail(status int, format string, args ...any) {
	panic(&httpError{status: status, msg: fmt.Sprintf(format, args...)})
}

// ServeHTTP applies the policy, routes, and answers errors as text/plain.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	streamID, early := h.Stream(w, r)
	early01 := "0"
	if early {
		early01 = "1"
	}
	w.Header().Set("Alt-Svc", fmt.Sprintf(`h3=":%d"; ma=86400`, h.Config.Port))
	w.Header().Set(EarlyDataHeader, early01)
	method := strings.ToUpper(r.Method)
	x := &exchange{w: w, r: r, head: method == "HEAD", streamID: streamID}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler || x.sent {
				panic(http.ErrAbortHandler) // reset the stream: the response cannot be fixed
			}
			var e *httpError
			if err, ok := p.(error); ok && errors.As(err, &e) {
				x.respond(e.status, []byte(e.msg+"\n"), append(e.kv, "Content-Type", "text/plain")...)
				return
			}
			x.respond(500, []byte("internal error\n"), "Content-Type", "text/plain")
		}
	}()
	h.readBody(x)
	if (early || markedEarly(r)) && !safeInEarlyData[method] {
		fail(425, "too early: unsafe method in 0-RTT data")
	}
	if headerListBytes(r) > h.Config.MaxRequestHeaderBytes {
		fail(431, "request header fields too large")
	}
	path := strings.SplitN(r.RequestURI, "?", 2)[0]
	for _, rt := range table {
		m := rt.pattern.FindStringSubmatch(path)
		if m == nil {
			continue
		}
		allow := allowHeader(rt.methods)
		if method == "OPTIONS" {
			x.header(204, "Allow", allow)
			return
		}
		if !contains(rt.methods, method) {
			panic(&httpError{405, "method not allowed", []string{"Allow", allow}})
		}
		if h.Observer != nil {
			h.Observer(r, streamID, early)
		}
		rt.serve(h, x, m)
		return
	}
	fail(404, "not found")
}

// markedEarly is true when a previous hop says it received the request in early data
// (`Early-Data: 1`, RFC 8470 §5.1), as the reference's app.marked_early reads it.
func markedEarly(r *http.Request) bool {
	for _, v := range r.Header.Values(ForwardedEarlyDataHeader) {
		if strings.TrimSpace(v) == "1" {
			return true
		}
	}
	return false
}

// readBody reads the request body (413 above the cap) before any route runs, as the
// reference front ends do.
func (h *Handler) readBody(x *exchange) {
	if x.r.Body == nil {
		return
	}
	b, err := io.ReadAll(io.LimitReader(x.r.Body, h.Config.MaxRequestBodyBytes+1))
	if err != nil {
		panic(http.ErrAbortHandler) // the peer reset the stream
	}
	if int64(len(b)) > h.Config.MaxRequestBodyBytes {
		fail(413, "request body too large")
	}
	x.reqBody = b
}

// headerListBytes is the size of the request's header list as HTTP/2 and HTTP/3 count it
// (name + value + 32 per entry, pseudo-headers included).
func headerListBytes(r *http.Request) int {
	n := len(":method") + len(r.Method) + len(":scheme") + len("https") +
		len(":authority") + len(r.Host) + len(":path") + len(r.RequestURI) + 4*headerOverheadBytes
	for name, values := range r.Header {
		for _, v := range values {
			n += len(name) + len(v) + headerOverheadBytes
		}
	}
	return n
}

func allowHeader(methods []string) string {
	all := append([]string{"OPTIONS"}, methods...)
	sort.Strings(all)
	return strings.Join(all, ", ")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// intParam is query parameter `name` (its last value): a non-negative decimal in [lo, hi].
func intParam(q url.Values, name string, def, lo, hi int64) int64 {
	values := q[name]
	if len(values) == 0 {
		return def
	}
	raw := values[len(values)-1]
	if raw == "" || len(raw) > 19 || strings.Trim(raw, "0123456789") != "" {
		fail(400, "%s must be a non-negative integer", name)
	}
	v, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || v < lo || v > hi {
		fail(400, "%s must be in [%d, %d]", name, lo, hi)
	}
	return v
}

func query(r *http.Request) url.Values {
	parts := strings.SplitN(r.RequestURI, "?", 2)
	if len(parts) < 2 {
		return url.Values{}
	}
	q, _ := url.ParseQuery(parts[1]) // what parses is used, as parse_qs does
	return q
}

func namespace(m []string) string {
	if !pods.ValidNamespace(m[1]) {
		fail(400, "namespace must be a DNS-1123 label")
	}
	return m[1]
}

func (h *Handler) bytes(x *exchange, m []string) {
	raw := m[1]
	if len(raw) > 19 || strings.Trim(raw, "0123456789") != "" {
		fail(400, "size must be a non-negative integer")
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n > h.Config.MaxBytesN {
		fail(400, "size above the cap of %d bytes", h.Config.MaxBytesN)
	}
	x.header(200, "Content-Type", "application/octet-stream", "Content-Length", strconv.FormatInt(n, 10))
	if n == 0 || x.head {
		return
	}
	_ = body.Write(x.w, n) // an error means the peer went away: nothing left to do
}

func (h *Handler) podList(x *exchange, m []string) {
	ns := namespace(m)
	q := query(x.r)
	limit := intParam(q, "limit", 0, 0, maxListLimit)
	token := ""
	if v := q["continue"]; len(v) > 0 {
		token = v[len(v)-1]
	}
	page, err := pods.PlanPage(h.Config.PodCount, int(limit), token)
	if err != nil {
		fail(400, "%s", strings.TrimPrefix(err.Error(), pods.ErrBadList.Error()+": "))
	}
	x.respond(200, pods.ListJSON(ns, page, h.Config.PodSizeBytes), "Content-Type", "application/json")
}

func (h *Handler) podWatch(x *exchange, m []string) {
	ns := namespace(m)
	q := query(x.r)
	intervalMs := intParam(q, "interval_ms", 1000, 1, maxWatchIntervalMs)
	count := intParam(q, "count", 0, 0, maxWatchCount)
	x.header(200, "Content-Type", "application/json")
	flusher, _ := x.w.(http.Flusher)
	if flusher != nil {
		flusher.Flush() // the head goes out before the first event
	}
	if x.head {
		return
	}
	start := time.Now()
	interval := time.Duration(intervalMs) * time.Millisecond
	done := x.r.Context().Done()
	for seq := int64(0); count == 0 || seq < count; seq++ {
		// absolute deadlines from the start: no drift
		if wait := time.Until(start.Add(time.Duration(seq) * interval)); wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-done:
				timer.Stop()
				return
			}
		}
		line := pods.WatchEvent(ns, seq, x.streamID, monoclock.NowNs())
		if _, err := x.w.Write(line); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

func (h *Handler) echo(x *exchange, m []string) {
	contentType := x.r.Header.Get("Content-Type")
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	x.respond(200, x.reqBody, "Content-Type", contentType)
}

func (h *Handler) healthz(x *exchange, m []string) {
	x.respond(200, []byte("ok"), "Content-Type", "text/plain")
}

// counterRoute is /counter: POST adds 1 and answers the new value, GET and HEAD read it; the
// body is the value and a newline. The request body is ignored.
func (h *Handler) counterRoute(x *exchange, m []string) {
	value := h.counter.Load()
	if strings.ToUpper(x.r.Method) == "POST" {
		value = h.counter.Add(1)
	}
	b := []byte(strconv.FormatInt(value, 10) + "\n")
	x.respond(200, b, "Content-Type", "text/plain", "Cache-Control", "no-store")
}
