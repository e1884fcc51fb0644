package shutdown

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
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
//
// A keep-alive connection that stays idle through the whole drain delay
// carries no response to mark; [HTTPServer] closes it when the drain ends.
// HTTP/1.1 cannot retire an idle connection without a small race with a
// client that sends on it at that moment: Go's client retries such a
// request on a new connection, some others report an error. Do not use
// [http.Server.SetKeepAlivesEnabled](false) instead: it closes idle
// connections at once, in the middle of the drain, under every such client.
//
// Handler also counts the requests in flight on each server, found through
// [http.ServerContextKey], so it may sit inside other middleware; wrap the
// whole of the server's handler, because [HTTPServer] closes the server
// when this count drops to zero. A hijacked request counts until its
// handler returns.
//
// The ResponseWriter that h sees has an Unwrap method, so
// [http.ResponseController] reaches the server's own; it implements
// [http.Flusher] and [io.ReaderFrom] always, and [http.Hijacker] when the
// server's does (HTTP/1.x). It panics if h is nil.
func (m *Manager) Handler(h http.Handler) http.Handler {
	if h == nil {
		panic("shutdown: Handler: h is nil")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok && s != nil {
			t := trackerFor(s)
			t.enter()
			defer t.leave()
		}
		var dw *drainWriter
		if _, ok := w.(http.Hijacker); ok {
			dh := &drainHijacker{drainWriter{ResponseWriter: w, stopping: m.stopping}}
			dw = &dh.drainWriter
			h.ServeHTTP(dh, r)
		} else {
			dw = &drainWriter{ResponseWriter: w, stopping: m.stopping}
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

// drainHijacker is a drainWriter over a writer that can be hijacked; a
// separate type, so that w.(http.Hijacker) stays false over HTTP/2, as it
// is without Handler.
type drainHijacker struct{ drainWriter }

func (w *drainHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := w.ResponseWriter.(http.Hijacker).Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, rw, err
}

// tracker counts one server's requests in flight through Handler.
type tracker struct {
	// state holds the requests in flight in its low 32 bits and the number
	// of requests ever started, modulo 2^32, in its high 32 bits: one
	// atomic operation per request start and end, and one load tells
	// HTTPServer whether a request came and went while it looked away.
	state   atomic.Uint64
	watched atomic.Bool // an HTTPServer hook waits on idle
	mu      sync.Mutex
	idle    chan struct{} // closed when nothing is in flight any more
}

func (t *tracker) enter() { t.state.Add(1<<32 + 1) }

func (t *tracker) leave() {
	if uint32(t.state.Add(^uint64(0))) == 0 && t.watched.Load() {
		t.mu.Lock()
		if t.idle != nil {
			close(t.idle)
			t.idle = nil
		}
		t.mu.Unlock()
	}
}

// inFlight returns the requests in flight and whether Handler has seen any
// request on this server at all.
func (t *tracker) inFlight() (n uint32, seen bool) {
	v := t.state.Load()
	return uint32(v), v != 0
}

// whenIdle returns a channel that is closed once Handler has seen a request
// on this server and none is in flight.
func (t *tracker) whenIdle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	// watched is set before state is read, and leave changes state before
	// it reads watched: either this load sees the last request leave, or
	// that leave sees watched and closes the channel.
	t.watched.Store(true)
	ch := make(chan struct{})
	if n, seen := t.inFlight(); seen && n == 0 {
		close(ch)
		return ch
	}
	t.idle = ch
	return ch
}

// servers maps each server that Handler or HTTPServer has met to its
// tracker. The keys are weak pointers, and a cleanup deletes an entry when
// its server is collected, so a server that is never drained through
// HTTPServer (a test's httptest.Server, say) is not kept alive here;
// HTTPServer deletes its server's entry when its hook ends.
var servers sync.Map // weak.Pointer[http.Server] -> *tracker

func trackerFor(s *http.Server) *tracker {
	k := weak.Make(s)
	if t, ok := servers.Load(k); ok {
		return t.(*tracker)
	}
	t, loaded := servers.LoadOrStore(k, new(tracker))
	if !loaded {
		runtime.AddCleanup(s, func(k weak.Pointer[http.Server]) { servers.Delete(k) }, k)
	}
	return t.(*tracker)
}

// settleDelay is how long HTTPServer waits, once nothing is in flight,
// before it closes the server. A request leaves Handler when its handler
// returns, but the server writes the end of the response (the buffered
// body, the last chunk) after that; closing the connection at that instant
// would cut the response. A few milliseconds cover that write; it is the
// one fixed wait here, and it replaces one of up to five seconds.
const settleDelay = 20 * time.Millisecond

// HTTPServer adapts s to a Hook that drains it. It calls
// [http.Server.Shutdown] with the hook's context, which closes the
// listeners and the idle connections, and waits for the others. Once
// [Manager.Handler] counts no request in flight on s, it calls
// [http.Server.Close] rather than wait: Shutdown would wait up to five
// seconds for connections that were opened but never sent a request, which
// Go's own client and many proxies leave behind. If the hook's context ends
// first, it calls Close, which cuts the requests still running (their
// contexts are cancelled), and the hook reports [ErrTimeout]. Without
// Handler on s, or when Handler has not yet seen a request on s, it is
// Shutdown (which may wait up to five seconds for silent connections) and,
// at the deadline, Close.
//
// It calls no other method of s and changes none of its settings.
//
// [http.Server.Serve] and ListenAndServe return as soon as Shutdown starts,
// so Run's function returning [http.ErrServerClosed] does not mean that the
// handlers have finished: this hook returning does. Register what the
// handlers use (a database) before the server, so that its hook runs after
// this one. Shutdown and Close do not track hijacked connections
// (WebSockets) and other long-lived requests such as streams: tell them to
// end with [http.Server.RegisterOnShutdown], whose functions Shutdown calls
// when it starts, or from [Manager.Context], which is cancelled before the
// hooks start. It panics if s is nil.
func HTTPServer(s *http.Server) Hook {
	if s == nil {
		panic("shutdown: HTTPServer: s is nil")
	}
	return func(ctx context.Context) error {
		t := trackerFor(s)
		defer servers.Delete(weak.Make(s))
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		shut := make(chan error, 1)
		go func() { shut <- s.Shutdown(sctx) }()
		for {
			select {
			case err := <-shut:
				return closeAfter(ctx, s, t, err)
			case <-t.whenIdle():
			}
			before := t.state.Load()
			settle := time.NewTimer(settleDelay)
			select {
			case err := <-shut:
				settle.Stop()
				return closeAfter(ctx, s, t, err)
			case <-settle.C:
			}
			if t.state.Load() != before {
				continue // a request came, or is still running
			}
			cerr := s.Close()
			cancel()
			<-shut // returns at once: its context is cancelled
			if cerr != nil {
				return fmt.Errorf("http server: Close: %w", cerr)
			}
			return nil
		}
	}
}

// closeAfter turns Shutdown's result into the hook's, closing s if the
// hook's context ended first. Its errors, like the other adapters', do not
// start with "shutdown:": the [*HookError] that carries them does.
func closeAfter(ctx context.Context, s *http.Server, t *tracker, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() == nil {
		return fmt.Errorf("http server: Shutdown: %w", err)
	}
	n, seen := t.inFlight()
	if cerr := s.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if seen {
		return fmt.Errorf("http server closed with %d requests in flight: %w", n, err)
	}
	return fmt.Errorf("http server closed with requests in flight: %w", err)
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
		case <-m.stopping:
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
		s.Stop()
		<-done
		return fmt.Errorf("grpc server stopped with calls in flight: %w", ctx.Err())
	}
}
