package shutdown

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"weak"
)

// Handler wraps a server's handler for a graceful drain. From
// [Manager.Stopping] on, every response carries "Connection: close",
// including responses of requests that were already running when shutdown
// started, as long as their header had not been written yet. The server
// closes such a connection cleanly after the response, and the client
// reconnects, through the load balancer or kube-proxy, to another instance.
// Over HTTP/2 the same header makes Go's server send GOAWAY and close the
// connection once its streams are done; the header itself is not sent.
// Handler counts nothing: [HTTPServer] follows the server's connections
// itself, so Handler may wrap all routes, some, or none.
//
// A keep-alive connection that stays idle through the whole drain delay
// carries no response to mark; [HTTPServer] closes it when the drain ends.
// HTTP/1.1 cannot retire an idle connection without a small race with a
// client that sends on it at that moment: Go's client retries such a
// request on a new connection, some others report an error. Do not use
// [http.Server.SetKeepAlivesEnabled](false) instead: it closes idle
// connections at once, in the middle of the drain, under every such client.
//
// Handler tracks the connections hijacked through it (WebSockets) on a
// server that [HTTPServer] drains, which it finds through
// [http.ServerContextKey], so it may sit inside other middleware. It tracks
// connections, not requests: a WebSocket handler often returns at once and
// leaves the connection to goroutines of its own. The hook waits for them
// to close and closes those still open at its deadline. Streams should end
// when [Manager.Context] is cancelled, after the drain delay, when the load
// balancer no longer sends new connections here: a WebSocket gets a close
// frame 1001 "going away", a server-sent event stream ends (the client
// reconnects with Last-Event-ID), a long poll returns. Select on
// m.Context().Done() in the handler or in the connection's goroutines: the
// request's own context is cancelled only when the server closes, so that
// the requests in flight finish. Such a hijacked connection is the
// server's, wrapped so that its Close is seen; its NetConn method returns
// the server's own (a *net.TCPConn, say), and it keeps that connection's
// ReadFrom and WriteTo (splice for tunnels) and, when it has one,
// CloseWrite (a proxy's half-close). A Hijack that panics (a router's
// writer over HTTP/2) is not counted as under way: the panic goes on up.
// A Hijack that ends after the hook has closed what was open at its
// deadline returns a connection already closed. Connections hijacked on
// routes that Handler does not wrap are not tracked (net/http forgets a
// connection once it is hijacked), and on a server without HTTPServer,
// Handler tracks and closes nothing.
//
// The ResponseWriter that h sees has an Unwrap method, so
// [http.ResponseController] reaches the server's own; it implements
// [http.Flusher] and [io.ReaderFrom] always, [http.Hijacker] when the
// writer Handler gets, or one it wraps (found through Unwrap, as
// ResponseController finds it), can hijack (HTTP/1.x), and [http.Pusher]
// when the writer Handler gets can push (HTTP/2). It panics if h is nil.
func (m *Manager) Handler(h http.Handler) http.Handler {
	if h == nil {
		panic("shutdown: Handler: h is nil")
	}
	// No accessor for the streams' signal on the request (a context value,
	// say): whoever writes m.Handler(h) has m at hand, and libraries take a
	// context.Context, to which m.Context() can be given. One way to ask.
	stopping := m.Stopping()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// One wrapper type per combination, so that a type assertion on
		// what h sees answers as it would on w: the HTTP/1.x writer
		// hijacks, the HTTP/2 writer pushes, a middleware's writer may do
		// both. Still one allocation per request (BenchmarkHandler).
		_, pushes := w.(http.Pusher)
		var dw *drainWriter
		switch hijacks := canHijack(w); {
		case hijacks && pushes:
			d := &drainHijackPusher{drainHijacker{drainWriter{ResponseWriter: w, stopping: stopping}, r}}
			dw = &d.drainWriter
			h.ServeHTTP(d, r)
		case hijacks:
			d := &drainHijacker{drainWriter{ResponseWriter: w, stopping: stopping}, r}
			dw = &d.drainWriter
			h.ServeHTTP(d, r)
		case pushes:
			d := &drainPusher{drainWriter{ResponseWriter: w, stopping: stopping}}
			dw = &d.drainWriter
			h.ServeHTTP(d, r)
		default:
			dw = &drainWriter{ResponseWriter: w, stopping: stopping}
			h.ServeHTTP(dw, r)
		}
		// A handler that wrote nothing gets its header from the server
		// after it returns: mark it now.
		if !dw.hijacked {
			dw.markClose()
		}
	})
}

// drainWriter adds "Connection: close" to the response when its header is
// written, if shutdown has started by then. Checking at entry only would
// miss the requests in flight when Stopping closes: often the slowest, on
// the busiest connections.
type drainWriter struct {
	http.ResponseWriter
	stopping <-chan struct{}
	marked   bool // the header has been written (or is about to be)
	hijacked bool
}

func (w *drainWriter) markClose() {
	if w.marked {
		return
	}
	w.marked = true
	select {
	case <-w.stopping:
	default:
		return
	}
	h := w.ResponseWriter.Header()
	for _, v := range h["Connection"] {
		if strings.Contains(strings.ToLower(v), "upgrade") {
			return // a 101 Switching Protocols must keep its Upgrade
		}
	}
	h.Set("Connection", "close")
}

// Unwrap returns the server's ResponseWriter, for [http.ResponseController].
func (w *drainWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *drainWriter) WriteHeader(code int) {
	// Informational responses (103 Early Hints) leave the final header to
	// come; 101 is final.
	if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
		w.markClose()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *drainWriter) Write(p []byte) (int, error) {
	w.markClose()
	return w.ResponseWriter.Write(p)
}

// ReadFrom keeps the server's sendfile path for io.Copy and http.ServeContent.
func (w *drainWriter) ReadFrom(r io.Reader) (int64, error) {
	w.markClose()
	return io.Copy(w.ResponseWriter, r)
}

// Flush is here because many handlers still find it with a type assertion
// (w.(http.Flusher)) rather than through http.ResponseController. Both the
// HTTP/1.x and the HTTP/2 server's writers can flush.
func (w *drainWriter) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController.Flush calls first.
func (w *drainWriter) FlushError() error {
	w.markClose()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// canHijack reports whether w, or a writer that it wraps, is an
// [http.Hijacker], found through Unwrap as [http.ResponseController] finds
// it: middleware written for ResponseController adds only Unwrap, and a
// handler behind it hijacks through the controller.
func canHijack(w http.ResponseWriter) bool {
	for {
		switch v := w.(type) {
		case http.Hijacker:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return false
		}
	}
}

// drainHijacker is a drainWriter over a writer that can be hijacked, itself
// or through Unwrap; a separate type, so that w.(http.Hijacker) stays false
// over HTTP/2, as it is without Handler. http.ResponseController.Hijack
// finds its Hijack before it tries Unwrap, so both ways of hijacking come
// through here.
type drainHijacker struct {
	drainWriter
	r *http.Request // to find the server, only if the handler hijacks
}

func (w *drainHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	var t *connTracker
	if s, ok := w.r.Context().Value(http.ServerContextKey).(*http.Server); ok && s != nil {
		if v, ok := trackers.Load(weak.Make(s)); ok {
			t = v.(*connTracker)
		}
	}
	rc := http.NewResponseController(w.ResponseWriter)
	if t == nil {
		return rc.Hijack()
	}
	// The server reports StateHijacked, and the connection leaves the
	// tracker's list, inside Hijack: counting the hijack as under way
	// before it keeps the drain from seeing nothing open in between.
	t.hijackStarts()
	// A Hijack that panics (a router's writer that asserts http.Hijacker
	// over HTTP/2, say) must not leave the count up, or the drain waits
	// for its deadline. The deferred call does not recover: the panic goes
	// on to the caller with its own stack.
	ended := false
	defer func() {
		if !ended {
			t.hijackEnds(nil, errors.ErrUnsupported)
		}
	}()
	c, rw, err := rc.Hijack()
	ended = true
	if err == nil {
		w.hijacked = true
	}
	return t.hijackEnds(c, err), rw, err
}

// drainPusher is a drainWriter over a writer that can push (HTTP/2):
// [http.ResponseController] has no Push, so a handler finds it only with
// w.(http.Pusher).
type drainPusher struct{ drainWriter }

func (w *drainPusher) Push(target string, opts *http.PushOptions) error {
	return w.ResponseWriter.(http.Pusher).Push(target, opts)
}

// drainHijackPusher is a drainHijacker over a writer that can also push, as
// some middleware writers declare both.
type drainHijackPusher struct{ drainHijacker }

func (w *drainHijackPusher) Push(target string, opts *http.PushOptions) error {
	return w.ResponseWriter.(http.Pusher).Push(target, opts)
}

// hijackedConn is a connection hijacked through Handler on a server that
// HTTPServer drains: the server forgets it, so its Close tells the tracker.
// It wraps rather than probes the socket for closing, so that it works
// with any listener (TLS, PROXY protocol, cmux), and the hook hears of a
// Close at once.
type hijackedConn struct {
	net.Conn
	t    *connTracker
	once sync.Once
}

// Close closes the connection and tells HTTPServer that it has ended.
func (c *hijackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.t.hijackedClosed(c) })
	return err
}

// NetConn returns the server's own connection, as [tls.Conn.NetConn] does;
// closing it directly is not seen by HTTPServer until its deadline.
func (c *hijackedConn) NetConn() net.Conn { return c.Conn }

// ReadFrom keeps the server's connection's own ReadFrom (splice(2) and
// sendfile(2) on a *net.TCPConn) for io.Copy into a tunnel.
func (c *hijackedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// WriteTo keeps the server's connection's own WriteTo (splice(2) on a
// *net.TCPConn) for io.Copy out of a tunnel.
func (c *hijackedConn) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := c.Conn.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, c.Conn)
}

// halfCloser is a connection that can close its writing side alone
// (*net.TCPConn, *net.UnixConn, *tls.Conn).
type halfCloser interface{ CloseWrite() error }

// hijackedHalfCloser is a hijackedConn over a halfCloser: a separate type,
// so that a tunnel asking c.(interface{ CloseWrite() error }) gets the
// answer the server's connection would give. A proxy passes the client's
// half-close on with it.
type hijackedHalfCloser struct{ *hijackedConn }

// CloseWrite closes the writing side of the connection; only Close ends it
// for HTTPServer.
func (c hijackedHalfCloser) CloseWrite() error { return c.Conn.(halfCloser).CloseWrite() }

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
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		select {
		case <-m.Stopping():
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
