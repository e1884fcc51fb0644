package shutdown

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// The adaptive drain's time rules, each in a testing/synctest bubble, where
// time is exact: requests go through Handler with httptest.NewRecorder at
// chosen moments of the bubble's clock, and the drain's end is read from
// Context().

// drainRig is a Manager with an adaptive drain, born at the bubble's t0,
// with a mux under its Handler: "/" answers ok, "/readyz" is
// ReadinessHandler.
type drainRig struct {
	m    *Manager
	h    http.Handler
	t0   time.Time
	logs *logBuffer
	sent []chan struct{} // closed when a send has sent its last request
}

func newDrainRig(least, most time.Duration, opts ...Option) *drainRig {
	logs := &logBuffer{}
	base := []Option{WithSignals(), WithLogger(logs.logger(slog.LevelInfo)), WithAdaptiveDrain(least, most), WithTimeout(20 * time.Second)}
	r := &drainRig{t0: time.Now(), logs: logs}
	r.m = New(append(base, opts...)...)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.Handle("/readyz", r.m.ReadinessHandler())
	// Behind a middleware whose writer only unwraps (http_hijack_test.go).
	mux.Handle("/mw/readyz", unwrapOnly(r.m.ReadinessHandler()))
	r.h = r.m.Handler(mux)
	return r
}

// send serves a request to path through the Handler at t0+from,
// t0+from+every, ... before t0+until, on a goroutine of its own, with the
// given User-Agent.
func (r *drainRig) send(path, ua string, from, until, every time.Duration) {
	done := make(chan struct{})
	r.sent = append(r.sent, done)
	go func() {
		defer close(done)
		for at := from; at < until; at += every {
			time.Sleep(time.Until(r.t0.Add(at)))
			req := httptest.NewRequest("GET", path, nil)
			req.Header.Set("User-Agent", ua)
			r.h.ServeHTTP(httptest.NewRecorder(), req)
		}
	}()
}

// wait waits for every send to finish: a bubble ends only when its
// goroutines have.
func (r *drainRig) wait() {
	for _, done := range r.sent {
		<-done
	}
}

// triggerAt starts shutdown at t0+at and returns how long the drain
// lasted, once the shutdown has finished.
func (r *drainRig) triggerAt(at time.Duration) time.Duration {
	time.Sleep(time.Until(r.t0.Add(at)))
	start := time.Now()
	r.m.Trigger()
	<-r.m.Context().Done()
	d := time.Since(start)
	r.m.Wait()
	return d
}

func TestAdaptiveDrainTimeRules(t *testing.T) {
	const client = "Go-http-client/1.1"
	cases := []struct {
		name        string
		least, most time.Duration
		every       time.Duration // one request each
		from, until time.Duration // of the traffic, from t0
		signal      time.Duration // Trigger, from t0
		want        time.Duration // the drain
		record      string        // of "shutdown: drain ended"
	}{
		{"low rate lasts most", time.Second, 10 * time.Second, 250 * time.Millisecond, 0, 40 * time.Second, 30 * time.Second,
			10 * time.Second, "reason=\"low traffic\" elapsed=10s rate=4 requests=120 span=30s"},
		{"young Manager with few requests lasts most", time.Second, 10 * time.Second, 100 * time.Millisecond, 0, 5 * time.Second, 1500 * time.Millisecond,
			10 * time.Second, "reason=\"low traffic\" elapsed=10s rate=10 requests=15 span=1.5s"},
		{"traffic gone before the signal ends at least", 2 * time.Second, 10 * time.Second, 10 * time.Millisecond, 0, 20 * time.Second, 25 * time.Second,
			2 * time.Second, "reason=quiet elapsed=2s rate=80 requests=2000 span=25s window=1s"},
		{"ends at the last request plus Q of 1s", time.Second, 10 * time.Second, 10 * time.Millisecond, 0, 32500 * time.Millisecond, 30 * time.Second,
			3490 * time.Millisecond, "reason=quiet elapsed=3.49s rate=100 requests=3000 span=30s window=1s"},
		{"ends at the last request plus Q of 10/λ", time.Second, 10 * time.Second, 200 * time.Millisecond, 0, 33 * time.Second, 30 * time.Second,
			4800 * time.Millisecond, "reason=quiet elapsed=4.8s rate=5 requests=150 span=30s window=2s"},
		{"traffic that goes on lasts most", time.Second, 4 * time.Second, 10 * time.Millisecond, 0, 40 * time.Second, 30 * time.Second,
			4 * time.Second, "reason=most elapsed=4s rate=100 requests=3000 span=30s window=1s"},
		{"least == most is fixed", 3 * time.Second, 3 * time.Second, 10 * time.Millisecond, 0, 20 * time.Second, 25 * time.Second,
			3 * time.Second, "reason=most elapsed=3s rate=80 requests=2000 span=25s window=1s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newDrainRig(tc.least, tc.most)
				r.send("/", client, tc.from, tc.until, tc.every)
				if got := r.triggerAt(tc.signal); got != tc.want {
					t.Errorf("drain lasted %v, want %v", got, tc.want)
				}
				r.logs.waitFor(t, `msg="shutdown: drain ended" `+tc.record+"\n")
				r.wait()
			})
		})
	}
}

func TestAdaptiveDrainIgnoresProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newDrainRig(2*time.Second, 10*time.Second)
		r.send("/", "Go-http-client/1.1", 0, 30*time.Second, 10*time.Millisecond)
		// Probes every second, through the signal and the whole drain: the
		// kubelet's on any path, and a load balancer's on ReadinessHandler.
		// None at the instant the drain decides (start+least): until
		// ReadinessHandler marks it, a probe is a request still in its
		// handler, which keeps the window open (the safe side), and in a
		// bubble which of the two goroutines runs first at one instant is
		// not fixed.
		r.send("/", "kube-probe/1.31", 500*time.Millisecond, 40*time.Second, time.Second)
		r.send("/readyz", "ELB-HealthChecker/2.0", time.Millisecond, 40*time.Second, time.Second)
		r.send("/mw/readyz", "Envoy/HC", 250*time.Millisecond, 40*time.Second, time.Second)
		if got, want := r.triggerAt(30*time.Second), 2*time.Second; got != want {
			t.Errorf("drain lasted %v, want %v: probes counted as traffic", got, want)
		}
		r.logs.waitFor(t, `msg="shutdown: drain ended" reason=quiet elapsed=2s rate=100 requests=3000 span=30s window=1s`)
		r.wait()
	})
}

func TestAdaptiveDrainCountsProbeWithoutFilterAsTraffic(t *testing.T) {
	// The control for TestAdaptiveDrainIgnoresProbes: the same probe, with
	// another User-Agent and not through ReadinessHandler, keeps the drain
	// to its most.
	synctest.Test(t, func(t *testing.T) {
		r := newDrainRig(2*time.Second, 10*time.Second)
		r.send("/", "Go-http-client/1.1", 0, 30*time.Second, 10*time.Millisecond)
		r.send("/healthz", "ELB-HealthChecker/2.0", 500*time.Millisecond, 40*time.Second, 500*time.Millisecond)
		if got, want := r.triggerAt(30*time.Second), 10*time.Second; got != want {
			t.Errorf("drain lasted %v, want %v", got, want)
		}
		r.wait()
	})
}

func TestAdaptiveDrainCountsRequestAtFirstWrite(t *testing.T) {
	// A stream that opens during the drain is traffic from its first
	// write on, not from its end: counted at its return (at Context's
	// end) it would be a late arrival, and the drain would end at least, 2s.
	synctest.Test(t, func(t *testing.T) {
		r := newDrainRig(2*time.Second, 10*time.Second)
		r.send("/", "Go-http-client/1.1", 0, 25*time.Second, 10*time.Millisecond)
		stream := r.m.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, "event")
			<-r.m.Context().Done()
		}))
		done := make(chan struct{})
		go func() {
			defer close(done)
			time.Sleep(time.Until(r.t0.Add(31500 * time.Millisecond)))
			stream.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/events", nil))
		}()
		if got, want := r.triggerAt(30*time.Second), 2500*time.Millisecond; got != want {
			t.Errorf("drain lasted %v, want %v: the stream's arrival at 1.5s plus Q", got, want)
		}
		<-done
		if n := r.m.Report().LateArrivals; n != 0 {
			t.Errorf("Report().LateArrivals = %d, want 0", n)
		}
		r.wait()
	})
}

func TestAdaptiveDrainCountsLateArrivals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newDrainRig(time.Second, 2*time.Second)
		// Traffic that outlasts most: the load balancer is slower than 2s.
		r.send("/", "Go-http-client/1.1", 5*time.Millisecond, 33*time.Second, 10*time.Millisecond)
		r.m.Add("http", func(context.Context) error { time.Sleep(500 * time.Millisecond); return nil })
		if got, want := r.triggerAt(30*time.Second), 2*time.Second; got != want {
			t.Errorf("drain lasted %v, want %v", got, want)
		}
		// Arrivals at 32.005s to 32.495s, while the hook runs.
		if got, want := r.m.Report().LateArrivals, 50; got != want {
			t.Errorf("Report().LateArrivals = %d, want %d", got, want)
		}
		r.logs.waitFor(t, `msg="shutdown: finished" elapsed=2.5s late_arrivals=50`)
		r.wait()
	})
}

func TestAdaptiveDrainSignalEndsItEarly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		every time.Duration
	}{{"while judging", 10 * time.Millisecond}, {"on low traffic", time.Second}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				got := make(chan chan<- os.Signal, 1)
				r := newDrainRig(time.Second, 10*time.Second, seams{notify: captureNotify(got), exit: func(c int) { t.Errorf("exit(%d) called", c) }},
					WithSignals(syscall.SIGTERM), WithForceExit(false))
				sigs := <-got
				r.send("/", "Go-http-client/1.1", 0, 40*time.Second, tc.every)
				time.Sleep(30 * time.Second)
				start := time.Now()
				sigs <- syscall.SIGTERM
				time.Sleep(1500 * time.Millisecond)
				sigs <- syscall.SIGTERM
				<-r.m.Context().Done()
				if d := time.Since(start); d != 1500*time.Millisecond {
					t.Errorf("drain lasted %v, want 1.5s (to the second signal)", d)
				}
				r.m.Wait()
				r.logs.waitFor(t, "shutdown: signal received during shutdown; ending the drain delay early", `reason=signal elapsed=1.5s`)
				r.wait()
			})
		})
	}
}

func TestAdaptiveDrainSkippedWhenRunReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newDrainRig(time.Second, 10*time.Second)
		start := time.Now()
		if err := r.m.Run(func(context.Context) error { return nil }); err != nil || time.Since(start) != 0 {
			t.Errorf("Run() = %v after %v, want nil at once (nothing left to drain)", err, time.Since(start))
		}
		if d := r.m.Report().Drain; d != 0 {
			t.Errorf("Report().Drain = %v, want 0", d)
		}
	})
}

func TestHandlerCountsNothingWithoutAdaptiveDrain(t *testing.T) {
	m := newTest(WithDrainDelay(time.Second))
	defer func() { m.Trigger(); m.Wait() }()
	if m.ev != nil {
		t.Fatal("a Manager without WithAdaptiveDrain keeps evidence")
	}
	if noted, at := m.ev.arrive(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil)); noted || at != 0 {
		t.Errorf("arrive() = %v, %v without WithAdaptiveDrain, want false, 0", noted, at)
	}
}

func TestKubernetesDefaultDrainStaysFixed(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
	m := newTest()
	if m.ev != nil || m.cfg.drain != 5*time.Second {
		t.Errorf("implicit Kubernetes drain: evidence %v, drain %v; want none, a fixed 5s", m.ev != nil, m.cfg.drain)
	}
	m = newTest(WithAdaptiveDrain(2*time.Second, 10*time.Second))
	if m.ev == nil || m.cfg.drain != 10*time.Second {
		t.Errorf("explicit adaptive drain in Kubernetes: evidence %v, most %v; want evidence, 10s", m.ev != nil, m.cfg.drain)
	}
	m = newTest(WithGracePeriod(30*time.Second, 5*time.Second), WithAdaptiveDrain(time.Second, 3*time.Second))
	if m.ev == nil {
		t.Error("an explicit adaptive drain after a preStop hook is dropped")
	}
}

func TestAdaptiveDrainBadInputPanics(t *testing.T) {
	cases := []struct {
		name, want string
		f          func()
	}{
		{"negative least", "shutdown: WithAdaptiveDrain: least must not be negative, got -1s",
			func() { WithAdaptiveDrain(-time.Second, time.Second) }},
		{"most shorter than least", "shutdown: WithAdaptiveDrain: most (1s) is shorter than least (2s)",
			func() { WithAdaptiveDrain(2*time.Second, time.Second) }},
		{"most not shorter than the budget", "shutdown: WithAdaptiveDrain: most (25s) is not shorter than WithTimeout(25s)",
			func() { New(WithSignals(), WithAdaptiveDrain(time.Second, 25*time.Second)) }},
		{"most not shorter than the grace period's budget", "shutdown: WithAdaptiveDrain: most (23s) does not fit shutdown.WithGracePeriod(30s, 5s): its budget is 23s",
			func() {
				New(WithSignals(), WithGracePeriod(30*time.Second, 5*time.Second), WithAdaptiveDrain(time.Second, 23*time.Second))
			}},
		{"with WithDrainDelay", "shutdown: WithAdaptiveDrain: WithDrainDelay is given too; use one",
			func() { New(WithSignals(), WithDrainDelay(time.Second), WithAdaptiveDrain(time.Second, 2*time.Second)) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantPanic(t, tc.want, tc.f) })
	}
	if s := WithAdaptiveDrain(time.Second, 2*time.Second).String(); !strings.Contains(s, "WithAdaptiveDrain(1s, 2s)") {
		t.Errorf("String() = %q", s)
	}
}

// BenchmarkHandlerAdaptiveDrain is BenchmarkHandler's Handler with
// WithAdaptiveDrain on: what counting the evidence adds to a request.
func BenchmarkHandlerAdaptiveDrain(b *testing.B) {
	m := newTest(WithAdaptiveDrain(time.Second, 2*time.Second))
	defer func() { m.Release() }()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(nil) })
	r := httptest.NewRequest("GET", "/", nil)
	w := &nopWriter{h: http.Header{}}
	h := m.Handler(ok)
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}
