package shutdown

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// answers lists which of the six optional interfaces w has, by a type
// assertion each, as a framework asks.
func answers(w http.ResponseWriter) string {
	var has []string
	if _, ok := w.(http.Flusher); ok {
		has = append(has, "Flusher")
	}
	if _, ok := w.(http.Hijacker); ok {
		has = append(has, "Hijacker")
	}
	//lint:ignore SA1019 frameworks assert it
	if _, ok := w.(http.CloseNotifier); ok {
		has = append(has, "CloseNotifier")
	}
	if _, ok := w.(io.ReaderFrom); ok {
		has = append(has, "ReaderFrom")
	}
	if _, ok := w.(io.StringWriter); ok {
		has = append(has, "StringWriter")
	}
	if _, ok := w.(http.Pusher); ok {
		has = append(has, "Pusher")
	}
	return strings.Join(has, " ")
}

// TestHandlerWriterAnswersAsServerWriters checks, on net/http's real
// writers (HTTP/1.1, HTTP/2 over TLS, HTTP/2 without TLS through
// Protocols), that the writer a handler sees behind Handler has each of the
// six optional interfaces exactly when the server's own writer has it. The
// server's answers are read, not written down here, so a Go release that
// changes its writers fails this test if Handler does not follow.
func TestHandlerWriterAnswersAsServerWriters(t *testing.T) {
	m := newTest()
	finish(t, m)
	got := make(map[string][2]string) // protocol -> server's writer, Handler's
	for _, proto := range []string{"HTTP/1.1", "HTTP/2 over TLS", "HTTP/2 without TLS"} {
		var seen [2]string
		inner := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen[1] = answers(w)
			io.WriteString(w, r.Proto)
		}))
		ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen[0] = answers(w)
			inner.ServeHTTP(w, r)
		}))
		var c *http.Client
		switch proto {
		case "HTTP/1.1":
			ts.Start()
			c = ts.Client()
		case "HTTP/2 over TLS":
			ts.EnableHTTP2 = true
			ts.StartTLS()
			c = ts.Client()
		case "HTTP/2 without TLS":
			ts.Config.Protocols = new(http.Protocols)
			ts.Config.Protocols.SetUnencryptedHTTP2(true)
			ts.Start()
			tr := &http.Transport{Protocols: new(http.Protocols)}
			tr.Protocols.SetUnencryptedHTTP2(true)
			c = &http.Client{Transport: tr, Timeout: 30 * time.Second}
		}
		resp, err := c.Get(ts.URL)
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.CloseIdleConnections()
		ts.Close()
		if want := strings.Fields(proto)[0]; !strings.HasPrefix(string(b), want) {
			t.Fatalf("%s: handler saw %q, want %s", proto, b, want)
		}
		got[proto] = seen
		t.Logf("%s: the server's writer has %q", proto, seen[0])
		if seen[1] != seen[0] {
			t.Errorf("%s: behind Handler the writer has %q, want %q as the server's", proto, seen[1], seen[0])
		}
	}
	// The comparison means something only if the writers differ.
	if got["HTTP/1.1"][0] == got["HTTP/2 over TLS"][0] {
		t.Errorf("HTTP/1.1 and HTTP/2 writers both have %q: the test no longer tells them apart", got["HTTP/1.1"][0])
	}
}

// everyMethod is a ResponseWriter with all six optional interfaces, which
// notes each call.
type everyMethod struct {
	httptest.ResponseRecorder
	calls  []string
	notify chan bool
}

func (w *everyMethod) Flush() { w.calls = append(w.calls, "Flush") }
func (w *everyMethod) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.calls = append(w.calls, "Hijack")
	return nil, nil, nil
}
func (w *everyMethod) CloseNotify() <-chan bool { return w.notify }
func (w *everyMethod) ReadFrom(r io.Reader) (int64, error) {
	w.calls = append(w.calls, "ReadFrom")
	return io.Copy(io.Discard, r)
}
func (w *everyMethod) WriteString(s string) (int, error) {
	w.calls = append(w.calls, "WriteString")
	return len(s), nil
}
func (w *everyMethod) Push(string, *http.PushOptions) error {
	w.calls = append(w.calls, "Push")
	return nil
}

// noMethod is a ResponseWriter with none of the six and no Unwrap.
type noMethod struct{ h http.Header }

func (w noMethod) Header() http.Header         { return w.h }
func (w noMethod) Write(p []byte) (int, error) { return len(p), nil }
func (w noMethod) WriteHeader(int)             {}

// setNames says which interfaces a method set has, as answers does.
func setNames(set int) string {
	var has []string
	for i, name := range []string{"Flusher", "Hijacker", "CloseNotifier", "ReaderFrom", "StringWriter", "Pusher"} {
		if set&(1<<i) != 0 {
			has = append(has, name)
		}
	}
	return strings.Join(has, " ")
}

// TestHandlerWriterTableMatchesItsIndex checks each of the 64 writers that
// Handler may hand out: it has exactly the interfaces its index names, its
// methods reach the wrapped writer's, and a handler behind Handler, given
// a writer with that method set, sees the same set.
func TestHandlerWriterTableMatchesItsIndex(t *testing.T) {
	m := newTest()
	finish(t, m)
	r := httptest.NewRequest("GET", "/", nil)
	for set := range 64 {
		want := setNames(set)
		under := &everyMethod{ResponseRecorder: *httptest.NewRecorder(), notify: make(chan bool)}
		w := writers[set](&fullWriter{drainWriter{ResponseWriter: under, m: m, r: r}})
		if got := answers(w); got != want {
			t.Errorf("writers[%d] has %q, want %q", set, got, want)
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		if h, ok := w.(http.Hijacker); ok {
			h.Hijack()
		}
		//lint:ignore SA1019 frameworks assert it
		if c, ok := w.(http.CloseNotifier); ok && c.CloseNotify() != under.notify {
			t.Errorf("writers[%d]: CloseNotify is not the wrapped writer's", set)
		}
		if rf, ok := w.(io.ReaderFrom); ok {
			rf.ReadFrom(strings.NewReader("x"))
		}
		if sw, ok := w.(io.StringWriter); ok {
			sw.WriteString("x")
		}
		if p, ok := w.(http.Pusher); ok {
			p.Push("/x", nil)
		}
		method := map[string]string{"Flusher": "Flush", "Hijacker": "Hijack", "ReaderFrom": "ReadFrom", "StringWriter": "WriteString", "Pusher": "Push"}
		var wantCalls []string
		for _, name := range strings.Fields(want) {
			if name != "CloseNotifier" {
				wantCalls = append(wantCalls, method[name])
			}
		}
		if got, want := strings.Join(under.calls, " "), strings.Join(wantCalls, " "); got != want {
			t.Errorf("writers[%d]: the wrapped writer saw calls %q, want %q", set, got, want)
		}

		// Through Handler: the writer it gets has the method set, and
		// no Unwrap to a writer with more.
		raw := writers[set](&fullWriter{drainWriter{ResponseWriter: noMethod{http.Header{}}, m: m, r: r}})
		var seen string
		m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen = answers(w)
		})).ServeHTTP(raw, r)
		if seen != want {
			t.Errorf("behind Handler, over a writer that has %q, the handler saw %q", want, seen)
		}
	}
}

// TestHandlerCloseNotifyFiresOnClientDisconnect checks what gin's
// Context.Stream and echo do, w.(http.CloseNotifier) unchecked, behind
// Handler over HTTP/1.1 and HTTP/2: the assertion holds and the channel
// fires when the client goes away.
func TestHandlerCloseNotifyFiresOnClientDisconnect(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name := "HTTP/1.1"
		if h2 {
			name = "HTTP/2"
		}
		t.Run(name, func(t *testing.T) {
			m := newTest()
			finish(t, m)
			entered, fired := make(chan bool, 1), make(chan struct{})
			ts := httptest.NewUnstartedServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				cn, ok := w.(http.CloseNotifier) //lint:ignore SA1019 frameworks assert it
				entered <- ok
				if !ok {
					return
				}
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush()
				select {
				case <-cn.CloseNotify():
					close(fired)
				case <-time.After(30 * time.Second): // hang guard
				}
			})))
			ts.EnableHTTP2 = h2
			ts.StartTLS()
			defer ts.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL, nil)
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if !<-entered {
				t.Fatal("behind Handler, the writer is not an http.CloseNotifier")
			}
			cancel() // the client goes away
			select {
			case <-fired:
			case <-time.After(30 * time.Second): // hang guard
				t.Fatal("CloseNotify did not fire after the client went away")
			}
		})
	}
}

// TestHandlerMarksAfterFlushThatCannotFlush checks a handler behind
// Handler that flushes through http.ResponseController where the writer
// Handler got cannot flush (http.TimeoutHandler's buffers the response),
// then writes once shutdown has started: nothing was written by the flush,
// so the response still gets "Connection: close".
func TestHandlerMarksAfterFlushThatCannotFlush(t *testing.T) {
	m := newTest()
	finish(t, m)
	flushErr := make(chan error, 1)
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		flushErr <- http.NewResponseController(w).Flush()
		<-m.Stopping()
		io.WriteString(w, "ok")
	}))
	ts := httptest.NewServer(http.TimeoutHandler(h, time.Minute, "timed out"))
	defer ts.Close()
	got := make(chan fetched, 1)
	go func() { got <- fetch(client(t), ts.URL) }()
	if err := <-flushErr; !errors.Is(err, http.ErrNotSupported) {
		t.Fatalf("Flush() = %v, want http.ErrNotSupported behind http.TimeoutHandler", err)
	}
	m.Trigger()
	f := <-got
	if f.err != nil || f.body != "ok" || !f.closing {
		t.Errorf("response after shutdown started: %q, closing %v, %v; want \"ok\" with Connection: close", f.body, f.closing, f.err)
	}
}
