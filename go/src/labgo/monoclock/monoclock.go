// Package monoclock reads CLOCK_MONOTONIC in nanoseconds: the clock the reference server and
// the lab's clients stamp events with (Python's time.monotonic_ns()), so latencies across
// processes on one host compare.
package monoclock

import "golang.org/x/sys/unix"

// NowNs is CLOCK_MONOTONIC now, in nanoseconds.
func NowNs() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err) // cannot fail on Linux
	}
	return ts.Nano()
}
