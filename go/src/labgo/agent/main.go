// Command lab-go-agent is the Go client side of one cell: the workloads of lab/workloads/ over
// Go's HTTP/2 (net/http's x/net/http2 transport) or quic-go's HTTP/3 round-tripper (0-RTT via
// GET_0RTT with a TLS session cache), as client-go would use them.
//
//	lab-go-agent --config agent.json [--wait-go]
//
// It reads the same JSON config as `python -m lab.run.agent` (lab/run/stack.py AgentConfig) and
// writes the same output file (lab/run/agent.py): per workload its sample rows (the metric
// names, units and streams of lab/workloads/*.py, CLOCK_MONOTONIC ns stamps), wall time, error
// and the CPU seconds of server, client and emulator. A failed workload does not stop the next.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"labgo/monoclock"
	"labgo/version"
)

const program = "lab-go-agent"

func main() {
	configPath := flag.String("config", "", "AgentConfig JSON file")
	waitGo := flag.Bool("wait-go", false, "print 'ready' once loaded, then wait for a line on stdin before starting")
	showVersion := flag.Bool("version", false, "print the go, quic-go and x/net versions and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Line(program))
		return
	}
	if *configPath == "" {
		fmt.Fprintln(os.Stderr, program+": --config is required")
		os.Exit(2)
	}
	data, err := os.ReadFile(*configPath)
	if err != nil {
		fatal(err)
	}
	cfg, err := loadConfig(data)
	if err != nil {
		fatal(err)
	}
	workloads := make([]workload, len(cfg.Workloads))
	for i, raw := range cfg.Workloads {
		if workloads[i], err = parseWorkload(raw); err != nil {
			fatal(err)
		}
	}
	d, err := newDialer(cfg)
	if err != nil {
		fatal(err)
	}
	if *waitGo {
		fmt.Println("ready")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			os.Exit(1) // the runner went away
		}
	}
	out := output{protocol: cfg.Protocol, startedNs: monoclock.NowNs()}
	for i, w := range workloads {
		out.results = append(out.results, runOne(i, w, cfg, d))
	}
	out.endNs = monoclock.NowNs()
	out.implementation = implementation(cfg, d)
	if err := writeAtomic(cfg.Out, out.encode()); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
	os.Exit(2)
}

// runOne runs one workload within its timeout and measures its wall and CPU time.
func runOne(index int, w workload, cfg *agentConfig, d *dialer) result {
	rate := cfg.ExpectedRateMbit
	if rate == nil || *rate == 0 {
		rate = cfg.RateMbit
	}
	timeoutS := cfg.TimeoutFactor*estimateS(w, cfg.BaseRTTMs, rate) + 20
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(timeoutS*float64(time.Second)))
	defer cancel()
	server0, client0, emu0 := procCPUS(cfg.ServerPID), selfCPUS(), procCPUS(cfg.EmulatorPID)
	t0 := time.Now()
	rows, err := dispatch(ctx, w, d)
	wall := time.Since(t0).Seconds()
	server1, client1, emu1 := procCPUS(cfg.ServerPID), selfCPUS(), procCPUS(cfg.EmulatorPID)
	r := result{
		index: index, kind: w.Kind, rows: rows, wallS: wall,
		cpu: cpuUsage{delta(server1, server0), delta(client1, client0), delta(emu1, emu0)},
	}
	if err != nil {
		r.rows = nil
		var f *failure
		switch {
		case ctx.Err() == context.DeadlineExceeded:
			r.err = fmt.Sprintf("timed out after %.0f s", timeoutS)
		case errors.As(err, &f):
			r.err = f.Error()
		default:
			r.err = "RequestFailed: " + err.Error()
		}
		fmt.Fprintf(os.Stderr, "%s: workload %d (%s): %s\n", program, index, w.Kind, r.err)
	}
	return r
}

func dispatch(ctx context.Context, w workload, d *dialer) ([]row, error) {
	switch p := w.params.(type) {
	case *watchParams:
		return runWatch(ctx, p, d)
	case *handshakeParams:
		return runHandshake(ctx, p, d)
	case *bulkParams:
		return runBulk(ctx, p, d)
	case *multiplexParams:
		return runMultiplex(ctx, p, d)
	case *rpcParams:
		return runRPCUnderLoad(ctx, p, d)
	case *k8sMixParams:
		return runK8sMix(ctx, p, d)
	}
	return nil, fmt.Errorf("no client for workload %q", w.Kind)
}

// quicCongestion names quic-go 0.29's only congestion controller as lab.peers.go
// QUIC_GO_CONGESTION does: NewReno (its sent-packet handler makes
// congestion.NewCubicSender(..., true /* use Reno */, ...); the CUBIC path is never used).
const quicCongestion = "reno"

// implementation is what the output says about this client: versions and the stack settings
// that are the implementation's (not the scenario's), with the UDP buffers quic-go got.
func implementation(cfg *agentConfig, d *dialer) map[string]any {
	impl := map[string]any{
		"client":  "go",
		"version": version.Line(program),
		"h2": map[string]any{
			"stack":                   "golang.org/x/net/http2 ClientConn (net/http's HTTP/2)",
			"tcp_congestion":          cfg.Stack.TCPCongestion,
			"tcp_notsent_lowat_bytes": cfg.Stack.TCPNotsentLowatBytes,
			"stream_window_bytes":     4 << 20, // x/net/http2 transportDefaultStreamFlow
			"connection_window_bytes": 1 << 30, // transportDefaultConnFlow
		},
		"quic": map[string]any{
			"stack":                       "quic-go http3.RoundTripper",
			"congestion_control":          quicCongestion,
			"max_stream_window_bytes":     6 << 20, // quic-go's auto-tuning limits
			"max_connection_window_bytes": 15 << 20,
		},
	}
	if cfg.Protocol == "h3" {
		q := impl["quic"].(map[string]any)
		q["udp_rcvbuf_bytes"], q["udp_sndbuf_bytes"] = d.udpRcvBuf.Load(), d.udpSndBuf.Load()
	}
	return impl
}
