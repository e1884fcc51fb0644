package shutdown

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// upgradeRequest is what a WebSocket-like client sends.
const upgradeRequest = "GET /ws HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n"

// upgrade hijacks the request's connection and answers 101, as a WebSocket
// library does, then hands the connection to serve on a goroutine of its
// own and returns at once.
func upgrade(t *testing.T, serve func(c net.Conn, r *bufio.Reader)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack() = %v", err)
			return
		}
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
		if err := brw.Flush(); err != nil {
			t.Errorf("writing the 101: %v", err)
		}
		go serve(c, brw.Reader)
	})
}

// dialUpgraded opens a connection to addr and upgrades it.
func dialUpgraded(t *testing.T, c net.Conn) *bufio.Reader {
	t.Helper()
	if _, err := io.WriteString(c, upgradeRequest); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v; want 101", resp, err)
	}
	return br
}

// readLine reads one line, or says why it could not.
func readLine(br *bufio.Reader) string {
	s, err := br.ReadString('\n')
	if err != nil {
		return err.Error()
	}
	return strings.TrimSuffix(s, "\n")
}

// TestHTTPServerWaitsForHijackedConnections checks a WebSocket-like
// connection: its handler returns at once, a goroutine keeps the
// connection, says goodbye when Context is cancelled and closes it after
// the client's reply. The hook waits for that close and returns nil.
func TestHTTPServerWaitsForHijackedConnections(t *testing.T) {
	m := newTest()
	closing := make(chan struct{})
	srv := &http.Server{Handler: m.Handler(upgrade(t, func(c net.Conn, r *bufio.Reader) {
		if nc, ok := c.(interface{ NetConn() net.Conn }); !ok {
			t.Errorf("hijacked connection %T has no NetConn method", c)
		} else if _, ok := nc.NetConn().(*net.TCPConn); !ok {
			t.Error("hijacked connection: NetConn() is not the server's *net.TCPConn")
		}
		io.WriteString(c, "hello\n")
		<-m.Context().Done()
		io.WriteString(c, "going away\n")
		readLine(r) // the client's reply, or its close
		close(closing)
		c.Close()
	}))}
	drain := HTTPServer(srv)
	m.Add("http", func(ctx context.Context) error {
		err := drain(ctx)
		select {
		case <-closing:
		default:
			t.Error("hook returned before the hijacked connection was closed")
		}
		return err
	})
	c, err := net.Dial("tcp", serve(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // hang guard
	br := dialUpgraded(t, c)
	if got := readLine(br); got != "hello" {
		t.Fatalf("first line = %q, want hello", got)
	}
	m.Trigger()
	if got := readLine(br); got != "going away" {
		t.Errorf("line at shutdown = %q, want going away", got)
	}
	io.WriteString(c, "bye\n")
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after goodbye: Read() = %d, %v; want 0, EOF", n, err)
	}
}

// TestHTTPServerClosesHijackedConnectionsAtDeadline checks a client and a
// handler that ignore shutdown: the hook closes the hijacked connection at
// its deadline and its error gives the count. Also when Handler sits inside
// middleware whose writer has only Unwrap, and the connection is hijacked
// through http.ResponseController, as gorilla/websocket and
// coder/websocket hijack.
func TestHTTPServerClosesHijackedConnectionsAtDeadline(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(http.Handler) http.Handler
	}{
		{"direct", func(h http.Handler) http.Handler { return h }},
		{"under Unwrap-only middleware", unwrapOnly},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newTest()
			ended := make(chan struct{})
			srv := &http.Server{Handler: tc.wrap(m.Handler(upgrade(t, func(c net.Conn, r *bufio.Reader) {
				defer close(ended)
				io.Copy(io.Discard, r) // until the connection is closed
			})))}
			m.Add("http", HTTPServer(srv), Timeout(deadlineTestTimeout))
			c, err := net.Dial("tcp", serve(t, srv))
			if err != nil {
				t.Fatal(err)
			}
			// Closing it ends the handler's copy, should the hook not have.
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second)) // hang guard
			br := dialUpgraded(t, c)
			m.Trigger()
			err = m.Wait()
			var he *HookError
			const want = "http server: closed 1 hijacked connection still open at the deadline: context deadline exceeded"
			if !errors.As(err, &he) || he.Err.Error() != want || !errors.Is(err, ErrTimeout) {
				// Untracked, the connection is still open: reading it
				// would wait for the hang guard.
				t.Fatalf("Wait() = %v, want ErrTimeout from hook http: %q", err, want)
			}
			if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Errorf("hijacked connection after the deadline: Read() = %d, %v; want 0, EOF (closed by the hook)", n, err)
			}
			<-ended
		})
	}
}

// TestHTTPServerWaitsForHijackedConnectionsUpToBound checks, on a fake clock, that a
// hijacked connection nobody closes holds the hook exactly to its bound,
// and that one closed by the application is waited for while the drain
// has nothing else left: the hook returns the moment it closes.
func TestHTTPServerWaitsForHijackedConnectionsUpToBound(t *testing.T) {
	for _, appCloses := range []bool{true, false} {
		name := "closed by the application"
		if !appCloses {
			name = "closed at the deadline"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := newTest()
				release := make(chan struct{})
				srv := &http.Server{Handler: m.Handler(upgrade(t, func(c net.Conn, r *bufio.Reader) {
					if appCloses {
						<-release
						c.Close()
						return
					}
					io.Copy(io.Discard, r)
				}))}
				const bound = 10 * time.Second
				m.Add("http", HTTPServer(srv), Timeout(bound))
				c := servePipe(t, srv).dial(t)
				defer c.Close()
				dialUpgraded(t, c)
				m.Trigger()
				start := time.Now()
				// Fake time: every goroutine is blocked, the clock
				// jumps. A hook that did not track the connection would
				// have returned within this second.
				time.Sleep(time.Second)
				select {
				case <-m.Done():
					t.Error("shutdown ended while a hijacked connection was open")
				default:
				}
				close(release)
				err := m.Wait()
				elapsed := time.Since(start)
				if appCloses {
					if err != nil || elapsed != time.Second {
						t.Errorf("Wait() = %v after %v; want nil after 1s, the moment the connection closed", err, elapsed)
					}
					return
				}
				if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "closed 1 hijacked connection") {
					t.Errorf("Wait() = %v, want ErrTimeout with the count", err)
				}
				if elapsed > bound {
					t.Errorf("Wait() returned after %v, want within the hook's %v bound", elapsed, bound)
				}
			})
		})
	}
}

// TestHandlerTracksHijacksPerServer checks that Handler, inside other
// middleware, gives each hijacked connection to its own server's hook: a
// drain of another server does not wait for it, and Handler on a server
// that HTTPServer does not drain hands out the server's own connection.
func TestHandlerTracksHijacksPerServer(t *testing.T) {
	m := newTest()
	finish(t, m)
	type key struct{}
	release := make(chan struct{})
	closing := make(chan struct{})
	hijacked := make(chan net.Conn, 2)
	inner := m.Handler(upgrade(t, func(c net.Conn, r *bufio.Reader) {
		hijacked <- c
		<-release
		close(closing)
		c.Close()
	}))
	// Middleware that passes the writer on and adds to the context.
	outer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), key{}, "x")))
	})
	a, b := &http.Server{Handler: outer}, &http.Server{Handler: outer}
	drainA, drainB := HTTPServer(a), HTTPServer(b)
	c, err := net.Dial("tcp", serve(t, a))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // hang guard
	dialUpgraded(t, c)
	if _, ok := (<-hijacked).(interface{ NetConn() net.Conn }); !ok {
		t.Error("connection hijacked on a drained server is not tracked")
	}
	serve(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // hang guard
	defer cancel()
	if err := drainB(ctx); err != nil {
		t.Errorf("drain of the other server = %v, want nil", err)
	}
	done := make(chan error, 1)
	go func() {
		err := drainA(ctx)
		select {
		case <-closing:
		default:
			err = errors.New("returned before the hijacked connection was closed")
		}
		done <- err
	}()
	close(release)
	if err := <-done; err != nil {
		t.Errorf("drain of the server = %v, want nil", err)
	}

	// Without HTTPServer: the server's own connection, not tracked.
	plain := &http.Server{Handler: outer}
	c2, err := net.Dial("tcp", serve(t, plain))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	release = make(chan struct{})
	closing = make(chan struct{})
	dialUpgraded(t, c2)
	if _, ok := (<-hijacked).(*net.TCPConn); !ok {
		t.Error("Handler without HTTPServer changed the hijacked connection")
	}
	close(release)
}

// unwrapOnly is middleware written the way Go 1.20's ResponseController
// asks: its writer adds Unwrap and none of the optional interfaces, so
// handlers reach Hijack and Flush through http.ResponseController.
func unwrapOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(statusWriter{w}, r)
	})
}

type statusWriter struct{ http.ResponseWriter }

func (w statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ginStyleWriter is the ResponseWriter of routers such as gin: it always
// has a Hijack method, which asserts that the writer it wraps can hijack,
// and so panics over HTTP/2.
type ginStyleWriter struct{ http.ResponseWriter }

func (w ginStyleWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.ResponseWriter.(http.Hijacker).Hijack()
}

// recovering is the router's recovery middleware: a handler's panic
// becomes a 500.
func recovering(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if recover() != nil {
				w.WriteHeader(http.StatusInternalServerError)
			}
		}()
		h.ServeHTTP(ginStyleWriter{w}, r)
	})
}

// TestHTTPServerDrainsAfterHijackPanicked checks a WebSocket route, wrapped
// by Handler inside a gin-style router, that gets a request over HTTP/2
// (h2c): the upgrade's Hijack panics in the router's writer and the router
// recovers with a 500. Nothing is hijacked and nothing stays open, so the
// hook returns nil once the HTTP/2 connection has closed after GOAWAY
// (about 1 s), within its 5 s timeout, rather than wait for its deadline.
func TestHTTPServerDrainsAfterHijackPanicked(t *testing.T) {
	m := newTest()
	ws := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, ok := w.(http.Hijacker); ok {
			h.Hijack() // panics: HTTP/2 has no hijacking
		}
	})
	srv := &http.Server{Handler: recovering(m.Handler(ws)), Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	m.Add("http", HTTPServer(srv), Timeout(5*time.Second))
	addr := serve(t, srv)

	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get("http://" + addr + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || resp.ProtoMajor != 2 {
		t.Fatalf("GET /ws: %s %s, want HTTP/2.0 500", resp.Proto, resp.Status)
	}
	m.Trigger()
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
}

// TestHandlerHijackedConnKeepsHalfClose checks that a connection hijacked
// through Handler, on a server that HTTPServer drains, still offers what
// the server's own connection offers to a tunnel (CONNECT proxies,
// WebSocket proxies): CloseWrite, to pass on a half-close, and ReadFrom /
// WriteTo, for splice(2) between two sockets. Without Handler the
// hijacked *net.TCPConn has all three; a net.Pipe connection has none,
// and behind Handler it still has no CloseWrite (ReadFrom and WriteTo copy).
// The tunnel sends with ReadFrom, half-closes, and receives with WriteTo
// until the client's own half-close or close.
func TestHandlerHijackedConnKeepsHalfClose(t *testing.T) {
	m := newTest()
	finish(t, m)
	const established = "HTTP/1.1 200 Connection established\r\n\r\n"
	tunnel := func(report chan<- string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				report <- err.Error()
				return
			}
			defer c.Close()
			cw, hasCW := c.(interface{ CloseWrite() error })
			rf, hasRF := c.(io.ReaderFrom)
			wt, hasWT := c.(io.WriterTo)
			report <- fmt.Sprintf("CloseWrite=%v ReadFrom=%v WriteTo=%v", hasCW, hasRF, hasWT)
			if !hasRF || !hasWT {
				return
			}
			if _, err := rf.ReadFrom(strings.NewReader(established)); err != nil {
				report <- "ReadFrom: " + err.Error()
				return
			}
			if hasCW {
				cw.CloseWrite()
			}
			var got strings.Builder
			if _, err := wt.WriteTo(&got); err != nil {
				report <- "WriteTo: " + err.Error()
				return
			}
			report <- got.String()
		})
	}
	for _, tc := range []struct {
		name string
		wrap func(http.Handler) http.Handler
		pipe bool
		want string
	}{
		{"TCP plain", func(h http.Handler) http.Handler { return h }, false, "CloseWrite=true ReadFrom=true WriteTo=true"},
		{"TCP Handler", m.Handler, false, "CloseWrite=true ReadFrom=true WriteTo=true"},
		{"pipe Handler", m.Handler, true, "CloseWrite=false ReadFrom=true WriteTo=true"},
	} {
		report := make(chan string, 2)
		srv := &http.Server{Handler: tc.wrap(tunnel(report))}
		m.Add("http "+tc.name, HTTPServer(srv))
		var c net.Conn
		if tc.pipe {
			c = servePipe(t, srv).dial(t)
		} else {
			var err error
			if c, err = net.Dial("tcp", serve(t, srv)); err != nil {
				t.Fatal(err)
			}
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second)) // hang guard
		go io.WriteString(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
		if got := <-report; got != tc.want {
			t.Errorf("%s: hijacked connection has %s, want %s", tc.name, got, tc.want)
			continue
		}
		b := make([]byte, len(established))
		if _, err := io.ReadFull(c, b); err != nil || string(b) != established {
			t.Errorf("%s: tunnel sent %q, %v; want %q", tc.name, b, err, established)
		}
		if tc.pipe {
			io.WriteString(c, "ping\n")
			c.Close()
		} else {
			// The server's half-close arrives as EOF, while it still reads.
			if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Errorf("%s: after the server's CloseWrite: Read() = %d, %v; want 0, EOF", tc.name, n, err)
			}
			io.WriteString(c, "ping\n")
			c.(*net.TCPConn).CloseWrite()
		}
		if got := <-report; got != "ping\n" {
			t.Errorf("%s: tunnel received %q, want ping", tc.name, got)
		}
	}
}

// lateHijacker is middleware whose writer still has work to do after the
// server has handed the connection over (wrapping it to count bytes, say):
// it tells hijacked when the server's Hijack has returned, and returns the
// connection only once release is closed.
type lateHijacker struct {
	http.ResponseWriter
	hijacked chan<- struct{}
	release  <-chan struct{}
}

func (w lateHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	close(w.hijacked)
	<-w.release
	return c, brw, err
}

// TestHTTPServerClosesConnectionHijackedAfterDeadline checks, on a fake
// clock, a Hijack under way through Handler when the hook's deadline comes
// and ending after it: the server has already let go of the connection,
// so nothing but the hook could close it, and the hook has returned. The
// connection is closed as the Hijack ends.
func TestHTTPServerClosesConnectionHijackedAfterDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest()
		hijacked, release, ended := make(chan struct{}), make(chan struct{}), make(chan struct{})
		h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("Hijack() = %v", err)
				return
			}
			defer close(ended)
			io.Copy(io.Discard, c) // until the connection is closed
		}))
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(lateHijacker{w, hijacked, release}, r)
		})}
		m.Add("http", HTTPServer(srv), Timeout(time.Second))
		c := servePipe(t, srv).dial(t)
		defer c.Close()
		io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: test\r\n\r\n")
		<-hijacked
		m.Trigger()
		err := m.Wait()
		var he *HookError
		const want = "http server: closed at the deadline: context deadline exceeded"
		if !errors.As(err, &he) || he.Err.Error() != want {
			t.Errorf("Wait() = %v, want ErrTimeout from hook http: %q", err, want)
		}
		close(release)
		c.SetReadDeadline(time.Now().Add(time.Hour)) // fake time: at once if nobody closes it
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("connection hijacked after the deadline: Read() = %d, %v; want 0, EOF", n, err)
		}
		c.Close() // ends the handler's copy, should the connection be open
		<-ended
	})
}
