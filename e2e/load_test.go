package e2e

import (
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// The numbers are kept small so that the stage is short on a 2-core CI
// machine; they keep the ratios of a real rollout: the propagation lag is
// shorter than the drain delay, slow requests outlive the drain.
const (
	rate     = 400                     // requests a second, keep-alive
	drain    = 1500 * time.Millisecond // -drain-delay
	budget   = 10 * time.Second        // -timeout
	lag      = 600 * time.Millisecond  // endpoint propagation after SIGTERM
	warmup   = 700 * time.Millisecond  // load before the signal
	slowD    = 2 * time.Second         // /slow?d=, in flight at the signal
	slowN    = 4
	hangSpan = 5 * time.Second // exit no later than this after drain end and last slow response
)

// load is a running vegeta attack at rate, keep-alive, against url.
type load struct {
	atk     *vegeta.Attacker
	tr      *http.Transport
	summary chan loadSummary
}

type loadSummary struct {
	sent, failed int
	errs         map[string]int // failure text -> count
}

func attack(url string) *load {
	return attackWith(url, &http.Transport{MaxIdleConnsPerHost: 100})
}

// attackWith is attack through tr.
func attackWith(url string, tr *http.Transport) *load {
	l := &load{
		atk:     vegeta.NewAttacker(vegeta.Client(&http.Client{Transport: tr, Timeout: 10 * time.Second})),
		tr:      tr,
		summary: make(chan loadSummary, 1),
	}
	tgt := vegeta.NewStaticTargeter(vegeta.Target{Method: "GET", URL: url})
	res := l.atk.Attack(tgt, vegeta.Rate{Freq: rate, Per: time.Second}, 0, "e2e")
	go func() {
		s := loadSummary{errs: map[string]int{}}
		for r := range res {
			s.sent++
			if r.Error != "" || r.Code != http.StatusOK {
				s.failed++
				s.errs[strings.TrimSpace(r.Error)]++
			}
		}
		l.summary <- s
	}()
	return l
}

// stop ends the attack and returns its summary once every request has
// come back.
func (l *load) stop() loadSummary {
	l.atk.Stop()
	s := <-l.summary
	l.tr.CloseIdleConnections()
	return s
}

// direct is scenario 1 (and 3 with drain 0): clients talk to the instance
// itself and keep sending for lag after SIGTERM, as clients whose
// endpoints have not updated yet do.
func direct(t *testing.T, drain time.Duration) (loadSummary, time.Duration) {
	in := start(t, "pod", drain, budget)
	base := "http://" + in.addr
	l := attack(base + "/")
	time.Sleep(warmup) // the load runs for a while before the signal, as it would
	slows := startSlow(t, base, slowN, slowD)
	sig := in.sigterm()
	drainEnd := sig.Add(drain)
	if drain > 0 {
		d, ok := readiness(t, base, sig, drainEnd)
		if !ok {
			t.Error("readiness did not answer 503 during the drain delay")
		} else {
			t.Logf("readiness answered 503 %v after SIGTERM", d.Round(time.Microsecond))
		}
	}
	time.Sleep(time.Until(sig.Add(lag))) // clients keep sending through the lag
	s := l.stop()
	lastSlow := waitSlow(t, slows, slowN, drain > 0)
	ref := later(drainEnd, lastSlow)
	if code := in.wait(ref.Add(hangSpan)); code != 0 {
		t.Errorf("exit code %d, want 0\n%s", code, in.logs())
	}
	return s, in.exitAt.Sub(ref)
}

func TestDirect(t *testing.T) {
	s, exit := direct(t, drain)
	t.Logf("direct, drain %v, lag %v: %d requests at %d/s, %d failed; %d slow requests of %v; exit %v after the later of drain end and last slow response",
		drain, lag, s.sent, rate, s.failed, slowN, slowD, exit.Round(time.Millisecond))
	if s.failed > 0 {
		t.Errorf("%d of %d requests failed: %v", s.failed, s.sent, s.errs)
	}
}

// TestDirectNoDrain is scenario 3: the same traffic with -drain-delay 0.
// It exists to show why the drain delay exists: the listener closes while
// clients still send to the old address, so requests fail.
func TestDirectNoDrain(t *testing.T) {
	s, exit := direct(t, 0)
	t.Logf("direct, NO drain, lag %v: %d requests at %d/s, %d failed (%v); exit %v after the last slow response",
		lag, s.sent, rate, s.failed, s.errs, exit.Round(time.Millisecond))
	if s.failed == 0 {
		t.Errorf("no request failed without a drain delay: the scenario shows nothing")
	}
}

// rollout is scenario 2: traffic through a kube-proxy-like forwarder that
// sends new connections to the old instance until lag after its SIGTERM,
// then to the new one. generate runs the traffic and returns after
// runFor; it is told the forwarder's address. extra are more flags for
// both instances.
func rollout(t *testing.T, runFor time.Duration, generate func(addr string, runFor time.Duration), extra ...string) {
	old := start(t, "old pod", drain, budget, extra...)
	next := start(t, "new pod", 0, budget, extra...)
	f := newForwarder(t, old.addr)
	done := make(chan time.Time, 1)
	go func() {
		generate(f.addr(), runFor)
		done <- time.Now()
	}()
	time.Sleep(warmup)
	slows := startSlow(t, "http://"+f.addr(), slowN, slowD)
	sig := old.sigterm()
	time.Sleep(time.Until(sig.Add(lag)))
	f.switchTo(next.addr)
	lastSlow := waitSlow(t, slows, slowN, true)
	ref := later(sig.Add(drain), lastSlow)
	if code := old.wait(ref.Add(hangSpan)); code != 0 {
		t.Errorf("old pod: exit code %d, want 0", code)
	}
	t.Logf("old pod exited %v after the later of drain end and last slow response", old.exitAt.Sub(ref).Round(time.Millisecond))
	if end := <-done; !end.After(old.exitAt) {
		t.Error("traffic did not outlast the old pod: the test proves nothing")
	}
	if n := f.dialErrors(); n > 0 {
		t.Errorf("forwarder: %d dials to a backend failed", n)
	}
	next.sigterm()
	if code := next.wait(time.Now().Add(budget + hangSpan)); code != 0 {
		t.Errorf("new pod: exit code %d, want 0", code)
	}
}

func TestRolloutVegeta(t *testing.T) {
	// The old pod exits at about warmup + slowD; traffic goes on after it.
	runFor := warmup + slowD + time.Second
	rollout(t, runFor, func(addr string, runFor time.Duration) {
		l := attack("http://" + addr + "/")
		time.Sleep(runFor)
		s := l.stop()
		t.Logf("rollout, vegeta: %d requests at %d/s, %d failed", s.sent, rate, s.failed)
		if s.failed > 0 {
			t.Errorf("%d of %d requests failed: %v", s.failed, s.sent, s.errs)
		}
	})
}

var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// TestRolloutWrk is scenario 2 with wrk, which does not retry: any
// connection closed under a request is a socket error.
func TestRolloutWrk(t *testing.T) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk is not installed (.ci/e2e.sh installs it)")
	}
	runFor := warmup + slowD + time.Second
	rollout(t, runFor, func(addr string, runFor time.Duration) {
		secs := strconv.Itoa(int(runFor.Round(time.Second) / time.Second))
		out, err := exec.Command(wrk, "-t1", "-c16", "-d"+secs+"s", "http://"+addr+"/").CombinedOutput()
		if err != nil {
			t.Errorf("wrk: %v\n%s", err, out)
			return
		}
		m := wrkRequests.FindSubmatch(out)
		if m == nil {
			t.Errorf("wrk output has no request count:\n%s", out)
			return
		}
		socket := 0
		if m := wrkSocket.FindSubmatch(out); m != nil {
			for _, n := range m[1:] {
				v, _ := strconv.Atoi(string(n))
				socket += v
			}
		}
		non2xx := 0
		if m := wrkNon2xx.FindSubmatch(out); m != nil {
			non2xx, _ = strconv.Atoi(string(m[1]))
		}
		t.Logf("rollout, wrk -c16: %s requests, %d socket errors, %d non-2xx", m[1], socket, non2xx)
		if socket > 0 || non2xx > 0 {
			t.Errorf("wrk saw %d socket errors and %d non-2xx responses:\n%s", socket, non2xx, out)
		}
	})
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
