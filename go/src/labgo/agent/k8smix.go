package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"time"
)

// listPath is one LIST page's URL.
func listPath(limit int, token string) string {
	path := fmt.Sprintf("/api/v1/namespaces/%s/pods?limit=%d", watchNamespace, limit)
	if token != "" {
		path += "&continue=" + url.QueryEscape(token)
	}
	return path
}

// continueToken is the metadata.continue of a LIST page ("" at the end of the list).
func continueToken(body []byte) string {
	var page struct {
		Metadata struct {
			Continue string `json:"continue"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(body, &page)
	return page.Metadata.Continue
}

// runK8sMix is an apiserver-like mix on one connection for p.DurationS: watches, small GETs
// spread evenly, paginated LISTs spread evenly (each page's token from the previous one), at
// most p.MaxConcurrentStreams requests open at once, watches included (lab/workloads/k8s_mix.py).
func runK8sMix(ctx context.Context, p *k8sMixParams, d *dialer) ([]row, error) {
	c, err := d.connect(ctx, "cold", nil)
	if err != nil {
		return nil, err
	}
	defer c.close()
	limiter := make(chan struct{}, p.MaxConcurrentStreams)
	acquire := func(ctx context.Context) bool {
		select {
		case limiter <- struct{}{}:
			return true
		case <-ctx.Done():
			return false
		}
	}
	release := func() { <-limiter }
	var rows rowList
	g := newGroup(ctx)
	start := time.Now()
	duration := time.Duration(p.DurationS * float64(time.Second))

	count := eventCount(p.DurationS, p.WatchIntervalMs)
	for i := 0; i < p.Watches; i++ {
		i := i
		g.spawn(func(ctx context.Context) error {
			if !acquire(ctx) {
				return ctx.Err()
			}
			defer release()
			return watchStream(ctx, c, i, p.WatchIntervalMs, count, &rows)
		})
	}
	g.spawn(func(ctx context.Context) error {
		token := ""
		step := duration / time.Duration(maxInt(1, p.ListPages))
		for i := 0; i < p.ListPages; i++ {
			if !sleepUntil(ctx, start.Add(time.Duration(i)*step)) || !acquire(ctx) {
				return ctx.Err()
			}
			resp, err := c.request(ctx, "GET", listPath(p.ListLimit, token), true, nil)
			release()
			if err != nil {
				return err
			}
			if err := checkResponse(resp, -1, fmt.Sprintf("k8s_mix LIST page %d", i)); err != nil {
				return err
			}
			token = continueToken(resp.body)
			ms, err := durationMs(resp.sentNs(), resp.endNs, "completion")
			if err != nil {
				return err
			}
			rows.add(newRow("completion_ms", ms, "ms", i))
		}
		return nil
	})
	getPath := fmt.Sprintf("/bytes/%d", p.GetBytes)
	step := duration / time.Duration(maxInt(1, p.Gets))
	for i := 0; i < p.Gets; i++ {
		if !sleepUntil(g.ctx, start.Add(time.Duration(i)*step)) {
			break
		}
		i := i
		g.spawn(func(ctx context.Context) error {
			if !acquire(ctx) {
				return ctx.Err()
			}
			resp, err := c.request(ctx, "GET", getPath, false, nil)
			release()
			if err != nil {
				return err
			}
			if err := checkResponse(resp, p.GetBytes, fmt.Sprintf("k8s_mix GET %d", i)); err != nil {
				return err
			}
			ms, err := durationMs(resp.sentNs(), resp.endNs, "completion")
			if err != nil {
				return err
			}
			rows.add(newRow("rpc_latency_ms", ms, "ms", i))
			return nil
		})
	}
	if err := g.wait(); err != nil {
		return nil, err
	}
	return rows.sorted(func(a, b row) bool {
		if a.metric != b.metric {
			return a.metric < b.metric
		}
		if a.stream != b.stream {
			return a.stream < b.stream
		}
		return a.seq < b.seq
	}), nil
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}
