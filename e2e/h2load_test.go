package e2e

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

const (
	h2loadClients = 4
	h2loadRate    = 100 // requests a second, per client
)

var h2loadRequests = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)

// TestRolloutH2load runs h2load (nghttp2), an HTTP/2 client that no one
// here wrote, through the rollout of TestRolloutHTTP2. h2load does not
// open a new connection after a GOAWAY: each of its clients stops at the
// old pod's first GOAWAY (from the drain's Connection: close), so its
// succeeded count over the fixed duration says how long it ran, not what
// failed. What it can check: every request it started on a connection
// that got a GOAWAY was answered; none was reset, failed or timed out.
// TestRolloutHTTP2 checks the reconnects, with Go's client.
func TestRolloutH2load(t *testing.T) {
	h2load, err := exec.LookPath("h2load")
	if err != nil {
		if os.Getenv("CI") != "true" {
			t.Skip("h2load is not installed (.ci/e2e.sh installs nghttp2-client)")
		}
		t.Fatal("h2load is missing (.ci/e2e.sh installs nghttp2-client)")
	}
	runFor := warmup + slowD + time.Second
	rollout(t, runFor, func(addr string, runFor time.Duration) {
		secs := int(runFor.Round(time.Second) / time.Second)
		out, err := exec.Command(h2load, "-c", strconv.Itoa(h2loadClients), "--rps", strconv.Itoa(h2loadRate),
			"-D", strconv.Itoa(secs), "http://"+addr+"/").CombinedOutput()
		if err != nil {
			t.Errorf("h2load: %v\n%s", err, out)
			return
		}
		m := h2loadRequests.FindSubmatch(out)
		if m == nil {
			t.Errorf("h2load output has no request counts:\n%s", out)
			return
		}
		n := make([]int, 7) // total, started, done, succeeded, failed, errored, timeout
		for i := range n {
			n[i], _ = strconv.Atoi(string(m[i+1]))
		}
		t.Logf("rollout, h2load -c%d --rps %d -D %d: %d started, %d succeeded, %d failed, %d errored, %d timeout (%d asked for by rate and duration: h2load stops a client at GOAWAY)",
			h2loadClients, h2loadRate, secs, n[1], n[3], n[4], n[5], n[6], h2loadClients*h2loadRate*secs)
		if n[1] == 0 || n[3] != n[1] || n[4]+n[5]+n[6] > 0 {
			t.Errorf("h2load: %d started, %d succeeded, %d failed, %d errored, %d timed out; want every started request to succeed\n%s",
				n[1], n[3], n[4], n[5], n[6], out)
		}
	}, "-h2c")
}
