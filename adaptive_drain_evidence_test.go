package shutdown

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"
)

// More of the adaptive drain's evidence rules, in synctest bubbles: the
// exact arrival, and requests that end otherwise than by writing or
// returning.

func TestAdaptiveDrainEndsAtExactArrivalPlusQ(t *testing.T) {
	// Requests between whole milliseconds: the drain ends Q after the last
	// one's arrival, not Q after its millisecond (which would end it while
	// that request is still inside (t − Q, t]).
	synctest.Test(t, func(t *testing.T) {
		r := newDrainRig(time.Second, 10*time.Second)
		r.send("/", "Go-http-client/1.1", 500*time.Microsecond, 31500*time.Millisecond, 10*time.Millisecond)
		// The last request arrives at 31.4905s: the drain ends at 32.4905s.
		if got, want := r.triggerAt(30*time.Second), 2490500*time.Microsecond; got != want {
			t.Errorf("drain lasted %v, want %v: the last arrival plus Q of 1s", got, want)
		}
		r.wait()
	})
}

// sendEach serves a request through h at t0+from, t0+from+every, ...
// before t0+until, each on a goroutine of its own (a request may outlive
// the next one's arrival), with w made afresh for each; a panic in h is
// recovered, as net/http's server does.
func (r *drainRig) sendEach(h http.Handler, w func() http.ResponseWriter, from, until, every time.Duration) {
	done := make(chan struct{})
	r.sent = append(r.sent, done)
	go func() {
		defer close(done)
		served := make(chan struct{}, 1000)
		n := 0
		for at := from; at < until; at += every {
			time.Sleep(time.Until(r.t0.Add(at)))
			n++
			go func() {
				defer func() { recover(); served <- struct{}{} }()
				h.ServeHTTP(w(), httptest.NewRequest("GET", "/", nil))
			}()
		}
		for range n {
			<-served
		}
	}()
}

func TestAdaptiveDrainCountsHandlerThatPanics(t *testing.T) {
	// A request whose handler panics before it writes was sent here: the
	// load balancer still routes to this pod. Traffic at 100/s until the
	// signal, then only requests that panic, 10 a second, to the end: the
	// drain must last most, not end at least.
	synctest.Test(t, func(t *testing.T) {
		r := newDrainRig(time.Second, 10*time.Second)
		r.send("/", "Go-http-client/1.1", 0, 30*time.Second, 10*time.Millisecond)
		panics := r.m.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))
		r.sendEach(panics, func() http.ResponseWriter { return httptest.NewRecorder() }, 30*time.Second, 45*time.Second, 100*time.Millisecond)
		if got, want := r.triggerAt(30*time.Second), 10*time.Second; got != want {
			t.Errorf("drain lasted %v, want %v: requests that panicked were not counted", got, want)
		}
		r.wait()
	})
}

// hijackRecorder is a ResponseRecorder that a handler can hijack: it
// gets one end of a pipe, whose other end is closed.
type hijackRecorder struct{ *httptest.ResponseRecorder }

func (h hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, peer := net.Pipe()
	peer.Close()
	return c, bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c)), nil
}

func TestAdaptiveDrainCountsHijackedRequestAtHijack(t *testing.T) {
	// A WebSocket's upgrade hijacks the connection and writes its 101 on
	// it, not through the ResponseWriter; the connection lives until
	// Context ends. Counted at its return, WebSockets opened during the
	// drain would be no evidence, and the drain would end at least while
	// they still arrive.
	synctest.Test(t, func(t *testing.T) {
		r := newDrainRig(time.Second, 10*time.Second)
		r.send("/", "Go-http-client/1.1", 0, 30*time.Second, 10*time.Millisecond)
		ws := r.m.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			c, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("Hijack: %v", err)
				return
			}
			defer c.Close()
			<-r.m.Context().Done()
		}))
		r.sendEach(ws, func() http.ResponseWriter { return hijackRecorder{httptest.NewRecorder()} }, 30*time.Second, 45*time.Second, 100*time.Millisecond)
		if got, want := r.triggerAt(30*time.Second), 10*time.Second; got != want {
			t.Errorf("drain lasted %v, want %v: hijacked requests were not counted until they returned", got, want)
		}
		r.wait()
	})
}

func TestAdaptiveDrainEndedByComponentsSaysSo(t *testing.T) {
	// Two components; the first to return starts shutdown while the
	// other still serves, so the drain runs; when the other returns,
	// nothing is left to drain and it ends. No signal came: the record
	// must not say one did.
	synctest.Test(t, func(t *testing.T) {
		r := newDrainRig(time.Second, 10*time.Second)
		r.send("/", "Go-http-client/1.1", 0, 40*time.Second, 10*time.Millisecond)
		r.m.Go("first", func(context.Context) error {
			time.Sleep(time.Until(r.t0.Add(30 * time.Second)))
			return nil
		})
		r.m.Go("second", func(context.Context) error {
			time.Sleep(time.Until(r.t0.Add(32 * time.Second)))
			return nil
		})
		r.m.Wait()
		r.logs.waitFor(t, `msg="shutdown: drain ended" reason="nothing to serve" elapsed=2s`)
		r.wait()
	})
}

func TestAdaptiveDrainWaitsForSlowRequestsThatArrivedInTheWindow(t *testing.T) {
	// Every request takes 2s to its first write, longer than Q: at any
	// moment, the requests that arrived in the last Q are still in their
	// handlers. They arrive, 20 a second, through the whole drain: the
	// drain must last most, not end at least because the requests counted
	// so far arrived more than Q ago.
	synctest.Test(t, func(t *testing.T) {
		r := newDrainRig(time.Second, 10*time.Second)
		slow := r.m.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			time.Sleep(2 * time.Second)
			w.Write([]byte("ok\n"))
		}))
		r.sendEach(slow, func() http.ResponseWriter { return httptest.NewRecorder() }, 0, 45*time.Second, 50*time.Millisecond)
		if got, want := r.triggerAt(30*time.Second), 10*time.Second; got != want {
			t.Errorf("drain lasted %v, want %v: requests in their handlers were not seen", got, want)
		}
		r.wait()
	})
}

// nestedRig is a drainRig whose "/api/" routes go through a second
// Handler of the same Manager, as when a sub-router is wrapped too.
func nestedRig(least, most time.Duration) *drainRig {
	r := newDrainRig(least, most)
	mux := http.NewServeMux()
	mux.Handle("/api/", r.m.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })))
	mux.Handle("/api/readyz", r.m.Handler(r.m.ReadinessHandler()))
	r.h = r.m.Handler(mux)
	return r
}

func TestAdaptiveDrainCountsRequestThroughNestedHandlersOnce(t *testing.T) {
	// 4 requests a second is too little to judge: the drain lasts most.
	// Counted by both Handlers they would look like 8 a second, enough
	// for a quiet window of 1.25s, and the drain would end at least.
	synctest.Test(t, func(t *testing.T) {
		r := nestedRig(time.Second, 10*time.Second)
		r.send("/api/x", "Go-http-client/1.1", 0, 30*time.Second, 250*time.Millisecond)
		if got, want := r.triggerAt(30*time.Second), 10*time.Second; got != want {
			t.Errorf("drain lasted %v, want %v", got, want)
		}
		r.logs.waitFor(t, `msg="shutdown: drain ended" reason="low traffic" elapsed=10s rate=4 requests=120 span=30s`)
		r.wait()
	})
}

func TestAdaptiveDrainIgnoresProbesThroughNestedHandlers(t *testing.T) {
	// ReadinessHandler under two Handlers: a probe for both.
	synctest.Test(t, func(t *testing.T) {
		r := nestedRig(2*time.Second, 10*time.Second)
		r.send("/", "Go-http-client/1.1", 0, 30*time.Second, 10*time.Millisecond)
		r.send("/api/readyz", "ELB-HealthChecker/2.0", 501*time.Millisecond, 40*time.Second, 500*time.Millisecond)
		if got, want := r.triggerAt(30*time.Second), 2*time.Second; got != want {
			t.Errorf("drain lasted %v, want %v: probes counted as traffic", got, want)
		}
		r.wait()
	})
}

func TestAdaptiveDrainRateCountsNoRequestBeforeItsWindow(t *testing.T) {
	// 150 requests at 5.01s, none since; the signal at 35.05s. The window
	// [5.05s, 35.05s) holds none of them: too little traffic, most. Their
	// 100ms bucket, [5.0s, 5.1s), straddles the window's start: counted,
	// they would make λ 5 a second, and the drain would end at least.
	synctest.Test(t, func(t *testing.T) {
		r := newDrainRig(time.Second, 10*time.Second)
		time.Sleep(5010 * time.Millisecond)
		for range 150 {
			r.h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
		}
		if got, want := r.triggerAt(35050*time.Millisecond), 10*time.Second; got != want {
			t.Errorf("drain lasted %v, want %v", got, want)
		}
		r.logs.waitFor(t, `msg="shutdown: drain ended" reason="low traffic" elapsed=10s rate=0 requests=0`)
	})
}
