// Package frameworks runs real web frameworks under shutdown: each serves
// the same small service (a fast route, a slow one, a stream) on a real
// http.Server drained by shutdown.HTTPServer, and goes through a shutdown
// while clients keep sending requests and streams are open.
package frameworks

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gracefulgo/shutdown"
)

const (
	drain  = 300 * time.Millisecond // WithDrainDelay
	budget = 10 * time.Second       // WithTimeout
	// slack is how much longer than the drain delay the shutdown may take:
	// the slow request, and Go closes an HTTP/2 connection about a second
	// after its GOAWAY; generous, for a loaded machine.
	slack   = 1500 * time.Millisecond
	streams = 2                // streams open at the shutdown
	loaders = 4                // clients sending requests in a loop
	guard   = 30 * time.Second // hang guard for anything the test waits on
	// slowWork is how long /slow works on after m.Context() is cancelled,
	// so that it is in flight when the server's hook starts.
	slowWork = 100 * time.Millisecond
	tick     = 50 * time.Millisecond // between a stream's events
)

var (
	helloBody = "hello\n"
	// slowBody is larger than a socket's first write, so a response cut
	// short shows.
	slowBody = strings.Repeat("the slow response, whole\n", 4000)
)

// service is what every framework serves, apart from the framework's own
// calls: the tests wire its methods into each framework's routes.
type service struct {
	m      *shutdown.Manager
	slowIn chan struct{} // a value each time /slow starts
	ended  atomic.Int32  // streams ended because m.Context() was cancelled
}

func newService(m *shutdown.Manager) *service {
	return &service{m: m, slowIn: make(chan struct{}, 1)}
}

// slow returns slowBody once m.Context() has been cancelled and slowWork
// has passed, or "" if the request's ctx ends first. It is the request in
// flight when the server's hook starts.
func (s *service) slow(ctx context.Context) string {
	s.slowIn <- struct{}{}
	select {
	case <-s.m.Context().Done():
	case <-ctx.Done():
		return ""
	}
	t := time.NewTimer(slowWork)
	defer t.Stop()
	select {
	case <-t.C:
		return slowBody
	case <-ctx.Done():
		return ""
	}
}

// next returns the n-th event of a stream: "open" at once, then "tick"
// every 50 ms, and "end" with more false once m.Context() is cancelled:
// the stream handler selects on m.Context(), not on the request's ctx,
// which the drain does not cancel. If ctx ends first (the client left),
// it returns "" and false.
func (s *service) next(ctx context.Context, n int) (event string, more bool) {
	if n == 0 {
		return "open", true
	}
	t := time.NewTimer(tick)
	defer t.Stop()
	select {
	case <-s.m.Context().Done():
		s.ended.Add(1)
		return "end", false
	case <-ctx.Done():
		return "", false
	case <-t.C:
		return "tick", true
	}
}

// stream sends a stream's events through send until next says it is over.
func (s *service) stream(ctx context.Context, send func(event string, n int) error) error {
	for n := 0; ; n++ {
		ev, more := s.next(ctx, n)
		if ev != "" {
			if err := send(ev, n); err != nil {
				return err
			}
		}
		if !more {
			return nil
		}
	}
}

// sse is a plain net/http handler for the stream, as server-sent events.
func (s *service) sse(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	s.stream(r.Context(), func(ev string, n int) error {
		fmt.Fprintf(w, "event: %s\ndata: %d\n\n", ev, n)
		return rc.Flush()
	})
}

// mux serves the service with net/http's own router.
func (s *service) mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, helloBody) })
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, s.slow(r.Context())) })
	mux.HandleFunc("GET /events", s.sse)
	return mux
}

// calls is the client side of the service. Each returns nil only when the
// call got its whole, right answer.
type calls interface {
	hello(ctx context.Context) error
	slow(ctx context.Context) error
	// stream returns nil when it saw "open" (then says so on opened),
	// then "end" last, and a clean end of the response.
	stream(ctx context.Context, opened chan<- struct{}) error
}

// httpCalls calls the service over HTTP with a real net/http client.
type httpCalls struct{ c *http.Client }

// base is the URL the clients call: the balancer picks the address.
const base = "http://service.test"

// balancer stands for the load balancer in front of the service: clients
// dial the instance under test until it is taken out of the endpoints,
// and another instance from then on, as kube-proxy does.
type balancer struct{ addr atomic.Pointer[string] }

func newBalancer(addr string) *balancer {
	b := new(balancer)
	b.addr.Store(&addr)
	return b
}

func (b *balancer) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, *b.addr.Load())
}

// newHTTPCalls returns the service's calls over HTTP/1.1, or over HTTP/2
// with prior knowledge (no TLS, no upgrade) if h2c.
func newHTTPCalls(t *testing.T, b *balancer, h2c bool) httpCalls {
	tr := &http.Transport{DialContext: b.dial, MaxIdleConnsPerHost: loaders + streams + 1}
	if h2c {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return httpCalls{c: &http.Client{Transport: tr}}
}

func (h httpCalls) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.c.Do(req)
	if err != nil {
		return nil, unanswered{err}
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return resp, nil
}

func (h httpCalls) body(ctx context.Context, path, want string) error {
	resp, err := h.get(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: after %d bytes: %w", path, len(got), err)
	}
	if string(got) != want {
		return fmt.Errorf("GET %s: got %d bytes, want %d", path, len(got), len(want))
	}
	return nil
}

func (h httpCalls) hello(ctx context.Context) error { return h.body(ctx, "/hello", helloBody) }
func (h httpCalls) slow(ctx context.Context) error  { return h.body(ctx, "/slow", slowBody) }

func (h httpCalls) stream(ctx context.Context, opened chan<- struct{}) error {
	resp, err := h.get(ctx, "/events")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		ev, ok := strings.CutPrefix(sc.Text(), "event:")
		if !ok {
			continue
		}
		events = append(events, strings.TrimSpace(ev))
		if len(events) == 1 && events[0] == "open" {
			opened <- struct{}{}
		}
	}
	return streamEnd(events, sc.Err())
}

// unanswered is a request that failed before any of its response came:
// the only failure that a wiring without GOAWAY may show (see
// stack.unanswered).
type unanswered struct{ error }

func (u unanswered) Unwrap() error { return u.error }

// streamEnd says whether a stream's events and the error that ended them
// are a stream that opened and was ended cleanly with "end".
func streamEnd(events []string, err error) error {
	switch {
	case err != nil:
		return fmt.Errorf("stream: after %d events: %w", len(events), err)
	case len(events) == 0 || events[0] != "open":
		return fmt.Errorf("stream: events %q, want open first", events)
	case events[len(events)-1] != "end":
		return fmt.Errorf("stream: ended cleanly without the end event, after %q", events)
	}
	return nil
}

// traffic is what drive saw on the client side.
type traffic struct {
	requests, failed int64 // plain requests sent, and those that failed
	unanswered       int64 // of the failed, those that got no byte of a response
	during           int64 // sent to the instance under test during its drain
	slowest          time.Duration
	firstErr         error
	slowErr          error
	streamErrs       []error
	exit             time.Duration // from the shutdown's start to its end
}

// target is an instance to drive through a shutdown.
type target struct {
	calls    calls
	lb       *balancer
	other    string          // another instance's address, for the balancer
	slowIn   <-chan struct{} // a value once /slow's handler has started
	shutdown func()          // starts the shutdown: Trigger, or SIGTERM
	done     <-chan struct{} // closed when Wait has returned, or the process exited
}

// drive opens the streams and the slow request, starts loaders clients
// that send requests in a loop, and starts the shutdown once they have
// sent some. A third of the way into the drain delay, the balancer takes
// the instance out: new connections go to the other instance, as they
// would in a rollout, and the clients' requests on the old one's
// keep-alive connections move there after their Connection: close. The
// clients stop when the shutdown has ended; drive returns once
// everything it started has ended.
func drive(t *testing.T, tg target) traffic {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	streamErrs, slowErr := openInFlight(t, ctx, tg)
	l := startLoad(ctx, tg.calls, tg.done)
	waitFor(t, "20 requests before the shutdown", func() bool { return l.requests.Load() >= 20 })
	start := time.Now()
	l.draining.Store(true)
	tg.shutdown()
	time.AfterFunc(drain/3, func() {
		tg.lb.addr.Store(&tg.other)
		l.removed.Store(true)
	})
	var tr traffic
	select {
	case <-tg.done:
		tr.exit = time.Since(start)
	case <-ctx.Done():
		t.Fatal("shutdown did not end in 30s")
	}
	l.wg.Wait()
	tr.requests, tr.failed, tr.during = l.requests.Load(), l.failed.Load(), l.during.Load()
	tr.unanswered = l.unanswered.Load()
	tr.slowest, tr.firstErr = time.Duration(l.slowest.Load()), l.firstErr
	tr.slowErr = <-slowErr
	for range streams {
		tr.streamErrs = append(tr.streamErrs, <-streamErrs)
	}
	return tr
}

// openInFlight opens the streams and the slow request and returns once
// each stream has its first event and the slow request's handler runs.
// Each sends its result on the channel returned for it.
func openInFlight(t *testing.T, ctx context.Context, tg target) (streamErrs, slowErr chan error) {
	t.Helper()
	opened := make(chan struct{}, streams)
	streamErrs = make(chan error, streams)
	for range streams {
		go func() { streamErrs <- tg.calls.stream(ctx, opened) }()
	}
	for range streams {
		select {
		case <-opened:
		case err := <-streamErrs:
			t.Fatalf("stream did not open: %v", err)
		case <-ctx.Done():
			t.Fatal("stream did not open in 30s")
		}
	}
	slowErr = make(chan error, 1)
	go func() { slowErr <- tg.calls.slow(ctx) }()
	select {
	case <-tg.slowIn:
	case err := <-slowErr:
		t.Fatalf("slow request ended before the shutdown: %v", err)
	case <-ctx.Done():
		t.Fatal("slow request did not start in 30s")
	}
	return streamErrs, slowErr
}

// load is loaders clients sending plain requests in a loop.
type load struct {
	wg                                            sync.WaitGroup
	requests, failed, unanswered, during, slowest atomic.Int64
	draining, removed                             atomic.Bool // shutdown started; the balancer took the instance out
	errOnce                                       sync.Once
	firstErr                                      error
}

// startLoad starts the clients; they stop when stop is closed.
func startLoad(ctx context.Context, c calls, stop <-chan struct{}) *load {
	l := new(load)
	for range loaders {
		l.wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				l.send(ctx, c)
			}
		})
	}
	return l
}

func (l *load) send(ctx context.Context, c calls) {
	if l.draining.Load() && !l.removed.Load() {
		l.during.Add(1)
	}
	l.requests.Add(1)
	t0 := time.Now()
	if err := c.hello(ctx); err != nil {
		l.failed.Add(1)
		if errors.As(err, new(unanswered)) {
			l.unanswered.Add(1)
		}
		l.errOnce.Do(func() { l.firstErr = err })
	}
	d := int64(time.Since(t0))
	for old := l.slowest.Load(); d > old && !l.slowest.CompareAndSwap(old, d); old = l.slowest.Load() {
	}
}

// check fails t for every way tr falls short of a clean shutdown, ended
// counting the streams the service saw ended by m.Context(); unanswered
// allows plain requests that got no byte of a response (see
// stack.unanswered).
func (tr traffic) check(t *testing.T, ended int, unanswered bool) {
	t.Helper()
	switch {
	case unanswered && tr.failed == tr.unanswered:
		if tr.failed > 0 {
			t.Logf("%d of %d requests failed before any response, as this wiring allows; the first: %v", tr.failed, tr.requests, tr.firstErr)
		}
	case tr.failed > 0:
		t.Errorf("%d of %d requests failed; the first: %v", tr.failed, tr.requests, tr.firstErr)
	}
	if tr.during == 0 {
		t.Errorf("no request was sent during the drain (of %d), so the test proves nothing", tr.requests)
	}
	if tr.slowErr != nil {
		t.Errorf("the request in flight at the shutdown: %v", tr.slowErr)
	}
	for _, err := range tr.streamErrs {
		if err != nil {
			t.Error(err)
		}
	}
	if ended != streams {
		t.Errorf("streams ended by m.Context() = %d, want %d", ended, streams)
	}
	if tr.exit > drain+slack {
		t.Errorf("shutdown took %v, want at most the drain delay + %v (%v)", tr.exit, slack, drain+slack)
	}
}

// waitFor polls cond until it holds, failing t after the hang guard.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s in %v", what, guard)
		}
		time.Sleep(time.Millisecond)
	}
}

// row is one line of the table the tests print.
type row struct {
	framework string
	tr        traffic
	ended     int
	exitCode  int
}

func (r row) String() string {
	return fmt.Sprintf("| %-29s | %8d | %8d | %6d | %11d/%d | %9d | %9v | %7v |",
		r.framework, r.tr.requests, r.tr.during, r.tr.failed, r.ended, streams, r.exitCode,
		r.tr.exit.Round(time.Millisecond), r.tr.slowest.Round(time.Millisecond))
}

const tableHead = "| framework                     | requests | in drain | failed | streams ended | exit code | exit time | slowest |\n" +
	"|-------------------------------|----------|----------|--------|---------------|-----------|-----------|---------|"

// logBuffer collects the log of a Manager, printed under name if the test
// fails.
func logBuffer(t *testing.T, name string) *slog.Logger {
	var (
		mu  sync.Mutex
		buf bytes.Buffer
	)
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			t.Logf("%s's log:\n%s", name, buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// exitCode is the exit code a main would pick for Wait's result.
func exitCode(err error) int {
	if err != nil {
		return 1
	}
	return 0
}
