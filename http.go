package shutdown

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"
	"weak"
)

// HTTPServer adapts s to a Hook that drains it. Call it before s serves,
// and after setting s.ConnState if you set it: it chains a callback of its
// own onto s.ConnState (calling the one s had), its one change to s, and
// through it knows the state of every connection, whichever routes
// [Manager.Handler] wraps, or none.
//
// The hook calls [http.Server.Shutdown], which closes the listeners and the
// idle connections, and closes itself the connections that never sent a
// request: Shutdown would wait up to five seconds for those, which Go's own
// client and many proxies leave behind, and drops a request read on one of
// them anyway. It then waits for every connection to close. An HTTP/1.x
// connection closes once the server's last write of its response has
// returned, so a slow reader gets every byte (the kernel delivers what it
// holds after the close); one whose large request body the handler left
// unread closes half a second later, as net/http waits then so that the
// client's data still arriving does not reset the response.
// An HTTP/2 connection (TLS, or h2c through [http.Server.Protocols]) closes
// after GOAWAY, about one second after its last stream, and is not cut;
// Go's server also closes it then if a slow client has not read all of the
// last response. Connections hijacked through Handler are waited for too.
// Once none is open, the hook calls [http.Server.Close] rather than wait for
// Shutdown's next poll, up to half a second later: it returns within
// milliseconds of the last write.
//
// HTTP/2 without TLS through golang.org/x/net/http2/h2c
// (h2c.NewHandler(mux, h2s), as connect-go and grpc-gateway document)
// hijacks the connection and serves it outside net/http. Put Handler
// outside h2c's handler, so that the hijacked connection is tracked, and
// inside it too, and give h2s to http2.ConfigureServer(s, h2s):
//
//	s.Handler = m.Handler(h2c.NewHandler(m.Handler(mux), h2s))
//
// x/net then sends GOAWAY on each connection at its first response during
// the drain (Handler's "Connection: close") and on every one at Shutdown,
// and Go's client retries elsewhere the requests a GOAWAY turns away. The
// hook waits until x/net reports the connection idle and its last write
// has returned (on a connection already idle at the hook's start, the
// GOAWAY, or 100 milliseconds with no write), then shuts the connection's
// writing side: the client
// reads every byte of every response, then the end, and closes the
// connection, and x/net its own side; the hook closes it half a second
// after the end if the client has not. A connection that cannot shut its
// writing side alone (a listener's wrapper that embeds net.Conn, as
// netutil.LimitListener's) is left open after the end, its writes
// dropped, and closed half a second later. Without ConfigureServer, a
// connection that carries no request during the drain gets no GOAWAY.
// With Handler outside only, none does (the requests x/net serves never
// pass through Handler, and Shutdown reaches x/net only through
// ConfigureServer): responses still arrive whole, but a request the client
// sends as the hook ends its connection fails without a response (Go's
// client does not retry it). x/net's reports of such a connection's
// states, through s.ConnState, count as no connection of the server's
// own. Where Go 1.24's [http.Server.Protocols] (SetUnencryptedHTTP2)
// serves what you need, prefer it: net/http then serves h2c itself and
// sends GOAWAY, as over TLS.
//
// If the hook's context ends first, it calls Close, which cuts the
// requests still running (their contexts are cancelled), closes the
// hijacked connections still open, and reports [ErrTimeout] with what it
// cut: "http server: closed 1 active connection and 3 hijacked connections
// still open at the deadline". It closes TLS connections' transports
// first, so that no close_notify alert waits on a client that reads
// nothing, and a Hijack through Handler that ends after the cut gets its
// connection closed.
//
// Calling it on a server that already serves is misuse, a data race: it
// writes s.ConnState while the server's goroutines read it, and
// [http.Server] offers no way to tell whether it serves nor to change
// ConnState safely then (the race detector reports it). Where the hook has
// not seen every connection open (after such a call, or with s.ConnState
// replaced after HTTPServer), it falls back to Shutdown, and Close at the
// deadline, as Shutdown documents: it returns up to half a second after
// the last response, or about five seconds after it with silent
// connections open.
//
// [http.Server.Serve] and ListenAndServe return as soon as Shutdown starts,
// so Run's function returning [http.ErrServerClosed] does not mean that the
// handlers have finished: this hook returning does. Register what the
// handlers use (a database) before the server, so that its hook runs after
// this one. A panic inside Shutdown, which the hook runs on a goroutine of
// its own (a listener's or connection's Close), is the hook's [ErrPanic]
// with the stack where it happened, and the hook returns at once: the
// server may hold its lock, so nothing more is called on it. It panics if s
// is nil.
func HTTPServer(s *http.Server) Hook {
	if s == nil {
		panic("shutdown: HTTPServer: s is nil")
	}
	t := &connTracker{
		conns:    make(map[net.Conn]http.ConnState),
		hijacked: make(map[*hijackedConn]struct{}),
		byAddr:   make(map[string][]*hijackedConn),
	}
	prev := s.ConnState
	s.ConnState = func(c net.Conn, st http.ConnState) {
		if prev != nil {
			prev(c, st)
		}
		t.setState(c, st)
	}
	k := weak.Make(s)
	if _, loaded := trackers.Swap(k, t); !loaded {
		runtime.AddCleanup(s, func(k weak.Pointer[http.Server]) { trackers.Delete(k) }, k)
	}
	return func(ctx context.Context) error { return t.drain(ctx, s) }
}

// drain is HTTPServer's hook.
func (t *connTracker) drain(ctx context.Context, s *http.Server) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var shutErr error
	t.h2cIdleFromNow(time.Now()) // before Shutdown, which has x/net send GOAWAY
	shut := goRelaying(func() { shutErr = s.Shutdown(sctx) })
	shutDone := false
	for {
		l := t.look(shutDone)
		for _, c := range l.silent {
			closeNow(c)
		}
		for _, hc := range l.h2cShut {
			shutWrite(hc.Conn) // the client, then x/net, closes it (see h2cNext)
		}
		for _, hc := range l.h2cClose {
			closeNow(hc.Conn) // x/net's server then closes its connection, and hc with it
		}
		if l.done {
			break
		}
		var again <-chan time.Time // Go 1.23 on, an unused timer costs nothing once dropped
		if !l.again.IsZero() {
			again = time.After(time.Until(l.again))
		}
		select {
		case <-l.wake:
		case <-again:
		case p := <-shut:
			relay(p)
			shutDone, shut = true, nil
			if ctx.Err() != nil {
				return t.cut(ctx, s, cancel, shut)
			}
		case <-ctx.Done():
			return t.cut(ctx, s, cancel, shut)
		}
	}
	// Close now rather than leave it to Shutdown, which polls up to every
	// half second: nothing is left to cut, and the listeners are closed.
	// Shutdown first returns (its context cancelled), so that one that
	// panicked, perhaps holding the server's lock, is reported rather than
	// deadlock Close.
	cancel()
	if !shutDone {
		relay(<-shut)
		if errors.Is(shutErr, context.Canceled) {
			shutErr = nil
		}
	}
	cerr := s.Close()
	switch {
	case shutErr != nil:
		return fmt.Errorf("http server: Shutdown: %w", shutErr) // a listener's Close failed
	case cerr != nil:
		return fmt.Errorf("http server: Close: %w", cerr)
	}
	return nil
}

// look is what the hook's loop sees at one look at the connections: what
// to close now, whether the drain is done, and if not, when to look again.
type look struct {
	silent   []net.Conn      // never sent a request: closed now (see HTTPServer)
	h2cShut  []*hijackedConn // h2c connections x/net has finished with: their writing side shut now
	h2cClose []*hijackedConn // h2c connections shut h2cLinger ago: closed now
	done     bool
	wake     <-chan struct{} // closed at the next change
	again    time.Time       // look again then, if not zero
}

// look takes one look at the connections, for drain, and arranges to be
// woken at the next change.
func (t *connTracker) look(shutDone bool) look {
	t.mu.Lock()
	defer t.mu.Unlock()
	var l look
	for c, st := range t.conns {
		if st == http.StateNew {
			l.silent = append(l.silent, c)
			t.conns[c] = stateClosing
		}
	}
	now := time.Now()
	for hc := range t.hijacked {
		if hc.closing {
			continue
		}
		step, again := hc.h2cNext(now)
		switch step {
		case h2cShut:
			if hc.lingers() {
				hc.shutAt, again = now, now.Add(h2cLinger)
				l.h2cShut = append(l.h2cShut, hc)
				break
			}
			fallthrough
		case h2cClose:
			hc.closing = true
			l.h2cClose = append(l.h2cClose, hc)
		}
		if !again.IsZero() && (l.again.IsZero() || again.Before(l.again)) {
			l.again = again
		}
	}
	// The server's own connections. With the whole list, wait for each to
	// close, not just to be idle: an idle HTTP/2 connection is only between
	// streams, and Go closes it a second after GOAWAY; an HTTP/1.x
	// connection that ends a response during Shutdown closes at once, as
	// does one that ends it with Connection: close (StateClosed comes
	// straight after the last write). Without the whole list, Shutdown
	// returning is the only sign that none is active.
	serverOpen := !shutDone
	if t.coverage == complete {
		serverOpen = len(t.conns) > 0
	}
	l.done = !serverOpen && t.hijacking == 0 && len(t.hijacked) == 0
	if !l.done {
		wake := make(chan struct{})
		t.wake, l.wake = wake, wake
	}
	return l
}

// relayedPanic is a panic recovered on a goroutine that an adapter starts
// for user code (GracefulStop, Shutdown with a listener's or connection's
// Close), raised again on the hook's own goroutine, whose recover reports
// it as [ErrPanic] with the stack where it happened. Unrecovered there, it
// would end the process: a hook's recover covers only its own goroutine.
// Called outside a Manager, the hook crashes the process with it, and the
// runtime prints its Error: the value and that stack.
type relayedPanic struct {
	value any
	stack []byte
}

func (p relayedPanic) Error() string {
	return fmt.Sprintf("%v\n\n[raised again on the hook's goroutine; it happened here:]\n%s", p.value, p.stack)
}

// Unwrap returns the panic's value if it is an error, for a caller that
// recovers it with errors.Is or errors.As.
func (p relayedPanic) Unwrap() error {
	err, _ := p.value.(error)
	return err
}

// goRelaying runs f on a goroutine of its own; the channel it returns
// delivers nil when f has returned, or the panic (or runtime.Goexit) that
// ended it.
func goRelaying(f func()) <-chan *relayedPanic {
	done := make(chan *relayedPanic, 1)
	go func() {
		returned := false
		defer func() {
			v := recover()
			switch {
			case returned:
				done <- nil
			case v == nil:
				done <- &relayedPanic{errGoexit, debug.Stack()}
			default:
				done <- &relayedPanic{v, debug.Stack()}
			}
		}()
		f()
		returned = true
	}()
	return done
}

// relay raises on the calling goroutine (the hook's) the panic p, if any.
func relay(p *relayedPanic) {
	if p != nil {
		panic(*p)
	}
}

// closeNow closes c, and, if it is a *tls.Conn, its transport first: the
// close_notify alert that tls.Conn.Close sends could block for five seconds
// on a client that does not read.
func closeNow(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		tc.NetConn().Close()
	}
	c.Close()
}

// cut closes s and the hijacked connections at the hook's deadline, and
// says what it cut. Its errors, like the other adapters', do not start with
// "shutdown:": the [*HookError] that carries them does.
func (t *connTracker) cut(ctx context.Context, s *http.Server, cancel context.CancelFunc, shut <-chan *relayedPanic) error {
	t.mu.Lock()
	trusted, active := t.coverage == complete, 0
	var secure []*tls.Conn
	for c, st := range t.conns {
		if st == http.StateActive {
			active++
		}
		if tc, ok := c.(*tls.Conn); ok {
			secure = append(secure, tc)
		}
	}
	hijacked := slices.Collect(maps.Keys(t.hijacked))
	t.pastDeadline = true
	t.mu.Unlock()
	// Close sends each TLS connection's close_notify alert under the
	// server's lock, which blocks for up to five seconds per connection
	// whose client reads nothing: close their transports first, so that
	// the alerts fail at once, as closeNow does.
	for _, tc := range secure {
		tc.NetConn().Close()
	}
	cancel()
	if shut != nil {
		relay(<-shut) // at once: its context is cancelled
	}
	cerr := s.Close()
	for _, c := range hijacked {
		closeNow(c.Conn)
		c.Close()
	}
	err := ctx.Err()
	if cerr != nil {
		err = errors.Join(err, cerr)
	}
	var cut []string
	if active > 0 && trusted {
		cut = append(cut, connCount(active, "active"))
	}
	if len(hijacked) > 0 {
		cut = append(cut, connCount(len(hijacked), "hijacked"))
	}
	what := strings.Join(cut, " and ")
	switch {
	case !trusted && what != "":
		// It did not see every connection open: it cannot count the rest.
		return fmt.Errorf("http server: Shutdown had not finished at the deadline; closed the server and %s: %w", what, err)
	case !trusted:
		return fmt.Errorf("http server: Shutdown had not finished at the deadline; closed the server: %w", err)
	case what == "":
		return fmt.Errorf("http server: closed at the deadline: %w", err)
	}
	return fmt.Errorf("http server: closed %s still open at the deadline: %w", what, err)
}

// connCount says "1 active connection" or "3 active connections".
func connCount(n int, kind string) string {
	if n == 1 {
		return "1 " + kind + " connection"
	}
	return fmt.Sprintf("%d %s connections", n, kind)
}

// ReadinessHandler answers 200 until shutdown starts and 503 from then on,
// for a Kubernetes readinessProbe or a load balancer's health check. In
// Kubernetes, deleting the pod, not this probe, takes it out of the
// Service's endpoints; the 503 tells load balancers that probe the pod
// themselves to stop sending to it.
func (m *Manager) ReadinessHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answeredByReadiness(w) // a probe is no evidence for WithAdaptiveDrain
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		select {
		case <-m.Stopping():
			if m.handingOver() { // an upgrade's: the new process is ready
				fmt.Fprintln(w, "ok")
				return
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "shutting down")
		default:
			fmt.Fprintln(w, "ok")
		}
	})
}

// GRPCServer adapts a *grpc.Server (or anything with GracefulStop and Stop)
// to a Hook: GracefulStop, which stops accepting, sends GOAWAY and waits for
// the calls in flight; if the hook's context ends first, Stop, which cancels
// them, and the hook reports [ErrTimeout]. Streams that never end on their
// own (watches, subscriptions) hold GracefulStop until the deadline: end
// them from [Manager.Context] or from an earlier hook (the module
// github.com/gracefulgo/shutdown/shutdowngrpc does). A panic in
// GracefulStop, which the hook runs on a goroutine of its own, is the
// hook's [ErrPanic] with GracefulStop's stack. The library takes no gRPC
// dependency. It panics if s is nil.
func GRPCServer(s interface {
	GracefulStop()
	Stop()
}) Hook {
	if s == nil || isNilPointer(s) {
		panic("shutdown: GRPCServer: s is nil")
	}
	return func(ctx context.Context) error {
		done := goRelaying(s.GracefulStop)
		select {
		case p := <-done:
			relay(p)
			return nil
		case <-ctx.Done():
		}
		select {
		case p := <-done: // returned as the deadline came
			relay(p)
			return nil
		default:
		}
		s.Stop()
		relay(<-done)
		// Whether calls were in flight is not known: GracefulStop may have been
		// about to return when the deadline came (or had passed already).
		return fmt.Errorf("grpc server: GracefulStop had not finished at the deadline; stopped: %w", ctx.Err())
	}
}
