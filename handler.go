package shutdown

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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
// The ResponseWriter that h sees answers a type assertion to each of
// [http.Flusher], [http.Hijacker], [http.CloseNotifier], [io.ReaderFrom],
// [io.StringWriter] and [http.Pusher] as the writer Handler gets does:
// over HTTP/1.x it is a Flusher, Hijacker, CloseNotifier, ReaderFrom and
// StringWriter, over HTTP/2 a Flusher, CloseNotifier, StringWriter and
// Pusher, as net/http's own writers are, so frameworks that assert one of
// them without checking (gin's Context.Stream, echo) work under Handler.
// One exception: it is a Hijacker also when the writer Handler gets only
// reaches one through Unwrap, as [http.ResponseController] finds it, so
// that a hijack through the controller comes through Handler and is
// tracked. Its Unwrap method returns the writer Handler got, through which
// [http.ResponseController] reaches every other method (SetWriteDeadline,
// EnableFullDuplex). It panics if h is nil.
func (m *Manager) Handler(h http.Handler) http.Handler {
	if h == nil {
		panic("shutdown: Handler: h is nil")
	}
	// No accessor for the streams' signal on the request (a context value,
	// say): whoever writes m.Handler(h) has m at hand, and libraries take a
	// context.Context, to which m.Context() can be given. One way to ask.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		noted, at := m.ev.arrive(w, r) // WithAdaptiveDrain's evidence (drain.go)
		f := &fullWriter{drainWriter{ResponseWriter: w, m: m, r: r, noted: noted, at: at}}
		// Deferred: a request whose handler panics was sent here too.
		defer f.countArrival()
		h.ServeHTTP(writers[methodSet(w)](f), r)
		// A handler that wrote nothing gets its header from the server
		// after it returns: mark it now.
		if !f.hijacked {
			f.markClose()
		}
	})
}

// drainWriter adds "Connection: close" to the response when its header is
// written, if shutdown has started by then. Checking at entry only would
// miss the requests in flight when Stopping closes: often the slowest, on
// the busiest connections.
type drainWriter struct {
	http.ResponseWriter
	m        *Manager      // its Stopping, and its evidence for WithAdaptiveDrain
	r        *http.Request // to find the server, only if the handler hijacks
	marked   bool          // the header has been written (or is about to be)
	hijacked bool
	noted    bool          // an arrival to count at the first write, hijack or return (drain.go)
	at       time.Duration // when it arrived, since the Manager's New (drain.go)
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

// FlushError is what http.ResponseController.Flush calls first. Every
// writer Handler hands out has it, so that a flush through the controller
// marks the header too rather than reach the server's writer through
// Unwrap; it returns the server's error where that cannot flush. Such a
// flush writes no header, so the next write marks it again.
func (w *drainWriter) FlushError() error {
	was := w.marked
	w.markClose()
	err := http.NewResponseController(w.ResponseWriter).Flush()
	if !was && errors.Is(err, http.ErrNotSupported) {
		w.marked = false
	}
	return err
}

// baseWriter is what every writer Handler hands out has: drainWriter's
// methods.
type baseWriter interface {
	http.ResponseWriter
	Unwrap() http.ResponseWriter
	FlushError() error
	inner() *drainWriter // for the adaptive drain's evidence (drain.go)
}

// fullWriter is a drainWriter with all six optional methods. Each calls the
// wrapped writer's own, so a handler must see only those the wrapped writer
// has: the writers table (handler_writers.go) gives, for each method set,
// a writer that holds the fullWriter through just those interfaces.
type fullWriter struct{ drainWriter }

// Flush is here because many handlers still find it with a type assertion
// (w.(http.Flusher)) rather than through http.ResponseController.
func (w *fullWriter) Flush() { _ = w.FlushError() }

// CloseNotify is the wrapped writer's: gin and echo still assert it.
func (w *fullWriter) CloseNotify() <-chan bool {
	return w.ResponseWriter.(http.CloseNotifier).CloseNotify() //lint:ignore SA1019 frameworks assert it
}

// ReadFrom keeps the server's sendfile path for io.Copy and http.ServeContent.
func (w *fullWriter) ReadFrom(r io.Reader) (int64, error) {
	w.markClose()
	return w.ResponseWriter.(io.ReaderFrom).ReadFrom(r)
}

// WriteString keeps the server's copy-free path for io.WriteString.
func (w *fullWriter) WriteString(s string) (int, error) {
	w.markClose()
	return w.ResponseWriter.(io.StringWriter).WriteString(s)
}

// Push is the wrapped writer's: [http.ResponseController] has no Push, so
// a handler finds it only with w.(http.Pusher).
func (w *fullWriter) Push(target string, opts *http.PushOptions) error {
	return w.ResponseWriter.(http.Pusher).Push(target, opts)
}

// Hijack hijacks the connection through the wrapped writer, or one it
// wraps (found through Unwrap, as [http.ResponseController] finds it), and
// tracks it if [HTTPServer] drains the server. The controller finds this
// Hijack before it tries Unwrap, so both ways of hijacking come through
// here.
func (w *fullWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	// The response goes out on the connection from here (a WebSocket's
	// 101): for WithAdaptiveDrain, this is the first write.
	w.countArrival()
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
			t.hijackEnds(nil, errors.ErrUnsupported, false)
		}
	}()
	c, rw, err := rc.Hijack()
	ended = true
	if err == nil {
		w.hijacked = true
	}
	return t.hijackEnds(c, err, upgradesToH2C(w.r)), rw, err
}

// The six optional interfaces, as bits of a method set: the index of the
// writers table.
const (
	canFlush       = 1 << iota // http.Flusher
	canHijack                  // http.Hijacker
	canCloseNotify             // http.CloseNotifier
	canReadFrom                // io.ReaderFrom
	canWriteString             // io.StringWriter
	canPush                    // http.Pusher
)

// methodSet says which of the six optional interfaces w has. Hijack counts
// also when found through Unwrap, as [http.ResponseController] finds it:
// middleware written for the controller adds only Unwrap, and a handler
// behind it hijacks through the controller, which must find Handler's
// Hijack first for the connection to be tracked.
func methodSet(w http.ResponseWriter) int {
	set := 0
	if _, ok := w.(http.Flusher); ok {
		set |= canFlush
	}
	if hijacks(w) {
		set |= canHijack
	}
	//lint:ignore SA1019 frameworks assert it
	if _, ok := w.(http.CloseNotifier); ok {
		set |= canCloseNotify
	}
	if _, ok := w.(io.ReaderFrom); ok {
		set |= canReadFrom
	}
	if _, ok := w.(io.StringWriter); ok {
		set |= canWriteString
	}
	if _, ok := w.(http.Pusher); ok {
		set |= canPush
	}
	return set
}

// hijacks reports whether w, or a writer that it wraps, is an
// [http.Hijacker], found through Unwrap as [http.ResponseController] finds
// it.
func hijacks(w http.ResponseWriter) bool {
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

// http1Writer is the writer over net/http's HTTP/1.x writer (method set
// 31: it cannot push), and http2Writer over its HTTP/2 writer (53: it can
// neither hijack nor read from). Types of their own rather than rows of
// embedded interfaces, so that a request costs one allocation.
type (
	http1Writer fullWriter
	http2Writer fullWriter
)

func (w *http1Writer) Flush()                              { (*fullWriter)(w).Flush() }
func (w *http1Writer) CloseNotify() <-chan bool            { return (*fullWriter)(w).CloseNotify() }
func (w *http1Writer) ReadFrom(r io.Reader) (int64, error) { return (*fullWriter)(w).ReadFrom(r) }
func (w *http1Writer) WriteString(s string) (int, error)   { return (*fullWriter)(w).WriteString(s) }
func (w *http1Writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return (*fullWriter)(w).Hijack()
}

func (w *http2Writer) Flush()                            { (*fullWriter)(w).Flush() }
func (w *http2Writer) CloseNotify() <-chan bool          { return (*fullWriter)(w).CloseNotify() }
func (w *http2Writer) WriteString(s string) (int, error) { return (*fullWriter)(w).WriteString(s) }
func (w *http2Writer) Push(target string, opts *http.PushOptions) error {
	return (*fullWriter)(w).Push(target, opts)
}

// hijackedConn is a connection hijacked through Handler on a server that
// HTTPServer drains: the server forgets it, so its Close tells the tracker.
// It wraps rather than probes the socket for closing, so that it works
// with any listener (TLS, PROXY protocol, cmux), and the hook hears of a
// Close at once. It counts its writes, for an h2c connection's end (see
// h2cNext).
type hijackedConn struct {
	net.Conn
	t    *connTracker
	addr string // addrKey, fixed
	once sync.Once

	writing atomic.Int32  // writes under way
	wrote   atomic.Uint64 // writes ended
	watched atomic.Bool   // the hook waits for a write to end (h2c)
	// dropWrites: the hook shuts (or has shut) the writing side of this h2c
	// connection, after x/net's last write for a finished stream: a write
	// now answers a request the client sent as the end of the stream went
	// out, which it cannot get. Dropped rather than failed, as x/net closes
	// the connection at a failed write, and that close, with the client's
	// bytes unread, would reset it under the responses still on their way.
	dropWrites atomic.Bool

	// Guarded by t.mu: what x/net reported, if it serves HTTP/2 over it.
	h2c         bool      // x/net has reported a state for it
	idleSince   time.Time // when it went idle; zero while a stream is open
	wroteAtIdle uint64    // wrote then
	shutAt      time.Time // when the hook shut its writing side
	closing     bool      // the hook has closed it and waits for x/net's Close
	// falseIdle: hijacked by an "Upgrade: h2c" request, which x/net serves
	// as the connection's stream 1. x/net reports the connection idle once
	// as it reads the client's preface, while that stream still runs: the
	// report is not taken for idle.
	falseIdle bool
}

// Write writes to the connection, counted.
func (c *hijackedConn) Write(p []byte) (int, error) {
	c.writing.Add(1)
	if c.dropWrites.Load() {
		c.wroteOne()
		return len(p), nil
	}
	n, err := c.Conn.Write(p)
	c.wroteOne()
	return n, err
}

// wroteOne ends a write, and wakes the hook if it waits for one.
func (c *hijackedConn) wroteOne() {
	c.wrote.Add(1)
	c.writing.Add(-1)
	if c.watched.Load() {
		c.t.mu.Lock()
		c.t.changed()
		c.t.mu.Unlock()
	}
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
	c.writing.Add(1)
	defer c.wroteOne()
	if c.dropWrites.Load() {
		return io.Copy(io.Discard, r)
	}
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
