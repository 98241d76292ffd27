package main

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"labgo/monoclock"
)

// runBulk downloads p.Bytes once on a fresh connection: goodput_mbit and completion_ms
// (lab/workloads/bulk.py; the handshake is part of neither).
func runBulk(ctx context.Context, p *bulkParams, d *dialer) ([]row, error) {
	c, err := d.connect(ctx, "cold", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.request(ctx, "GET", fmt.Sprintf("/bytes/%d", p.Bytes), false, nil)
	c.close()
	if err != nil {
		return nil, err
	}
	if err := checkResponse(resp, p.Bytes, "bulk"); err != nil {
		return nil, err
	}
	g, err := goodputMbit(resp.bodyBytes, resp.sentNs(), resp.endNs)
	if err != nil {
		return nil, err
	}
	ms, err := durationMs(resp.sentNs(), resp.endNs, "completion")
	if err != nil {
		return nil, err
	}
	return []row{newRow("goodput_mbit", g, "Mbit/s", -1), newRow("completion_ms", ms, "ms", -1)}, nil
}

// runMultiplex requests p.Objects × /bytes/ObjectBytes at once on one connection:
// completion_ms per object from the common start, goodput_mbit of the batch
// (lab/workloads/multiplex.py).
func runMultiplex(ctx context.Context, p *multiplexParams, d *dialer) ([]row, error) {
	c, err := d.connect(ctx, "cold", nil)
	if err != nil {
		return nil, err
	}
	defer c.close()
	responses := make([]*response, p.Objects)
	path := fmt.Sprintf("/bytes/%d", p.ObjectBytes)
	g := newGroup(ctx)
	startNs := monoclock.NowNs()
	for i := 0; i < p.Objects; i++ {
		i := i
		g.spawn(func(ctx context.Context) error {
			r, err := c.request(ctx, "GET", path, false, nil)
			responses[i] = r
			return err
		})
	}
	if err := g.wait(); err != nil {
		return nil, err
	}
	var rows []row
	var lastNs, total int64
	for i, r := range responses {
		if err := checkResponse(r, p.ObjectBytes, fmt.Sprintf("multiplex object %d", i)); err != nil {
			return nil, err
		}
		ms, err := durationMs(startNs, r.endNs, "completion")
		if err != nil {
			return nil, err
		}
		rows = append(rows, newRow("completion_ms", ms, "ms", i))
		if r.endNs > lastNs {
			lastNs = r.endNs
		}
		total += r.bodyBytes
	}
	if total > 0 && lastNs > startNs {
		gp, err := goodputMbit(total, startNs, lastNs)
		if err != nil {
			return nil, err
		}
		rows = append(rows, newRow("goodput_mbit", gp, "Mbit/s", -1))
	}
	return rows, nil
}

// rpcLoop issues GET path every interval (absolute deadlines, not waiting for the previous
// one) until `until` is closed; it returns once every request it issued has finished.
func rpcLoop(ctx context.Context, c *connection, path string, expected int64, interval time.Duration,
	until <-chan struct{}) ([]*response, error) {
	var mu sync.Mutex
	var out []*response
	g := newGroup(ctx)
	one := func(ctx context.Context) error {
		r, err := c.request(ctx, "GET", path, false, nil)
		if err != nil {
			return err
		}
		if err := checkResponse(r, expected, "rpc "+path); err != nil {
			return err
		}
		mu.Lock()
		out = append(out, r)
		mu.Unlock()
		return nil
	}
	start := time.Now()
loop:
	for k := 1; ; k++ {
		select {
		case <-until:
			break loop
		default:
		}
		g.spawn(one)
		timer := time.NewTimer(time.Until(start.Add(time.Duration(k) * interval)))
		select {
		case <-timer.C:
		case <-until:
			timer.Stop()
			break loop
		case <-g.ctx.Done():
			timer.Stop()
			break loop
		}
	}
	err := g.wait()
	return out, err
}

// runRPCUnderLoad runs small GETs every p.IntervalMs beside a bulk download on one connection:
// rpc_latency_ms per small request (sorted by send time) and the bulk's goodput_mbit
// (lab/workloads/rpc_under_load.py).
func runRPCUnderLoad(ctx context.Context, p *rpcParams, d *dialer) ([]row, error) {
	c, err := d.connect(ctx, "cold", nil)
	if err != nil {
		return nil, err
	}
	defer c.close()
	done := make(chan struct{})
	var bulk *response
	g := newGroup(ctx)
	g.spawn(func(ctx context.Context) error {
		defer close(done)
		r, err := c.request(ctx, "GET", fmt.Sprintf("/bytes/%d", p.BulkBytes), false, nil)
		bulk = r
		return err
	})
	time.Sleep(time.Millisecond) // let the bulk request go out first (trio.sleep(0) in Python)
	var rpcs []*response
	g.spawn(func(ctx context.Context) error {
		var err error
		interval := time.Duration(p.IntervalMs * float64(time.Millisecond))
		rpcs, err = rpcLoop(ctx, c, fmt.Sprintf("/bytes/%d", p.RPCBytes), p.RPCBytes, interval, done)
		return err
	})
	if err := g.wait(); err != nil {
		return nil, err
	}
	if bulk == nil {
		return nil, workloadError("rpc_under_load: the bulk download did not complete")
	}
	if err := checkResponse(bulk, p.BulkBytes, "rpc_under_load bulk"); err != nil {
		return nil, err
	}
	if len(rpcs) == 0 {
		return nil, workloadError("rpc_under_load: no small request completed")
	}
	sort.SliceStable(rpcs, func(i, j int) bool { return rpcs[i].sentNs() < rpcs[j].sentNs() })
	var rows []row
	for i, r := range rpcs {
		ms, err := durationMs(r.sentNs(), r.endNs, "completion")
		if err != nil {
			return nil, err
		}
		rows = append(rows, newRow("rpc_latency_ms", ms, "ms", i))
	}
	gp, err := goodputMbit(bulk.bodyBytes, bulk.sentNs(), bulk.endNs)
	if err != nil {
		return nil, err
	}
	return append(rows, newRow("goodput_mbit", gp, "Mbit/s", -1)), nil
}
