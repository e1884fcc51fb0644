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
	"slices"
	"strings"
	"sync"
	"weak"
)

// connTracker follows one server's connections, through the ConnState
// callback that HTTPServer chains onto it, and the connections hijacked
// through Handler on it.
//
// Why ConnState and not a count of requests in Handler: a handler's return
// says nothing about the response's bytes still buffered, which the server
// writes after it (a slow reader's last kilobytes), and Handler sees only
// the routes it wraps. The server reports StateIdle or StateClosed after
// its last write of a response has returned, on every route.
type connTracker struct {
	mu    sync.Mutex
	conns map[net.Conn]http.ConnState // seen from StateNew on, until closed or hijacked
	// seen: a connection was reported from StateNew on. late: a state came
	// for a connection never reported new, so HTTPServer was called after
	// the server had started serving (a data race, see HTTPServer) and may
	// not know every connection. Neither: s.ConnState was replaced after
	// HTTPServer, or nothing connected.
	seen, late bool
	hijacking  int                        // Hijack calls under way through Handler
	hijacked   map[*hijackedConn]struct{} // hijacked through Handler, not yet closed
	wake       chan struct{}              // closed at the next change, while the hook waits
	// pastDeadline: the hook has closed what was open at its deadline; a
	// Hijack that ends after that closes its connection at once.
	pastDeadline bool
}

// stateClosing marks a connection that the hook has closed itself, until
// the server reports it closed.
const stateClosing http.ConnState = -1

func (t *connTracker) setState(c net.Conn, st http.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, known := t.conns[c]
	switch {
	case st == http.StateNew:
		t.conns[c], t.seen = st, true
	case !known:
		t.late = true
	case st == http.StateHijacked || st == http.StateClosed:
		delete(t.conns, c)
	default:
		t.conns[c] = st
	}
	t.changed()
}

func (t *connTracker) hijackStarts() {
	t.mu.Lock()
	t.hijacking++
	t.mu.Unlock()
}

func (t *connTracker) hijackEnds(c net.Conn, err error) net.Conn {
	t.mu.Lock()
	t.hijacking--
	t.changed()
	if err != nil {
		t.mu.Unlock()
		return c
	}
	hc := &hijackedConn{Conn: c, t: t}
	late := t.pastDeadline
	if !late {
		t.hijacked[hc] = struct{}{}
	}
	t.mu.Unlock()
	if late {
		// The hook has closed what it knew of at its deadline and is gone:
		// nobody else would close this one.
		closeNow(c)
	}
	if _, ok := c.(halfCloser); ok {
		return hijackedHalfCloser{hc}
	}
	return hc
}

func (t *connTracker) hijackedClosed(c *hijackedConn) {
	t.mu.Lock()
	delete(t.hijacked, c)
	t.changed()
	t.mu.Unlock()
}

// changed wakes the hook, if it waits; t.mu is held.
func (t *connTracker) changed() {
	if t.wake != nil {
		close(t.wake)
		t.wake = nil
	}
}

// trackers maps each server given to HTTPServer to its tracker, for
// Handler's Hijack. The keys are weak pointers, and a cleanup deletes an
// entry when its server is collected (a tracker does not point back to its
// server), so a server that is never drained is not kept alive here.
var trackers sync.Map // weak.Pointer[http.Server] -> *connTracker

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
// this one. It panics if s is nil.
func HTTPServer(s *http.Server) Hook {
	if s == nil {
		panic("shutdown: HTTPServer: s is nil")
	}
	t := &connTracker{conns: make(map[net.Conn]http.ConnState), hijacked: make(map[*hijackedConn]struct{})}
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
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(sctx) }()
	var shutErr error
	shutDone := false
	for {
		t.mu.Lock()
		var silent []net.Conn
		for c, st := range t.conns {
			if st == http.StateNew {
				silent = append(silent, c)
				t.conns[c] = stateClosing
			}
		}
		// Wait for every connection to close, not just to be idle: an idle
		// HTTP/2 connection is only between streams, and Go closes it a
		// second after GOAWAY; an HTTP/1.x connection that ends a response
		// during Shutdown closes at once. Idle is not the end of a
		// response either when the server closes after it (Connection:
		// close): StateClosed comes straight after the last write.
		trusted := t.seen && !t.late
		open := trusted && len(t.conns) > 0 || !trusted && !shutDone
		done := !open && t.hijacking == 0 && len(t.hijacked) == 0
		wake := make(chan struct{})
		if !done {
			t.wake = wake
		}
		t.mu.Unlock()
		for _, c := range silent {
			closeNow(c)
		}
		if done {
			break
		}
		select {
		case <-wake:
		case err := <-shut:
			shutDone, shutErr, shut = true, err, nil
			if ctx.Err() != nil {
				return t.cut(ctx, s, cancel, shut)
			}
		case <-ctx.Done():
			return t.cut(ctx, s, cancel, shut)
		}
	}
	// Close now rather than leave it to Shutdown, which polls up to every
	// half second: nothing is left to cut, and the listeners are closed.
	cerr := s.Close()
	cancel()
	if !shutDone {
		if err := <-shut; err != nil && !errors.Is(err, context.Canceled) {
			shutErr = err // a listener's Close failed
		}
	}
	switch {
	case shutErr != nil:
		return fmt.Errorf("http server: Shutdown: %w", shutErr)
	case cerr != nil:
		return fmt.Errorf("http server: Close: %w", cerr)
	}
	return nil
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
func (t *connTracker) cut(ctx context.Context, s *http.Server, cancel context.CancelFunc, shut <-chan error) error {
	t.mu.Lock()
	trusted, active := t.seen && !t.late, 0
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
	cerr := s.Close()
	cancel()
	if shut != nil {
		<-shut // at once: its context is cancelled
	}
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
// them from [Manager.Context] or from an earlier hook. The library takes no
// gRPC dependency. It panics if s is nil.
func GRPCServer(s interface {
	GracefulStop()
	Stop()
}) Hook {
	if s == nil || isNilPointer(s) {
		panic("shutdown: GRPCServer: s is nil")
	}
	return func(ctx context.Context) error {
		done := make(chan struct{})
		go func() {
			s.GracefulStop()
			close(done)
		}()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
		}
		select {
		case <-done: // returned as the deadline came
			return nil
		default:
		}
		s.Stop()
		<-done
		// Whether calls were in flight is not known: GracefulStop may have been
		// about to return when the deadline came (or had passed already).
		return fmt.Errorf("grpc server: GracefulStop had not finished at the deadline; stopped: %w", ctx.Err())
	}
}
