package e2e

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The adaptive drain through a rollout (issue 18). Each pod is
// examples/httpserver; clients open a connection per request and go
// through the forwarder, which models one node's kube-proxy:
//
//   - kube-proxy programs iptables rules (a DNAT to one of the endpoints)
//     when it syncs; a new connection's first packet follows the rules of
//     that moment, and its conntrack entry keeps every later packet of the
//     connection on the same pod, whatever later syncs write. The forwarder
//     picks the backend when it accepts a connection and keeps the pipe
//     until one side closes it: the same two rules.
//   - The endpoint removal reaches the node's rules L after SIGTERM: the
//     endpoint controller's update, the watch, and kube-proxy's next sync
//     (at most one a second, minSyncPeriod) add up to that lag, which the
//     kubelet's SIGTERM does not wait for. The forwarder's switchTo at L is
//     that sync.
//   - A connection that the rules still send to the old pod after its
//     listener has closed is refused: the forwarder's dial fails and it
//     closes the client's connection, which the client sees as an error
//     (Go's client retries only on reused connections).
//
// L = 0.3s is a small cluster, L = 4s a busy one. Adaptive (least 1s, most
// 10s) must fail nothing and end the old pod within about L + Q + 0.5s;
// fixed 2s is the control that fails at L = 4s; fixed 5s shows the time a
// fixed guess costs at L = 0.3s.
const (
	adaptiveRate   = 100 // requests a second per rollout; three run at once
	adaptiveWarmup = 1500 * time.Millisecond
	adaptiveRuns   = 3
	adaptiveBudget = 15 * time.Second
)

var adaptiveLeast, adaptiveMost = time.Second, 10 * time.Second

// drainKind is a pod's drain flags.
type drainKind struct {
	name  string
	drain time.Duration // -drain-delay
	extra []string
}

var adaptiveKinds = []drainKind{
	{"fixed 2s", 2 * time.Second, nil},
	{"fixed 5s", 5 * time.Second, nil},
	{"adaptive", 0, []string{"-drain-min", adaptiveLeast.String(), "-drain-max", adaptiveMost.String()}},
}

// drainOutcome is one rollout's figures.
type drainOutcome struct {
	sent, failed int
	exit         time.Duration // SIGTERM to the old pod's exit
	late         int           // late arrivals, from the old pod's last record; -1 for a fixed drain
	reason       string        // why the adaptive drain ended
	window       time.Duration // its Q
	drained      time.Duration // how long it lasted
}

// perConnection sends rate requests a second to url, each on a connection
// of its own, until stop is closed, and returns how many it sent and how
// many failed once all have come back.
func perConnection(url string, rate int, stop <-chan struct{}) (sent, failed int) {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	var bad atomic.Int64
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for {
		select {
		case <-stop:
			wg.Wait()
			return sent, int(bad.Load())
		case <-tick.C:
		}
		sent++
		wg.Go(func() {
			resp, err := c.Get(url)
			if err != nil {
				bad.Add(1)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				bad.Add(1)
			}
		})
	}
}

var (
	drainEndedRe = regexp.MustCompile(`msg="shutdown: drain ended" reason=("low traffic"|\w+) elapsed=(\S+).*?(?: window=(\S+))?\n`)
	lateRe       = regexp.MustCompile(`msg="shutdown: finished".* late_arrivals=(\d+)`)
)

// drainRollout runs one rollout: the old pod with kind's drain, traffic at
// rate through a forwarder that moves new connections to next lag after
// the old pod's SIGTERM, from warmup before the signal until 300ms after
// the old pod exited.
func drainRollout(t *testing.T, next *instance, kind drainKind, lag time.Duration, rate int, warmup time.Duration) drainOutcome {
	old := start(t, "old pod", kind.drain, adaptiveBudget, kind.extra...)
	f := newForwarder(t, old.addr)
	stop := make(chan struct{})
	var out drainOutcome
	traffic := make(chan struct{})
	go func() {
		out.sent, out.failed = perConnection("http://"+f.addr()+"/", rate, stop)
		close(traffic)
	}()
	time.Sleep(warmup) // the traffic that sets λ, as a service's would
	sig := old.sigterm()
	time.Sleep(time.Until(sig.Add(lag))) // the lag, not a synchronisation
	f.switchTo(next.addr)
	if code := old.wait(sig.Add(adaptiveBudget + 15*time.Second)); code != 0 {
		t.Errorf("old pod (%s, L %v): exit code %d, want 0", kind.name, lag, code)
	}
	out.exit = old.exitAt.Sub(sig)
	time.Sleep(300 * time.Millisecond) // traffic goes on after the old pod, to the new one
	close(stop)
	<-traffic
	logs := old.logs()
	out.late = -1
	if m := lateRe.FindStringSubmatch(logs); m != nil {
		out.late, _ = strconv.Atoi(m[1])
	}
	if m := drainEndedRe.FindStringSubmatch(logs); m != nil {
		out.reason = strings.Trim(m[1], `"`)
		out.drained, _ = time.ParseDuration(m[2])
		out.window, _ = time.ParseDuration(m[3])
	} else if kind.extra != nil {
		t.Errorf("old pod (%s, L %v) logged no drain end:\n%s", kind.name, lag, logs)
	}
	return out
}

// TestAdaptiveDrainLosesNoRequestAtAnyEndpointLag runs the rollouts that
// the top of this file describes, the three drains of one L at once: the
// adaptive drain fails no request and ends quiet by L + Q + 0.5s at both
// lags, where fixed 2s fails requests at L = 4s.
func TestAdaptiveDrainLosesNoRequestAtAnyEndpointLag(t *testing.T) {
	t.Parallel() // beside TestAdaptiveDrainAtLowRateLastsItsMost
	next := start(t, "new pod", 0, adaptiveBudget)
	lags := []time.Duration{300 * time.Millisecond, 4 * time.Second}
	var mu sync.Mutex
	got := map[string][]drainOutcome{} // by L and kind
	key := func(lag time.Duration, k drainKind) string { return fmt.Sprintf("%v %s", lag, k.name) }
	for run := 1; run <= adaptiveRuns; run++ {
		for _, lag := range lags {
			t.Run(fmt.Sprintf("run %d, L %v", run, lag), func(t *testing.T) {
				// The three drains of one L at once, each in a goroutine of
				// its own: t.Parallel would run only -parallel (GOMAXPROCS)
				// of them at a time, two on a 2-core machine.
				var wg sync.WaitGroup
				defer wg.Wait()
				for _, k := range adaptiveKinds {
					wg.Go(func() {
						t.Run(k.name, func(t *testing.T) {
							o := drainRollout(t, next, k, lag, adaptiveRate, adaptiveWarmup)
							mu.Lock()
							got[key(lag, k)] = append(got[key(lag, k)], o)
							mu.Unlock()
							if k.extra == nil {
								return
							}
							if o.failed > 0 {
								t.Errorf("adaptive drain, L %v: %d of %d requests failed", lag, o.failed, o.sent)
							}
							if bound := lag + o.window + 500*time.Millisecond; o.reason != "quiet" || o.exit > bound {
								t.Errorf("adaptive drain, L %v: ended %s after %v, old pod exited %v after SIGTERM; want quiet, by L + Q + 0.5s = %v",
									lag, o.reason, o.drained, o.exit.Round(time.Millisecond), bound)
							}
						})
					})
				}
			})
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "adaptive drain (least %v, most %v), %d runs, %d requests/s, a connection each, warmup %v:\n",
		adaptiveLeast, adaptiveMost, adaptiveRuns, adaptiveRate, adaptiveWarmup)
	fmt.Fprintf(&b, "%-6s %-9s %9s %7s %22s %6s %s\n", "L", "drain", "requests", "failed", "SIGTERM→exit med/max", "late", "drain ended")
	for _, lag := range lags {
		for _, k := range adaptiveKinds {
			outs := got[key(lag, k)]
			if len(outs) == 0 {
				continue
			}
			var sent, failed, late []int
			var exits []time.Duration
			ended := ""
			for _, o := range outs {
				sent, failed, late = append(sent, o.sent), append(failed, o.failed), append(late, o.late)
				exits = append(exits, o.exit)
				if o.reason != "" {
					ended += fmt.Sprintf(" %s %v (Q %v);", o.reason, o.drained.Round(time.Millisecond), o.window)
				}
			}
			slices.Sort(exits)
			fmt.Fprintf(&b, "%-6v %-9s %9s %7s %10v / %-9v %6s%s\n", lag, k.name, joinInts(sent), joinInts(failed),
				exits[len(exits)/2].Round(time.Millisecond), exits[len(exits)-1].Round(time.Millisecond), joinInts(late), ended)
		}
	}
	t.Log(b.String())
	if outs := got[key(4*time.Second, adaptiveKinds[0])]; len(outs) > 0 && slices.IndexFunc(outs, func(o drainOutcome) bool { return o.failed > 0 }) < 0 {
		t.Error("fixed 2s drain, L 4s: no request failed in any run: the control shows nothing")
	}
}

// TestAdaptiveDrainAtLowRateLastsItsMost: at 2 requests a second there is
// too little evidence to judge, and the drain lasts its most.
func TestAdaptiveDrainAtLowRateLastsItsMost(t *testing.T) {
	t.Parallel() // beside TestAdaptiveDrainLosesNoRequestAtAnyEndpointLag
	next := start(t, "new pod", 0, adaptiveBudget)
	// 12s of warmup: 24 requests, more than the 20 needed, at a rate below
	// the 5 a second needed.
	o := drainRollout(t, next, adaptiveKinds[2], 300*time.Millisecond, 2, 12*time.Second)
	t.Logf("adaptive drain at 2 requests/s, L 300ms: %d requests, %d failed; drain ended %s after %v; SIGTERM→exit %v; %d late arrivals",
		o.sent, o.failed, o.reason, o.drained.Round(time.Millisecond), o.exit.Round(time.Millisecond), o.late)
	if o.reason != "low traffic" || o.drained < adaptiveMost || o.drained > adaptiveMost+100*time.Millisecond {
		t.Errorf("drain ended %q after %v, want \"low traffic\" after its most, %v", o.reason, o.drained, adaptiveMost)
	}
	if o.failed > 0 {
		t.Errorf("%d of %d requests failed", o.failed, o.sent)
	}
}

// joinInts joins v with commas, a negative number as "-".
func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
		if n < 0 {
			s[i] = "-"
		}
	}
	return strings.Join(s, ",")
}
