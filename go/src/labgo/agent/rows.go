package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
)

// row is one sample row as lab.workloads.base.row makes it: metric, value, unit, stream
// (null when none) and, for some metrics, mode + early_data or the raw watch stamps.
type row struct {
	metric string
	value  float64
	unit   string
	stream int // -1 = none (null)
	// handshake rows
	mode      string
	earlyData *bool
	// watch rows: seq, sent_ns, received_ns (CLOCK_MONOTONIC ns)
	watch                   bool
	seq, sentNs, receivedNs int64
}

func newRow(metric string, value float64, unit string, stream int) row {
	return row{metric: metric, value: value, unit: unit, stream: stream}
}

// rowList collects rows from concurrent goroutines.
type rowList struct {
	mu   sync.Mutex
	rows []row
}

func (l *rowList) add(r ...row) {
	l.mu.Lock()
	l.rows = append(l.rows, r...)
	l.mu.Unlock()
}

func (l *rowList) sorted(less func(a, b row) bool) []row {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]row(nil), l.rows...)
	sort.SliceStable(out, func(i, j int) bool { return less(out[i], out[j]) })
	return out
}

// --- JSON as Python's json module writes it ------------------------------------------------
// Floats always carry a decimal point or an exponent (so Python reads a float, not an int),
// and NaN/±Infinity are written as Python writes them (ttfb_rtt is NaN when the base RTT is 0).

type jsonWriter struct{ bytes.Buffer }

func (w *jsonWriter) float(v float64) {
	switch {
	case math.IsNaN(v):
		w.WriteString("NaN")
	case math.IsInf(v, 1):
		w.WriteString("Infinity")
	case math.IsInf(v, -1):
		w.WriteString("-Infinity")
	default:
		s := strconv.FormatFloat(v, 'g', -1, 64)
		w.WriteString(s)
		if !bytes.ContainsAny([]byte(s), ".eE") {
			w.WriteString(".0")
		}
	}
}

func (w *jsonWriter) optFloat(v *float64) {
	if v == nil {
		w.WriteString("null")
	} else {
		w.float(*v)
	}
}

func (w *jsonWriter) str(s string) {
	b, _ := json.Marshal(s)
	w.Write(b)
}

func (w *jsonWriter) int(v int64) { w.WriteString(strconv.FormatInt(v, 10)) }

func (w *jsonWriter) key(k string, first bool) {
	if !first {
		w.WriteString(", ")
	}
	w.str(k)
	w.WriteString(": ")
}

// list writes a JSON array of n items; item(i) writes the i-th.
func (w *jsonWriter) list(n int, item func(i int)) {
	w.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			w.WriteString(", ")
		}
		item(i)
	}
	w.WriteByte(']')
}

func (w *jsonWriter) row(r row) {
	w.WriteByte('{')
	w.key("metric", true)
	w.str(r.metric)
	w.key("value", false)
	w.float(r.value)
	w.key("unit", false)
	w.str(r.unit)
	w.key("stream", false)
	if r.stream < 0 {
		w.WriteString("null")
	} else {
		w.int(int64(r.stream))
	}
	if r.mode != "" {
		w.key("mode", false)
		w.str(r.mode)
	}
	if r.earlyData != nil {
		w.key("early_data", false)
		w.WriteString(strconv.FormatBool(*r.earlyData))
	}
	if r.watch {
		w.key("seq", false)
		w.int(r.seq)
		w.key("sent_ns", false)
		w.int(r.sentNs)
		w.key("received_ns", false)
		w.int(r.receivedNs)
	}
	w.WriteByte('}')
}

// cpuUsage is the CPU seconds each process used during one workload (nil: unknown).
type cpuUsage struct{ server, client, emulator *float64 }

// result is one workload's entry of the output file (lab/run/agent.py's format).
type result struct {
	index int
	kind  string
	rows  []row
	err   string // "" = none
	wallS float64
	cpu   cpuUsage
}

func (w *jsonWriter) result(r result) {
	w.WriteByte('{')
	w.key("index", true)
	w.int(int64(r.index))
	w.key("kind", false)
	w.str(r.kind)
	w.key("rows", false)
	w.list(len(r.rows), func(i int) { w.row(r.rows[i]) })
	w.key("error", false)
	if r.err == "" {
		w.WriteString("null")
	} else {
		w.str(r.err)
	}
	w.key("wall_s", false)
	w.float(r.wallS)
	w.key("cpu", false)
	w.WriteByte('{')
	w.key("server_s", true)
	w.optFloat(r.cpu.server)
	w.key("client_s", false)
	w.optFloat(r.cpu.client)
	w.key("emulator_s", false)
	w.optFloat(r.cpu.emulator)
	w.WriteString("}}")
}

// output is the whole agent result: protocol, start and end (CLOCK_MONOTONIC ns), the
// workloads, and what the Go client was (versions, settings, UDP buffers).
type output struct {
	protocol         string
	startedNs, endNs int64
	results          []result
	implementation   map[string]any
}

func (o output) encode() []byte {
	var w jsonWriter
	w.WriteByte('{')
	w.key("protocol", true)
	w.str(o.protocol)
	w.key("started_ns", false)
	w.int(o.startedNs)
	w.key("ended_ns", false)
	w.int(o.endNs)
	w.key("workloads", false)
	w.list(len(o.results), func(i int) { w.result(o.results[i]) })
	w.key("implementation", false)
	impl, _ := json.Marshal(o.implementation)
	w.Write(impl)
	w.WriteString("}\n")
	return w.Bytes()
}

// writeAtomic replaces path with data: a temporary file beside it, fsynced, renamed.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
