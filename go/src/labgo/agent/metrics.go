package main

import "math"

// The per-sample definitions of lab/workloads/metrics.py (docs/metrics.md): timestamps in
// CLOCK_MONOTONIC ns, durations in ms, rates in Mbit/s (10⁶ bit/s). The aggregates (HOL spread,
// excess percentiles, rpc p95, utilisation, CPU-bound) are computed by the runner from these
// rows (lab/workloads/aggregate.py), for every client alike.

// durationMs is end − start in ms; an error when end is before start.
func durationMs(startNs, endNs int64, what string) (float64, error) {
	if endNs < startNs {
		return 0, workloadError("%s: end before start", what)
	}
	return float64(endNs-startNs) / 1e6, nil
}

// ttfb is the time to first byte in ms and in base-RTT units (NaN when the base RTT is 0).
func ttfb(connectStartNs, firstByteNs int64, baseRTTMs float64) (ms, rtt float64, err error) {
	ms, err = durationMs(connectStartNs, firstByteNs, "ttfb")
	if err != nil {
		return 0, 0, err
	}
	if baseRTTMs > 0 {
		return ms, ms / baseRTTMs, nil
	}
	return ms, math.NaN(), nil
}

// goodputMbit is body bytes × 8 / (last byte − request sent), in Mbit/s.
func goodputMbit(bodyBytes int64, sentNs, lastByteNs int64) (float64, error) {
	ms, err := durationMs(sentNs, lastByteNs, "goodput")
	if err != nil {
		return 0, err
	}
	if ms == 0 {
		return 0, workloadError("goodput: last byte at the instant the request was sent")
	}
	return float64(bodyBytes) * 8 / (ms / 1e3) / 1e6, nil
}

// checkResponse fails unless the response is a 200 with expected body bytes (-1: any).
func checkResponse(r *response, expected int64, what string) error {
	if r.status != 200 {
		return workloadError("%s: status %d", what, r.status)
	}
	if expected >= 0 && r.bodyBytes != expected {
		return workloadError("%s: %d body bytes, expected %d", what, r.bodyBytes, expected)
	}
	return nil
}
