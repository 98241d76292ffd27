package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// clockTicksPerSecond is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 on every
// Linux architecture the lab runs on (Python's os.sysconf("SC_CLK_TCK")).
const clockTicksPerSecond = 100

// procCPUS is user+sys CPU seconds of process pid so far, nil when pid is nil or gone.
func procCPUS(pid *int) *float64 {
	if pid == nil {
		return nil
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", *pid))
	if err != nil {
		return nil
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return nil
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return nil
	}
	v := float64(utime+stime) / clockTicksPerSecond
	return &v
}

// selfCPUS is user+sys CPU seconds of this process (all threads).
func selfCPUS() *float64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return nil
	}
	v := float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	return &v
}

// delta is after − before (≥ 0), nil when either is unknown.
func delta(after, before *float64) *float64 {
	if after == nil || before == nil {
		return nil
	}
	v := *after - *before
	if v < 0 {
		v = 0
	}
	return &v
}
