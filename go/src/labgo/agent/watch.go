package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// watchNamespace is the namespace every watch and LIST uses (lab.workloads.base).
const watchNamespace = "default"

// lineSplitter splits a byte stream into lines; each line gets the receive time of the chunk
// that completed it (lab.workloads.watch.LineSplitter).
type lineSplitter struct{ buf []byte }

type stampedLine struct {
	line  []byte
	nowNs int64
}

func (s *lineSplitter) feed(data []byte, nowNs int64) []stampedLine {
	s.buf = append(s.buf, data...)
	if bytes.IndexByte(data, '\n') < 0 {
		return nil
	}
	parts := bytes.Split(s.buf, []byte{'\n'})
	s.buf = append([]byte(nil), parts[len(parts)-1]...) // the unfinished tail
	var out []stampedLine
	for _, line := range parts[:len(parts)-1] {
		if len(bytes.TrimSpace(line)) > 0 {
			out = append(out, stampedLine{line, nowNs})
		}
	}
	return out
}

// eventCount is the events per stream of a watch of durationS at intervalMs (at least 1).
func eventCount(durationS, intervalMs float64) int {
	n := int(math.Floor(durationS*1000/intervalMs + 1e-9))
	if n < 1 {
		return 1
	}
	return n
}

// watchPath is the watch URL (interval in whole ms, rounded half to even as Python's round).
func watchPath(intervalMs float64, count int) string {
	ivl := int64(math.RoundToEven(intervalMs))
	if ivl < 1 {
		ivl = 1
	}
	return fmt.Sprintf("/api/v1/watch/namespaces/%s/pods?watch=1&interval_ms=%d&count=%d", watchNamespace, ivl, count)
}

// staggerDelay is when watch index of streams opens after the first: i × interval / N, or 0.
func staggerDelay(index, streams int, intervalMs float64, stagger bool) time.Duration {
	if !stagger {
		return 0
	}
	return time.Duration(float64(index) * intervalMs / float64(streams) * float64(time.Millisecond))
}

// watchStream runs one watch on c and adds an event_latency_ms row per event (stream = index,
// with the raw stamps seq, sent_ns, received_ns).
func watchStream(ctx context.Context, c *connection, index int, intervalMs float64, count int, out *rowList) error {
	var splitter lineSplitter
	var events []row
	var parseErr error
	onChunk := func(data []byte, nowNs int64) {
		for _, l := range splitter.feed(data, nowNs) {
			var ev struct {
				Lab struct {
					Seq    int64 `json:"seq"`
					SentNs int64 `json:"sent_ns"`
				} `json:"lab"`
			}
			if err := json.Unmarshal(l.line, &ev); err != nil && parseErr == nil {
				parseErr = workloadError("watch %d: bad event line: %v", index, err)
			}
			r := newRow("event_latency_ms", float64(l.nowNs-ev.Lab.SentNs)/1e6, "ms", index)
			r.watch, r.seq, r.sentNs, r.receivedNs = true, ev.Lab.Seq, ev.Lab.SentNs, l.nowNs
			events = append(events, r)
		}
	}
	resp, err := c.request(ctx, "GET", watchPath(intervalMs, count), false, onChunk)
	if err != nil {
		return err
	}
	if resp.status != 200 {
		return workloadError("watch %d: status %d", index, resp.status)
	}
	if parseErr != nil {
		return parseErr
	}
	if len(events) != count {
		return workloadError("watch %d: %d events, expected %d", index, len(events), count)
	}
	out.add(events...)
	return nil
}

// runWatch opens p.Streams watches on one connection for p.DurationS (lab/workloads/watch.py).
func runWatch(ctx context.Context, p *watchParams, d *dialer) ([]row, error) {
	count := eventCount(p.DurationS, p.IntervalMs)
	c, err := d.connect(ctx, "cold", nil)
	if err != nil {
		return nil, err
	}
	defer c.close()
	var rows rowList
	g := newGroup(ctx)
	start := time.Now()
	for i := 0; i < p.Streams; i++ {
		i := i
		at := start.Add(staggerDelay(i, p.Streams, p.IntervalMs, p.Stagger))
		g.spawn(func(ctx context.Context) error {
			if !sleepUntil(ctx, at) {
				return ctx.Err()
			}
			return watchStream(ctx, c, i, p.IntervalMs, count, &rows)
		})
	}
	if err := g.wait(); err != nil {
		return nil, err
	}
	return rows.sorted(func(a, b row) bool {
		if a.stream != b.stream {
			return a.stream < b.stream
		}
		return a.seq < b.seq
	}), nil
}
