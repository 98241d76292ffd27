package main

import (
	"context"
	"fmt"
	"time"
)

// ticketWait is how long a connection waits for a post-handshake ticket before closing.
const ticketWait = 300 * time.Millisecond

// oneConnection opens one connection in mode and GETs path: (connect start, first byte, early
// data proven). It waits briefly for a fresh ticket before closing (lab/workloads/handshake.py).
func oneConnection(ctx context.Context, d *dialer, mode string, store *ticketStore, path string, size int64) (int64, int64, bool, error) {
	before := store.puts.Load()
	c, err := d.connect(ctx, mode, store)
	if err != nil {
		return 0, 0, false, err
	}
	resp, err := c.request(ctx, "GET", path, true, nil)
	if err == nil {
		err = checkResponse(resp, size, "handshake "+mode)
	}
	if err != nil {
		c.close()
		return 0, 0, false, err
	}
	store.waitForTicket(before, ticketWait)
	c.finishTLSState()
	c.close()
	first := resp.endNs
	if resp.firstByteNs != 0 {
		first = resp.firstByteNs
	}
	return c.times.connectStartNs, first, earlyDataProven(d.cfg.EarlyDataHeader, c.times, resp), nil
}

// earlyDataProven: by the server's lab-early-data: 1 when it sends that header, else by the
// handshake (early data sent and accepted, and the request left before the handshake was done).
func earlyDataProven(serverSays bool, t *timings, r *response) bool {
	if serverSays {
		return r.earlyData
	}
	done := t.handshakeDoneNs.Load()
	sentEarly := done == 0 || r.requestSentNs < done
	return t.earlyDataAccepted && t.earlyDataSent && sentEarly
}

// runHandshake opens p.Connections connections per mode, one after another; ttfb_ms and
// ttfb_rtt per connection with the mode and whether early data was proven.
func runHandshake(ctx context.Context, p *handshakeParams, d *dialer) ([]row, error) {
	store := newTicketStore()
	path := fmt.Sprintf("/bytes/%d", p.ResponseBytes)
	var rows []row
	for _, mode := range p.Modes {
		if mode != "cold" && store.puts.Load() == 0 { // one unmeasured cold connection primes
			if _, _, _, err := oneConnection(ctx, d, "cold", store, path, p.ResponseBytes); err != nil {
				return nil, err
			}
		}
		for i := 0; i < p.Connections; i++ {
			start, first, early, err := oneConnection(ctx, d, mode, store, path, p.ResponseBytes)
			if err != nil {
				return nil, err
			}
			ms, rtt, err := ttfb(start, first, d.cfg.BaseRTTMs)
			if err != nil {
				return nil, err
			}
			e := early
			for _, r := range []row{newRow("ttfb_ms", ms, "ms", i), newRow("ttfb_rtt", rtt, "rtt", i)} {
				r.mode, r.earlyData = mode, &e
				rows = append(rows, r)
			}
		}
	}
	return rows, nil
}
