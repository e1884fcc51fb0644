package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// eventSource returns the command that runs node/sse.mjs, which reads an
// event stream with the npm eventsource package until its standard input
// ends. Outside CI it skips the test when node or the package is missing;
// under CI=true (.ci/e2e.sh installs both) that fails it.
func eventSource(t *testing.T, url string) *exec.Cmd {
	t.Helper()
	missing := func(what string) {
		if os.Getenv("CI") != "true" {
			t.Skipf("%s is missing (.ci/e2e.sh installs it)", what)
		}
		t.Fatalf("%s is missing (.ci/e2e.sh installs it)", what)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node")
	}
	if _, err := os.Stat(filepath.Join("node", "node_modules", "eventsource")); err != nil {
		missing("the eventsource package (npm ci in e2e/node)")
	}
	cmd := exec.Command(node, "sse.mjs", url)
	cmd.Dir = "node"
	cmd.Stderr = os.Stderr
	return cmd
}

// sseLine is one line of sse.mjs's output and when it came.
type sseLine struct {
	at time.Time
	f  []string
}

// TestRolloutEventSource reads GET /events of examples/httpserver with a
// real EventSource (the npm eventsource package under Node) through the
// forwarder while the old pod is replaced. The old pod ends the stream at
// the end of its drain; EventSource reconnects with Last-Event-ID, through
// the forwarder, to the new pod, which goes on from there: every id from
// the first to the last, no gap, no repeat, and events after the old pod
// has exited.
func TestRolloutEventSource(t *testing.T) {
	old := start(t, "old pod", drain, budget)
	next := start(t, "new pod", 0, budget)
	f := newForwarder(t, old.addr)
	cmd := eventSource(t, "http://"+f.addr()+"/events")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	var (
		mu    sync.Mutex
		lines []sseLine
		eof   = make(chan struct{})
	)
	go func() {
		defer close(eof)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sseLine{time.Now(), strings.Fields(sc.Text())})
			mu.Unlock()
		}
	}()
	// waitFor polls the output, with a deadline, until cond holds.
	waitFor := func(what string, cond func([]sseLine) bool) {
		t.Helper()
		for guard := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			mu.Lock()
			ok := cond(lines)
			mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(guard) {
				t.Fatalf("EventSource: no %s in 30s", what)
			}
		}
	}
	events := func(after time.Time) func([]sseLine) bool {
		return func(ls []sseLine) bool {
			n := 0
			for _, l := range ls {
				if len(l.f) > 0 && l.f[0] == "event" && l.at.After(after) {
					n++
				}
			}
			return n >= 10
		}
	}
	waitFor("events from the old pod", events(time.Time{}))
	time.Sleep(warmup) // the stream runs for a while before the signal
	sig := old.sigterm()
	time.Sleep(time.Until(sig.Add(lag)))
	f.switchTo(next.addr)
	if code := old.wait(sig.Add(drain + hangSpan)); code != 0 {
		t.Errorf("old pod: exit code %d, want 0", code)
	}
	waitFor("events after the old pod exited", events(old.exitAt))
	stdin.Close()
	select {
	case <-eof:
	case <-time.After(30 * time.Second):
		t.Fatal("sse.mjs did not end 30s after its input closed")
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("node sse.mjs: %v", err)
	}
	next.sigterm()
	if code := next.wait(time.Now().Add(budget + hangSpan)); code != 0 {
		t.Errorf("new pod: exit code %d, want 0", code)
	}

	var (
		last, count, opens, ends int
		bad                      []string
		endedAt                  time.Time
		gaps                     durations
		sawDone                  bool
	)
	for _, l := range lines {
		switch {
		case len(l.f) == 0:
		case l.f[0] == "open":
			opens++
		case l.f[0] == "error":
			ends++
			if endedAt.IsZero() {
				endedAt = l.at
			}
			if len(l.f) > 1 && l.f[1] == "closed" {
				bad = append(bad, "EventSource closed for good: "+strings.Join(l.f, " "))
			}
		case l.f[0] == "event" && len(l.f) == 3:
			id, err := strconv.Atoi(l.f[1])
			if err != nil || l.f[2] != l.f[1] || id != last+1 {
				bad = append(bad, strings.Join(l.f, " ")+" after id "+strconv.Itoa(last))
			}
			if !endedAt.IsZero() {
				gaps = append(gaps, l.at.Sub(endedAt))
				endedAt = time.Time{}
			}
			last = id
			count++
		case l.f[0] == "done":
			sawDone = true
		default:
			bad = append(bad, "unexpected line: "+strings.Join(l.f, " "))
		}
	}
	t.Logf("rollout, EventSource (npm eventsource): %d events, ids 1 to %d, %d opens, %d stream ends or failed connections; stream end to next event: %v; old pod exit %v after drain end",
		count, last, opens, ends, gaps, old.exitAt.Sub(sig.Add(drain)).Round(time.Millisecond))
	if len(bad) > 0 {
		t.Errorf("events out of order or lost: %v", bad)
	}
	if !sawDone || count == 0 || last != count {
		t.Errorf("EventSource: done %v, %d events, last id %d; want done and ids 1 to %d", sawDone, count, last, count)
	}
	if opens < 2 || ends < 1 {
		t.Errorf("EventSource: %d opens, %d stream ends; want a reconnect", opens, ends)
	}
}
