package shutdown

// This file is the drain step (DESIGN step 3): the fixed drain delay and
// the adaptive drain, which ends when the requests through Handler say
// that the load balancers have stopped sending them here.

import (
	"fmt"
	"iter"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

type adaptiveDrainOption struct{ least, most time.Duration }

// WithAdaptiveDrain replaces the fixed [WithDrainDelay] by a drain that
// ends when traffic has moved: after least, at the first moment at which no
// request has arrived for a quiet window Q, and after most at the latest.
// It counts inside the budget.
//
// The evidence is the requests served through [Manager.Handler], each
// counted once its handler first writes, hijacks the connection, returns or
// panics; requests answered by [Manager.ReadinessHandler], and those whose
// User-Agent starts with "kube-probe/", are probes and do not count.
// ReadinessHandler finds Handler's writer through the Unwrap methods of the
// writers between them: behind a middleware whose writer has none, its
// requests count as traffic. Since Handler adds "Connection: close" to
// every response of the drain, a client that the load balancer still routes
// here comes back on a new connection, so requests keep arriving exactly as
// long as it does.
//
// The rate λ is the number of requests counted in the window W before
// shutdown started, over W: the last 30s, or the Manager's whole life if it
// is younger, in 100ms buckets (W starts at the first bucket inside it).
// With fewer than 20 requests in W, or λ below 5 a second, there is too
// little evidence to judge, and the drain lasts most ("low traffic").
// Otherwise Q = max(1s, 10/λ), about ten expected gaps between requests,
// and the drain ends at the first moment t ≥ start + least with no request
// counted in (t − Q, t] ("quiet"), or at start + most ("most"); a request
// still in its handler, not yet counted, keeps the window open as if it
// were. A later signal with [WithForceExit](false) ends it early
// ("signal"); it is skipped, like a fixed drain, when Run's function or a
// component started shutdown with nothing left to serve, and ends ("nothing
// to serve") when the components still serving have all returned.
//
// Only HTTP through Handler is evidence: a gRPC-only service drains most. A
// load balancer's health checker on a path under Handler counts as traffic
// unless ReadinessHandler serves it or it is mounted outside Handler. least
// must cover the propagation tail that the quiet window cannot see (one
// node of many that still routes a share of the traffic here): kube-proxy
// syncs its rules at most once a second, so start from least 2s. least ==
// most is a fixed drain.
//
// The record "shutdown: drain ended" gives the "reason", the "elapsed"
// time, the "rate" λ (per second), the "window" Q (but for low traffic),
// and the "requests" counted in the "span" W. Requests that arrived after
// the drain ended, counted before the hooks ended, are late arrivals, a
// sign that least (after a quiet end) or most (after the others) is too
// short for this load balancer: [Report].LateArrivals and the
// "late_arrivals" attribute of the "shutdown: finished" record count them.
// Connections refused after the listeners closed never reach the process
// and are not seen.
//
// WithAdaptiveDrain panics if least is negative or most is shorter than
// least; [New] panics if most is not shorter than the budget, or if
// WithDrainDelay is given too. Without WithAdaptiveDrain, Handler counts
// nothing.
func WithAdaptiveDrain(least, most time.Duration) Option {
	if least < 0 {
		panic(fmt.Sprintf("shutdown: WithAdaptiveDrain: least must not be negative, got %v", least))
	}
	if most < least {
		panic(fmt.Sprintf("shutdown: WithAdaptiveDrain: most (%v) is shorter than least (%v)", most, least))
	}
	return adaptiveDrainOption{least, most}
}

func (o adaptiveDrainOption) apply(c *config) { c.adaptive = &o }
func (o adaptiveDrainOption) String() string {
	return fmt.Sprintf("shutdown.WithAdaptiveDrain(%v, %v)", o.least, o.most)
}

// checkAdaptive panics on an adaptive drain that cannot work with the
// rest of the configuration; otherwise it makes most the drain delay, the
// longest the drain may run, so the rest of the sequence (a later signal's
// cut, the Kubernetes default) treats it as an explicit drain.
func (c *config) checkAdaptive() {
	a := c.adaptive
	if a == nil {
		return
	}
	if c.drainSet {
		panic("shutdown: WithAdaptiveDrain: WithDrainDelay is given too; use one")
	}
	if a.most >= c.timeout {
		if g := c.grace; g != nil {
			panic(fmt.Sprintf("shutdown: WithAdaptiveDrain: most (%v) does not fit %v: its budget is %v", a.most, g, c.timeout))
		}
		panic(fmt.Sprintf("shutdown: WithAdaptiveDrain: most (%v) is not shorter than WithTimeout(%v)", a.most, c.timeout))
	}
	c.drain, c.drainSet = a.most, true
}

// The evidence: requests through Handler, by arrival, in 100ms buckets
// kept for a little over 30s, plus the latest arrival exactly (the quiet
// window is measured from it) and the late arrivals. A request is noted
// when it enters Handler and counted at its handler's first write, so
// the requests still between the two are kept too: one that arrived in
// the quiet window will count.
const (
	bucketWidth = 100 * time.Millisecond
	rateSpan    = 30 * time.Second
	buckets     = int64(rateSpan/bucketWidth) + 20 // 2s of slack for requests counted late
	countBits   = 24                               // a bucket is index<<countBits | count
	countMask   = 1<<countBits - 1
	minRequests = 20  // fewer in the span: too little evidence
	minRate     = 5.0 // requests a second; below: too little evidence
	quietGaps   = 10  // Q is this many expected gaps between requests
	minQuiet    = time.Second
)

type evidence struct {
	born     time.Time // the Manager's New: arrivals are counted from here
	bucket   [buckets]atomic.Uint64
	last     atomic.Int64 // the latest arrival counted, since born; -1 before any
	noted    atomic.Int64 // the latest arrival noted (counted or not), since born; -1 before any
	pending  atomic.Int64 // requests noted, neither counted nor found to be probes yet
	lateFrom atomic.Int64 // the drain's end, since born; MaxInt64 before it
	closed   atomic.Bool  // the hooks have ended: late arrivals are no longer counted
	late     atomic.Int64
}

// newEvidence returns the evidence of an adaptive drain, or nil (nothing
// counted) for a Manager without one.
func newEvidence(c *config) *evidence {
	if c.adaptive == nil {
		return nil
	}
	e := &evidence{born: time.Now()}
	e.last.Store(-1)
	e.noted.Store(-1)
	e.lateFrom.Store(math.MaxInt64)
	return e
}

// arrive notes a request's arrival at Handler: whether it is to be counted
// and when it came, since the Manager's New. Without an adaptive drain it
// costs a nil check.
func (e *evidence) arrive(w http.ResponseWriter, r *http.Request) (noted bool, at time.Duration) {
	if e == nil {
		return false, 0
	}
	return e.noteArrival(w, r)
}

func (e *evidence) noteArrival(w http.ResponseWriter, r *http.Request) (bool, time.Duration) {
	if strings.HasPrefix(r.Header.Get("User-Agent"), "kube-probe/") {
		return false, 0
	}
	for d := range drainWriters(w) {
		if d.m.ev == e {
			return false, 0 // an outer Handler of this Manager counts it
		}
	}
	at := time.Since(e.born)
	raise(&e.noted, int64(at))
	e.pending.Add(1) // after noted: who sees it pending sees its arrival
	return true, at
}

// countArrival counts w's request once, unless it is a probe; later calls
// do nothing.
func (w *drainWriter) countArrival() {
	if w.noted {
		w.noted = false
		w.m.ev.add(w.at)
	}
}

// isProbe tells w that its request is a probe.
func (w *drainWriter) isProbe() {
	if w.noted {
		w.noted = false
		w.m.ev.pending.Add(-1)
	}
}

func (w *drainWriter) inner() *drainWriter { return w }

// answeredByReadiness tells each Handler that w came through that its
// request is a probe: ReadinessHandler calls it before it writes.
func answeredByReadiness(w http.ResponseWriter) {
	for d := range drainWriters(w) {
		d.isProbe()
	}
}

// drainWriters yields Handler's writers that w is or wraps, outermost
// first, found through Unwrap as [http.ResponseController] finds a
// writer.
func drainWriters(w http.ResponseWriter) iter.Seq[*drainWriter] {
	return func(yield func(*drainWriter) bool) {
		for range 100 { // as canHijack: a writer that unwraps to itself must not hang
			if d, ok := w.(interface{ inner() *drainWriter }); ok && !yield(d.inner()) {
				return
			}
			u, ok := w.(interface{ Unwrap() http.ResponseWriter })
			if !ok {
				return
			}
			w = u.Unwrap()
		}
	}
}

// add counts a pending request that arrived at (since born): in its
// bucket, as the latest arrival if it is, and as a late arrival if the
// drain had ended.
func (e *evidence) add(arrival time.Duration) {
	at := int64(arrival)
	idx := uint64(at / int64(bucketWidth))
	b := &e.bucket[idx%uint64(buckets)]
	for {
		v := b.Load()
		nv := idx<<countBits | 1
		switch cur := v >> countBits; {
		case cur > idx:
			nv = v // the bucket has moved on: the request is older than the span
		case cur == idx && v&countMask < countMask:
			nv = v + 1
		case cur == idx:
			nv = v // full; 167 million requests a second
		}
		if nv == v || b.CompareAndSwap(v, nv) {
			break
		}
	}
	raise(&e.last, at)
	if at >= e.lateFrom.Load() && !e.closed.Load() {
		e.late.Add(1)
	}
	e.pending.Add(-1) // last: who sees it no longer pending sees it counted
}

// rate returns the requests counted in the span before start (the last
// 30s, or the Manager's life if shorter) and the span. The span begins at
// a bucket's start (the first inside it): a bucket that straddles it
// holds requests from before it, and the count and the span must cover
// the same time.
func (e *evidence) rate(start time.Time) (n int64, span time.Duration) {
	end := start.Sub(e.born)
	if end <= 0 {
		return 0, 0
	}
	lo := (int64(end-min(rateSpan, end)) + int64(bucketWidth) - 1) / int64(bucketWidth)
	hi := int64(end-1) / int64(bucketWidth)
	span = end - time.Duration(lo)*bucketWidth
	for i := lo; i <= hi; i++ {
		if v := e.bucket[i%buckets].Load(); int64(v>>countBits) == i {
			n += int64(v & countMask)
		}
	}
	return n, span
}

// drain runs the drain step and returns how long it lasted (0 when
// skipped).
func (m *Manager) drain(start time.Time, skip bool) time.Duration {
	d := m.cfg.drain
	if d <= 0 || skip {
		return 0
	}
	if m.ev == nil {
		m.log(slog.LevelInfo, "shutdown: drain delay", slog.Duration("delay", d))
		m.waitDrain(start.Add(d))
		return time.Since(start)
	}
	a := m.cfg.adaptive
	m.log(slog.LevelInfo, "shutdown: drain delay", slog.Duration("least", a.least), slog.Duration("most", a.most))
	n, span := m.ev.rate(start)
	rate := 0.0
	if span > 0 {
		rate = float64(n) / span.Seconds()
	}
	attrs := []slog.Attr{slog.Float64("rate", math.Round(rate*100)/100), slog.Int64("requests", n), slog.Duration("span", span)}
	reason := "low traffic"
	if n < minRequests || rate < minRate {
		if !m.waitDrain(start.Add(a.most)) {
			reason = "signal"
		}
	} else {
		q := max(minQuiet, time.Duration(quietGaps/rate*float64(time.Second)))
		reason = m.waitQuiet(start, q)
		attrs = append(attrs, slog.Duration("window", q))
	}
	end := time.Now()
	if reason == "signal" && m.drainCutByComponents() {
		reason = "nothing to serve"
	}
	m.ev.lateFrom.Store(int64(end.Sub(m.ev.born)))
	attrs = append([]slog.Attr{slog.String("reason", reason), slog.Duration("elapsed", end.Sub(start))}, attrs...)
	m.log(slog.LevelInfo, "shutdown: drain ended", attrs...)
	return end.Sub(start)
}

// drainCutByComponents reports whether the drain was cut because the
// components still serving when it began have all returned, rather than
// by a later signal.
func (m *Manager) drainCutByComponents() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cutByComps
}

// waitQuiet waits for the first t ≥ start + least with no request counted
// in (t − q, t] (nor one that arrived then and may still count), or for
// start + most, or for a later signal, and says which.
func (m *Manager) waitQuiet(start time.Time, q time.Duration) string {
	a, e := m.cfg.adaptive, m.ev
	deadline := start.Add(a.most)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		at := later(start.Add(a.least), e.quietFrom(q))
		if !at.After(time.Now()) {
			return "quiet"
		}
		if !at.Before(deadline) {
			if !m.waitDrain(deadline) {
				return "signal"
			}
			return "most"
		}
		t.Reset(time.Until(at))
		select {
		case <-t.C:
		case <-m.drainCut:
			return "signal"
		}
	}
}

// quietFrom returns the first moment at which no request known now to
// count, or that may count, arrived in the quiet window q before it: q
// after the latest counted arrival, or, while requests are pending, q
// after the latest noted one (which may be pending). A pending request
// that turns out to be a probe can only make this later than it needs
// to be, never earlier.
func (e *evidence) quietFrom(q time.Duration) time.Time {
	// pending first: noted is raised before the request is pending, and
	// last before it is not.
	latest := &e.last
	if e.pending.Load() > 0 {
		latest = &e.noted
	}
	at := latest.Load()
	if at < 0 {
		return time.Time{}
	}
	return e.born.Add(time.Duration(at) + q)
}

// waitDrain waits until end or a later signal's cut, and reports whether
// it reached end.
func (m *Manager) waitDrain(end time.Time) bool {
	t := time.NewTimer(time.Until(end))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-m.drainCut:
		return false
	}
}

// hooksEnded closes the count of late arrivals: every listener is closed
// by the time the hooks have ended. (The library cannot tell which hook
// closes which listener: HTTPServer, GRPCServer, a Closer of a listener or
// the user's own.) After a listener closes, only connections already open
// can carry a request, and those are late traffic too.
func (m *Manager) hooksEnded() {
	if m.ev != nil {
		m.ev.closed.Store(true)
	}
}

// lateArrivals returns the late arrivals, and the attribute of the
// "shutdown: finished" record that gives them, for an adaptive drain.
func (m *Manager) lateArrivals() (int, []slog.Attr) {
	if m.ev == nil {
		return 0, nil
	}
	n := m.ev.late.Load()
	return int(n), []slog.Attr{slog.Int64("late_arrivals", n)}
}

// raise stores v in a if it is greater than a's value.
func raise(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
