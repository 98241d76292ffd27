package main

import (
	"encoding/json"
	"fmt"
	"math"
)

// agentConfig is lab/run/stack.py AgentConfig, as the runner writes it (unknown keys ignored;
// missing ones take AgentConfig's defaults).
type agentConfig struct {
	Protocol         string            `json:"protocol"`
	Host             string            `json:"host"`
	Port             int               `json:"port"`
	ServerName       string            `json:"server_name"`
	CAFile           *string           `json:"ca_file"`
	BaseRTTMs        float64           `json:"base_rtt_ms"`
	RateMbit         *float64          `json:"rate_mbit"`          // the link's downlink rate
	ExpectedRateMbit *float64          `json:"expected_rate_mbit"` // for the timeouts only
	EarlyDataHeader  bool              `json:"early_data_header"`
	Stack            stackSpec         `json:"stack"`
	Workloads        []json.RawMessage `json:"workloads"`
	ServerPID        *int              `json:"server_pid"`
	EmulatorPID      *int              `json:"emulator_pid"`
	Out              string            `json:"out"`
	TimeoutFactor    float64           `json:"timeout_factor"`
}

// stackSpec is the part of lab.scenario.models.StackSpec a Go client can apply. Not
// `quic_congestion_control` (aioquic's setting): quic-go 0.29 has one fixed controller, NewReno
// (see quicCongestion), so the key is ignored.
type stackSpec struct {
	TCPCongestion        string `json:"tcp_congestion"`          // TCP_CONGESTION of h2 sockets
	TCPNotsentLowatBytes *int   `json:"tcp_notsent_lowat_bytes"` // nil: the kernel's default
	MaxConcurrentStreams int    `json:"max_concurrent_streams"`
}

func loadConfig(data []byte) (*agentConfig, error) {
	cfg := &agentConfig{
		ServerName:      "localhost",
		EarlyDataHeader: true,
		TimeoutFactor:   4.0,
		Stack:           stackSpec{TCPCongestion: "cubic", MaxConcurrentStreams: 100},
	}
	if err := json.Unmarshal(data, cfg); err != nil {
		return nil, err
	}
	if cfg.Protocol != "h2" && cfg.Protocol != "h3" {
		return nil, fmt.Errorf("protocol must be h2 or h3, not %q", cfg.Protocol)
	}
	if cfg.Out == "" || cfg.Host == "" || cfg.Port <= 0 {
		return nil, fmt.Errorf("config needs host, port and out")
	}
	return cfg, nil
}

// --- workload parameters (lab/scenario/workloads.py, same defaults) -------------------------

type watchParams struct {
	Streams           int     `json:"streams"`
	IntervalMs        float64 `json:"interval_ms"`
	DurationS         float64 `json:"duration_s"`
	StallThresholdRTT float64 `json:"stall_threshold_rtt"`
	Stagger           bool    `json:"stagger"`
}

type handshakeParams struct {
	Modes         []string `json:"modes"`
	Connections   int      `json:"connections"`
	ResponseBytes int64    `json:"response_bytes"`
}

type bulkParams struct {
	Bytes int64 `json:"bytes"`
}

type multiplexParams struct {
	Objects     int   `json:"objects"`
	ObjectBytes int64 `json:"object_bytes"`
}

type rpcParams struct {
	IntervalMs float64 `json:"interval_ms"`
	RPCBytes   int64   `json:"rpc_bytes"`
	BulkBytes  int64   `json:"bulk_bytes"`
}

type k8sMixParams struct {
	Gets                 int     `json:"gets"`
	GetBytes             int64   `json:"get_bytes"`
	ListPages            int     `json:"list_pages"`
	ListLimit            int     `json:"list_limit"`
	Watches              int     `json:"watches"`
	WatchIntervalMs      float64 `json:"watch_interval_ms"`
	DurationS            float64 `json:"duration_s"`
	MaxConcurrentStreams int     `json:"max_concurrent_streams"`
}

// workload is one entry of the config's list: its kind and its parameters with defaults.
type workload struct {
	Kind   string
	params any // *watchParams, *handshakeParams, ...
}

func parseWorkload(raw json.RawMessage) (workload, error) {
	var head struct {
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return workload{}, err
	}
	var p any
	switch head.Kind {
	case "watch":
		p = &watchParams{Streams: 16, IntervalMs: 20, DurationS: 10, StallThresholdRTT: 0.5, Stagger: true}
	case "handshake":
		p = &handshakeParams{Modes: []string{"cold", "resumed", "zero_rtt"}, Connections: 20, ResponseBytes: 100}
	case "bulk":
		p = &bulkParams{Bytes: 10_000_000}
	case "multiplex":
		p = &multiplexParams{Objects: 50, ObjectBytes: 20_000}
	case "rpc_under_load":
		p = &rpcParams{IntervalMs: 20, RPCBytes: 1_000, BulkBytes: 5_000_000}
	case "k8s_mix":
		p = &k8sMixParams{Gets: 200, GetBytes: 2_000, ListPages: 5, ListLimit: 100, Watches: 10,
			WatchIntervalMs: 100, DurationS: 10, MaxConcurrentStreams: 100}
	default:
		return workload{}, fmt.Errorf("unknown workload kind %q", head.Kind)
	}
	if err := json.Unmarshal(raw, p); err != nil {
		return workload{}, fmt.Errorf("%s: %w", head.Kind, err)
	}
	return workload{Kind: head.Kind, params: p}, nil
}

// estimateS is the rough duration (s) of one run of w, as each lab/workloads/<kind>.py
// estimate_s says; the agent's timeout is timeout_factor × this + 20 s.
func estimateS(w workload, baseRTTMs float64, rateMbit *float64) float64 {
	rate := 1000.0
	if rateMbit != nil && *rateMbit > 0 {
		rate = *rateMbit
	}
	rtt := baseRTTMs / 1e3
	switch p := w.params.(type) {
	case *watchParams:
		return p.DurationS + 4*rtt + 0.2
	case *handshakeParams:
		n := float64(len(p.Modes)*p.Connections + 1)
		return n * (3.5*rtt + 0.05)
	case *bulkParams:
		return float64(p.Bytes)*8/(rate*1e6)*1.3 + 12*rtt + 0.2
	case *multiplexParams:
		total := float64(p.Objects) * float64(p.ObjectBytes)
		return total*8/(rate*1e6)*1.3 + 12*rtt + 0.01*float64(p.Objects) + 0.2
	case *rpcParams:
		return float64(p.BulkBytes)*8/(rate*1e6)*1.4 + 12*rtt + 0.3
	case *k8sMixParams:
		return p.DurationS + 6*rtt + 0.3
	}
	return math.NaN()
}
