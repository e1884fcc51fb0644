package shutdown

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
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
// Handler never decides when a server is drained: [HTTPServer] follows
// the server's connections itself, so Handler may wrap all routes, some,
// or none. With [WithAdaptiveDrain] it counts requests as evidence.
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
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		noted, at := m.ev.arrive(r) // WithAdaptiveDrain's evidence (drain.go)
		// One wrapper type per combination, so that a type assertion on
		// what h sees answers as it would on w: the HTTP/1.x writer
		// hijacks, the HTTP/2 writer pushes, a middleware's writer may do
		// both. Still one allocation per request (BenchmarkHandler).
		_, pushes := w.(http.Pusher)
		var dw *drainWriter
		switch hijacks := canHijack(w); {
		case hijacks && pushes:
			d := &drainHijackPusher{drainHijacker{drainWriter{ResponseWriter: w, m: m, noted: noted, at: at}, r}}
			dw = &d.drainWriter
			h.ServeHTTP(d, r)
		case hijacks:
			d := &drainHijacker{drainWriter{ResponseWriter: w, m: m, noted: noted, at: at}, r}
			dw = &d.drainWriter
			h.ServeHTTP(d, r)
		case pushes:
			d := &drainPusher{drainWriter{ResponseWriter: w, m: m, noted: noted, at: at}}
			dw = &d.drainWriter
			h.ServeHTTP(d, r)
		default:
			dw = &drainWriter{ResponseWriter: w, m: m, noted: noted, at: at}
			h.ServeHTTP(dw, r)
		}
		// A handler that wrote nothing gets its header from the server
		// after it returns: mark it now.
		if !dw.hijacked {
			dw.markClose()
		}
		dw.countArrival()
	})
}

// drainWriter adds "Connection: close" to the response when its header is
// written, if shutdown has started by then. Checking at entry only would
// miss the requests in flight when Stopping closes: often the slowest, on
// the busiest connections.
type drainWriter struct {
	http.ResponseWriter
	m        *Manager // its Stopping, and its evidence for WithAdaptiveDrain
	marked   bool     // the header has been written (or is about to be)
	hijacked bool
	noted    bool   // an arrival to count at the first write or return (drain.go)
	at       uint32 // when it arrived (drain.go)
}

func (w *drainWriter) markClose() {
	if w.marked {
		return
	}
	w.marked = true
	w.countArrival()
	select {
	case <-w.m.stopping:
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
	for range 100 { // a writer whose Unwrap returns itself must not hang every request
		switch v := w.(type) {
		case http.Hijacker:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return false
		}
	}
	return false
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
