package shutdown

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"
)

// serve runs srv on a loopback listener until the test ends and returns
// its address.
func serve(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, srv, ln)
	return ln.Addr().String()
}

// serveOn runs srv on ln until the test ends.
func serveOn(t *testing.T, srv *http.Server, ln net.Listener) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

// client returns an HTTP client of the test's own, whose connections end
// with the test.
func client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// fetched is what fetch saw of one response.
type fetched struct {
	body    string
	closing bool // the response asked to close the connection
	reused  bool // it came on a reused connection
	err     error
}

// fetch GETs url; it may run on any goroutine.
func fetch(c *http.Client, url string) (f fetched) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return fetched{err: err}
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { f.reused = i.Reused },
	}))
	resp, err := c.Do(req)
	if err != nil {
		return fetched{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		f.err = fmt.Errorf("GET %s: reading the body: %w", url, err)
	case resp.StatusCode != http.StatusOK:
		f.err = fmt.Errorf("GET %s: status %d, want 200", url, resp.StatusCode)
	}
	// Go's client takes "Connection: close" out of the header into Close.
	f.body, f.closing = string(b), resp.Close
	return f
}

// get is fetch on the test's goroutine.
func get(t *testing.T, c *http.Client, url string) (body string, closing, reused bool) {
	t.Helper()
	f := fetch(c, url)
	if f.err != nil {
		t.Fatal(f.err)
	}
	return f.body, f.closing, f.reused
}

// finish triggers m, if no test did, and waits for its shutdown to end.
func finish(t *testing.T, m *Manager) {
	t.Cleanup(func() {
		m.Trigger()
		<-m.Done()
	})
}

// TestHandlerMarksRequestsInFlight checks that a request running when
// shutdown starts gets "Connection: close" in its response, and that the
// server then closes that keep-alive connection.
func TestHandlerMarksRequestsInFlight(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fast") })
	mux.HandleFunc("/held", func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		io.WriteString(w, "held")
	})
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	})
	for _, path := range []string{"/held", "/empty"} {
		t.Run(path, func(t *testing.T) {
			m := newTest()
			finish(t, m)
			srv := &http.Server{Handler: m.Handler(mux)}
			base := "http://" + serve(t, srv)
			c := client(t)
			if _, closing, _ := get(t, c, base+"/"); closing {
				t.Fatal("before shutdown: response asks to close the connection")
			}
			if _, _, reused := get(t, c, base+"/"); !reused {
				t.Fatal("before shutdown: keep-alive connection not reused")
			}
			got := make(chan fetched, 1)
			go func() { got <- fetch(c, base+path) }()
			<-entered
			m.Trigger()
			close(release)
			r := <-got
			if r.err != nil {
				t.Fatal(r.err)
			}
			if !r.reused || !r.closing {
				t.Errorf("in flight at Trigger: reused %v, Connection: close %v; want true, true", r.reused, r.closing)
			}
			if _, _, reused := get(t, c, base+"/"); reused {
				t.Error("after a Connection: close response the connection was reused")
			}
			release = make(chan struct{})
		})
	}
}

// TestHandlerIdleConnectionClosedAtDrainEnd checks that a keep-alive
// connection that stays idle through the drain delay is left open during
// it and closed cleanly (FIN, not RST) by HTTPServer at its end.
func TestHandlerIdleConnectionClosedAtDrainEnd(t *testing.T) {
	m := newTest(WithDrainDelay(200 * time.Millisecond))
	srv := &http.Server{Handler: m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))}
	m.Add("http", HTTPServer(srv))
	addr := serve(t, srv)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Close {
		t.Fatal("response before shutdown asks to close the connection")
	}
	m.Trigger()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // hang guard
	n, err := br.Read(make([]byte, 1))
	if n != 0 || err != io.EOF {
		t.Errorf("idle connection: Read() = %d, %v; want 0, EOF (a clean close)", n, err)
	}
	if m.Context().Err() == nil {
		t.Error("idle connection closed before the drain delay ended")
	}
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
}

// TestHandlerHTTP2 checks what Go's HTTP/2 server does with the header:
// the response does not carry it, and the server sends GOAWAY and closes
// the connection once its streams are done, so the client's next request
// opens a new connection.
func TestHandlerHTTP2(t *testing.T) {
	m := newTest()
	finish(t, m)
	entered, release := make(chan struct{}), make(chan struct{})
	var first string // the first connection's remote address
	closed := make(chan string, 16)
	ts := httptest.NewUnstartedServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(http.Hijacker); ok {
			t.Error("HTTP/2 writer is a Hijacker through Handler")
		}
		if r.URL.Path == "/held" {
			close(entered)
			<-release
		}
		io.WriteString(w, r.Proto)
	})))
	ts.EnableHTTP2 = true
	ts.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- c.RemoteAddr().String()
		}
	}
	ts.StartTLS()
	defer ts.Close()
	c := ts.Client()
	defer c.CloseIdleConnections()
	trace := func(addr *string) *httptrace.ClientTrace {
		return &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { *addr = i.Conn.LocalAddr().String() }}
	}
	do := func(path string, addr *string) *http.Response {
		req, _ := http.NewRequest("GET", ts.URL+path, nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace(addr)))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := do("/", &first); resp.ProtoMajor != 2 {
		t.Fatalf("client spoke %s, want HTTP/2", resp.Proto)
	}
	var second string
	done := make(chan *http.Response, 1)
	go func() { done <- do("/held", &second) }()
	<-entered
	m.Trigger()
	close(release)
	resp := <-done
	if second != first {
		t.Fatalf("request in flight went on a new connection %s, want %s", second, first)
	}
	if v, ok := resp.Header["Connection"]; ok {
		t.Errorf("HTTP/2 response carries Connection: %q", v)
	}
	select {
	case got := <-closed:
		if got != first {
			t.Errorf("server closed connection %s, want %s", got, first)
		}
	case <-time.After(30 * time.Second): // hang guard
		t.Fatal("server did not close the HTTP/2 connection after the response")
	}
	var third string
	do("/", &third)
	if third == first {
		t.Error("request after GOAWAY reused the old connection")
	}
}

// TestHandlerWriterInterfaces checks what a handler behind Handler can do
// with its ResponseWriter over HTTP/1.1: flush with a type assertion,
// reach the server's writer through http.ResponseController, and hijack.
func TestHandlerWriterInterfaces(t *testing.T) {
	m := newTest()
	finish(t, m)
	readA := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		f, ok := w.(http.Flusher)
		if !ok {
			t.Error("w is not an http.Flusher")
			return
		}
		if _, ok := w.(io.ReaderFrom); !ok {
			t.Error("w is not an io.ReaderFrom")
		}
		if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("ResponseController.SetWriteDeadline() = %v, want nil", err)
		}
		io.WriteString(w, "a")
		f.Flush()
		<-readA                                            // the client read "a": the flush reached it
		w.(io.ReaderFrom).ReadFrom(strings.NewReader("b")) // io.Copy would take strings.Reader.WriteTo
	})
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("Hijack() = %v", err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nraw ok")
		brw.Flush()
	})
	srv := &http.Server{Handler: m.Handler(mux)}
	base := "http://" + serve(t, srv)
	c := client(t)
	resp, err := c.Get(base + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, b); err != nil || string(b) != "a" {
		t.Fatalf("first flushed byte: %q, %v", b, err)
	}
	close(readA)
	if rest, _ := io.ReadAll(resp.Body); string(rest) != "b" {
		t.Errorf("rest of the stream = %q, want b", rest)
	}
	if body, _, _ := get(t, c, base+"/hijack"); body != "raw ok" {
		t.Errorf("hijacked response = %q, want raw ok", body)
	}
}

// TestHandlerKeepsPusherOverHTTP2 checks that Handler does not take away
// what the server's ResponseWriter offers over HTTP/2 with TLS: Go's HTTP/2
// writer implements http.Pusher, and http.ResponseController has no Push,
// so a handler can only find it with w.(http.Pusher). Push behind Handler
// answers as the server's own does (Go's client refuses pushes). Over
// HTTP/1.1 the writer cannot push, behind Handler or not.
func TestHandlerKeepsPusherOverHTTP2(t *testing.T) {
	m := newTest()
	finish(t, m)
	probe := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := w.(http.Pusher)
		fmt.Fprintf(w, "%s pusher=%v", r.Proto, ok)
		if ok {
			fmt.Fprintf(w, " Push: %v", p.Push("/style.css", nil))
		}
	})
	for _, h2 := range []bool{true, false} {
		var saw [2]string
		for i, h := range []http.Handler{probe, m.Handler(probe)} {
			ts := httptest.NewUnstartedServer(h)
			ts.EnableHTTP2 = h2
			ts.StartTLS()
			resp, err := ts.Client().Get(ts.URL)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			ts.Close()
			saw[i] = string(b)
		}
		want := "HTTP/1.1 pusher=false"
		if h2 {
			want = "HTTP/2.0 pusher=true Push: "
		}
		if !strings.HasPrefix(saw[0], want) {
			t.Fatalf("without Handler: handler saw %q, want %q...", saw[0], want)
		}
		if saw[1] != saw[0] {
			t.Errorf("behind Handler: handler saw %q, want %q as without it", saw[1], saw[0])
		}
	}
}

// TestHandlerKeepsUpgrade checks that a 101 response keeps its
// "Connection: Upgrade" during shutdown, and that 1xx informational
// responses leave the final header to be marked.
func TestHandlerKeepsUpgrade(t *testing.T) {
	m := newTest()
	finish(t, m)
	m.Trigger()
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		w.WriteHeader(http.StatusSwitchingProtocols)
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if got := w.Result().Header.Get("Connection"); got != "Upgrade" {
		t.Errorf("101 during shutdown: Connection: %q, want Upgrade", got)
	}
	srv := &http.Server{Handler: m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "ok")
	}))}
	if _, closing, _ := get(t, client(t), "http://"+serve(t, srv)); !closing {
		t.Error("200 after 103 during shutdown: no Connection: close")
	}
}

// nopWriter is a ResponseWriter that discards everything, for benchmarks.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// http1Like has the method set of net/http's HTTP/1.x writer.
type http1Like struct{ nopWriter }

func (w *http1Like) Flush()                                       {}
func (w *http1Like) Hijack() (net.Conn, *bufio.ReadWriter, error) { return nil, nil, nil }
func (w *http1Like) CloseNotify() <-chan bool                     { return nil }
func (w *http1Like) ReadFrom(r io.Reader) (int64, error)          { return 0, nil }
func (w *http1Like) WriteString(s string) (int, error)            { return len(s), nil }

// BenchmarkHandler measures what Handler adds to a request: the
// ResponseWriter wrapper, which marks the response once shutdown started,
// over a writer with none of the optional methods and over one with those
// of net/http's HTTP/1.x writer.
func BenchmarkHandler(b *testing.B) {
	m := newTest()
	defer func() { m.Trigger(); <-m.Done() }()
	srv := &http.Server{}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(nil) })
	r := httptest.NewRequest("GET", "/", nil)
	r = r.WithContext(context.WithValue(r.Context(), http.ServerContextKey, srv))
	for _, bc := range []struct {
		name string
		h    http.Handler
		w    http.ResponseWriter
	}{
		{"bare", ok, &nopWriter{h: http.Header{}}},
		{"Handler", m.Handler(ok), &nopWriter{h: http.Header{}}},
		{"Handler-HTTP1-writer", m.Handler(ok), &http1Like{nopWriter{h: http.Header{}}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.h.ServeHTTP(bc.w, r)
			}
		})
	}
}

// pipeListener is a listener of net.Pipe connections, for servers inside a
// testing/synctest bubble, where real sockets cannot live: there the
// clock is fake, so a test can tell "at once" from "after Shutdown's next
// poll" exactly.
type pipeListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// dial connects a client to the server that accepts on l.
func (l *pipeListener) dial(t *testing.T) net.Conn {
	t.Helper()
	c, s := net.Pipe()
	select {
	case l.conns <- s:
		return c
	case <-l.done:
		t.Fatal("dial: listener closed")
		return nil
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// servePipe runs srv on a pipe listener until the bubble's test ends.
func servePipe(t *testing.T, srv *http.Server) *pipeListener {
	ln := newPipeListener()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln
}

// BenchmarkHTTPServerConnState measures what HTTPServer's ConnState
// callback adds to a request on a keep-alive connection (StateActive, then
// StateIdle), from parallel connections.
func BenchmarkHTTPServerConnState(b *testing.B) {
	srv := &http.Server{}
	HTTPServer(srv)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c, s := net.Pipe()
		defer c.Close()
		defer s.Close()
		srv.ConnState(s, http.StateNew)
		for pb.Next() {
			srv.ConnState(s, http.StateActive)
			srv.ConnState(s, http.StateIdle)
		}
		srv.ConnState(s, http.StateClosed)
	})
}
