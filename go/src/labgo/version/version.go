// Package version holds the versions of the Go stack, set at build time by scripts/build-go.sh
// (`-ldflags -X`): GOPATH builds have no module information to read them from.
package version

import (
	"fmt"
	"runtime"
)

// Set by the build (`-X labgo/version.QuicGo=…`); "unknown" when built by hand.
var (
	QuicGo = "unknown" // Debian golang-github-lucas-clemente-quic-go-dev
	XNet   = "unknown" // Debian golang-golang-x-net-dev
	XSys   = "unknown" // Debian golang-golang-x-sys-dev
)

// Line is the one-line version report of a program, e.g.
// "lab-go-server go1.19.8 quic-go 0.29.0-1 x/net 1:0.7.0+dfsg-1 x/sys 0.3.0-1".
func Line(program string) string {
	return fmt.Sprintf("%s %s quic-go %s x/net %s x/sys %s", program, runtime.Version(), QuicGo, XNet, XSys)
}
