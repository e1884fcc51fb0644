//go:build !unix

package shutdown

import (
	"errors"
	"net"
	"time"
)

// Outside unix, nothing is inherited and Upgrade is not supported: Listen
// binds, Ready writes the PID file.

func inherit(*Manager)                                   {}
func claim(string, string) (net.Listener, origin, error) { return nil, origin{}, nil }
func oldServes() bool                                    { return false }
func abandonReady()                                      {}
func dropUnclaimed(*Manager)                             {}
func storeFD(string, net.Listener) error                 { return nil }
func tellReady(*Manager) error                           { return nil }
func startNew(*Manager, []*listener, string, time.Duration) (int, error) {
	return 0, errUpgradeUnsupported
}

var errUpgradeUnsupported = errors.New("shutdown: Upgrade: not supported on this platform")
