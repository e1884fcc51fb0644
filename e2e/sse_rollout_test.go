package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// eventSource returns the command that runs node/sse.mjs, which reads an
// event stream with the npm eventsource package. Outside CI it skips the
// test when node or the package is missing; under CI=true (.ci/e2e.sh
// installs both) that fails it.
func eventSource(t *testing.T, url string, d time.Duration) *exec.Cmd {
	t.Helper()
	missing := func(what string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (.ci/e2e.sh installs it)", what)
		}
		t.Skipf("%s is missing (.ci/e2e.sh installs it)", what)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node")
	}
	if _, err := os.Stat(filepath.Join("node", "node_modules", "eventsource")); err != nil {
		missing("the eventsource package (npm ci in e2e/node)")
	}
	cmd := exec.Command(node, "sse.mjs", url, strconv.FormatInt(d.Milliseconds(), 10))
	cmd.Dir = "node"
	cmd.Stderr = os.Stderr
	return cmd
}

// TestRolloutEventSource reads GET /events of examples/httpserver with a
// real EventSource (the npm eventsource package under Node) through the
// forwarder while the old pod is replaced. The old pod ends the stream at
// the end of its drain; EventSource reconnects with Last-Event-ID, through
// the forwarder, to the new pod, which goes on from there: every id from
// the first to the last, no gap, no repeat.
func TestRolloutEventSource(t *testing.T) {
	runFor := warmup + slowD + time.Second
	rollout(t, runFor, func(addr string, runFor time.Duration) {
		cmd := eventSource(t, "http://"+addr+"/events", runFor)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Error(err)
			return
		}
		if err := cmd.Start(); err != nil {
			t.Error(err)
			return
		}
		var (
			last, events, opens, ends int
			bad                       []string
			endedAt                   time.Time
			gaps                      durations
			afterLastEnd              int
			sawDone                   bool
		)
		sc := bufio.NewScanner(out)
		for sc.Scan() { // node exits after runFor: the hang guard is cmd's own
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 0:
			case f[0] == "open":
				opens++
			case f[0] == "error":
				ends++
				afterLastEnd = 0
				if endedAt.IsZero() {
					endedAt = time.Now()
				}
				if len(f) > 1 && f[1] == "closed" {
					bad = append(bad, "EventSource closed for good: "+sc.Text())
				}
			case f[0] == "event" && len(f) == 3:
				id, err := strconv.Atoi(f[1])
				if err != nil || f[2] != f[1] || id != last+1 {
					bad = append(bad, sc.Text()+" after id "+strconv.Itoa(last))
				}
				if !endedAt.IsZero() {
					gaps = append(gaps, time.Since(endedAt))
					endedAt = time.Time{}
				}
				last = id
				events++
				afterLastEnd++
			case f[0] == "done":
				sawDone = true
			default:
				bad = append(bad, "unexpected line: "+sc.Text())
			}
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("node sse.mjs: %v", err)
		}
		t.Logf("rollout, EventSource (npm eventsource): %d events, ids 1 to %d, %d opens, %d stream ends or failed connections, stream end to next event: %v",
			events, last, opens, ends, gaps)
		if len(bad) > 0 {
			t.Errorf("events out of order or lost: %v", bad)
		}
		if !sawDone || events == 0 || last != events {
			t.Errorf("EventSource: done %v, %d events, last id %d; want done and ids 1 to %d", sawDone, events, last, events)
		}
		if opens < 2 || ends < 1 || afterLastEnd == 0 {
			t.Errorf("EventSource: %d opens, %d ends, %d events after the last end; want a reconnect that carried events", opens, ends, afterLastEnd)
		}
	})
}
