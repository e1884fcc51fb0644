package shutdown

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// bufferedConn reads the bytes already buffered first, as the connection
// that h2c.NewHandler hands x/net's ServeConn does: a wrapper of the
// hijacked connection, with its addresses.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// fakeH2C serves over a connection it hijacks, as x/net's h2c handler
// (h2c.NewHandler with an http2.Server not configured on the server) does,
// without x/net, which the root module cannot import: it hijacks through
// the writer it gets and reports StateActive and StateIdle for the
// connection it serves (the hijacked one itself, or a bufferedConn over it
// if wrap) through the server's ConnState, and nothing else: no GOAWAY
// from Shutdown. A request is a line "n"; its response is n lines of 1 KiB,
// which it writes into a buffer, then reports the connection idle, then
// flushes on a goroutine of its own, in x/net's order; that goroutine
// starts writing a millisecond later, to make the order certain on the fake
// clock. hold, if not nil, runs before each response.
func fakeH2C(t *testing.T, wrap bool, hold func()) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hc, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack() = %v", err)
			return
		}
		var c net.Conn = hc
		if wrap {
			c = &bufferedConn{hc, brw.Reader}
		}
		defer c.Close()
		report := r.Context().Value(http.ServerContextKey).(*http.Server).ConnState
		report(c, http.StateActive) // the preface
		report(c, http.StateIdle)
		in, out := bufio.NewReader(brw.Reader), bufio.NewWriterSize(c, 64<<10)
		flushed := make(chan struct{})
		close(flushed)
		for {
			line, err := in.ReadString('\n')
			if err != nil {
				return
			}
			n, _ := strconv.Atoi(strings.TrimSpace(line))
			report(c, http.StateActive)
			if hold != nil {
				hold()
			}
			<-flushed
			for i := range n {
				fmt.Fprintf(out, "%-1023d\n", i)
			}
			report(c, http.StateIdle) // the last frame is in the buffer
			flushed = make(chan struct{})
			go func(done chan struct{}) {
				time.Sleep(time.Millisecond)
				out.Flush()
				close(done)
			}(flushed)
		}
	})
}

// h2cClient opens a connection on ln that the server hands to fakeH2C.
func h2cClient(t *testing.T, ln *pipeListener) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := ln.dial(t)
	if _, err := io.WriteString(c, "GET /h2c HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// ask sends a request for n lines on an h2c connection and reads the
// response from br; it says what went wrong, if anything.
func ask(c net.Conn, br *bufio.Reader, n int) error {
	if _, err := fmt.Fprintf(c, "%d\n", n); err != nil {
		return err
	}
	for i := range n {
		line, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("line %d of %d: %w", i, n, err)
		}
		if got, _ := strconv.Atoi(strings.TrimSpace(line)); got != i || len(line) != 1024 {
			return fmt.Errorf("line %d of %d: %.20q...", i, n, line)
		}
	}
	return nil
}

// TestHTTPServerClosesIdleH2CConnection checks, on a fake clock, an h2c
// connection served over a connection hijacked through Handler that is
// idle when the hook starts: once h2cFlushGrace has passed with no GOAWAY
// written (x/net sends none without http2.ConfigureServer), the hook
// closes it (net.Pipe cannot shut its writing side alone, and nothing was
// written since it went idle) and returns nil, rather than wait for it to
// its deadline. Both
// when x/net is handed the hijacked connection itself and a wrapper of it.
func TestHTTPServerClosesIdleH2CConnection(t *testing.T) {
	for _, wrap := range []bool{false, true} {
		name := "hijacked connection"
		if wrap {
			name = "wrapper of the hijacked connection"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := newTest()
				srv := &http.Server{Handler: m.Handler(fakeH2C(t, wrap, nil))}
				m.Add("http", HTTPServer(srv), Timeout(10*time.Second))
				c, br := h2cClient(t, servePipe(t, srv))
				defer c.Close()
				if err := ask(c, br, 3); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Second) // idle for a second of the fake clock
				start := time.Now()
				m.Trigger()
				if err := m.Wait(); err != nil || time.Since(start) != h2cFlushGrace {
					t.Errorf("Wait() = %v after %v; want nil after %v", err, time.Since(start), h2cFlushGrace)
				}
				if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Errorf("h2c connection after the hook: Read() = %d, %v; want 0, EOF", n, err)
				}
			})
		})
	}
}

// TestHTTPServerLetsH2CStreamFinish checks, on a fake clock, an h2c
// stream in flight when the hook starts, read by a slow client: it
// finishes with all its bytes (x/net flushes the last of them after it
// reports the connection idle, in a write that outlasts h2cFlushGrace),
// and the hook, which cannot shut a net.Pipe's writing side alone,
// closes the connection and returns nil h2cLinger after the last write
// has returned.
func TestHTTPServerLetsH2CStreamFinish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest()
		entered, release := make(chan struct{}, 1), make(chan struct{})
		srv := &http.Server{Handler: m.Handler(fakeH2C(t, true, func() {
			entered <- struct{}{}
			<-release
		}))}
		var hookReturned time.Time
		m.Add("http", timedHook(HTTPServer(srv), &hookReturned), Timeout(20*time.Second))
		c, _ := h2cClient(t, servePipe(t, srv))
		defer c.Close()
		var readAll time.Time
		got := make(chan error, 1)
		go func() {
			err := ask(c, bufio.NewReader(&pacedReader{r: c}), 200) // 4s to read 200 KiB
			readAll = time.Now()
			got <- err
		}()
		<-entered
		m.Trigger()
		time.Sleep(time.Second) // the stream runs a second into the hook
		select {
		case <-m.Done():
			t.Fatal("shutdown ended while an h2c stream was in flight")
		default:
		}
		close(release)
		if err := <-got; err != nil {
			t.Errorf("stream in flight: %v", err)
		}
		if err := m.Wait(); err != nil {
			t.Errorf("Wait() = %v, want nil", err)
		}
		if d := hookReturned.Sub(readAll); d != h2cLinger {
			t.Errorf("hook returned %v after the stream's last write; want %v", d, h2cLinger)
		}
	})
}

// TestHTTPServerTrustsItselfBesideH2C checks, on a fake clock, that
// x/net's reports for the connection it serves over a hijacked one (never
// reported StateNew by the server) leave the hook trusting its list of the
// server's connections: an HTTP/1.1 response in flight beside an h2c
// connection ends the hook the moment it is written, not at Shutdown's
// next poll.
func TestHTTPServerTrustsItselfBesideH2C(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTest()
		entered, release := make(chan struct{}), make(chan struct{})
		mux := http.NewServeMux()
		mux.Handle("/h2c", fakeH2C(t, true, nil))
		mux.HandleFunc("/held", func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			<-release
			io.WriteString(w, "held ok")
		})
		srv := &http.Server{Handler: m.Handler(mux)}
		var hookReturned time.Time
		m.Add("http", timedHook(HTTPServer(srv), &hookReturned), Timeout(10*time.Second))
		ln := servePipe(t, srv)
		h2, br := h2cClient(t, ln)
		if err := ask(h2, br, 3); err != nil {
			t.Fatal(err)
		}
		h2.Close() // the client leaves; x/net's reports remain
		c := ln.dial(t)
		defer c.Close()
		got := make(chan error, 1)
		go func() {
			io.WriteString(c, "GET /held HTTP/1.1\r\nHost: test\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				got <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			if string(b) != "held ok" {
				err = errors.New("body " + strconv.Quote(string(b)))
			}
			got <- err
		}()
		<-entered
		m.Trigger()
		time.Sleep(3 * time.Second) // Shutdown's poll has slowed to every 500ms
		released := time.Now()
		close(release)
		if err := <-got; err != nil {
			t.Errorf("HTTP/1.1 response in flight: %v", err)
		}
		if err := m.Wait(); err != nil {
			t.Errorf("Wait() = %v, want nil", err)
		}
		if d := hookReturned.Sub(released); d != 0 {
			t.Errorf("hook returned %v after the last response was written; want at once", d)
		}
	})
}

// duplexPipe is one end of a connection made of two net.Pipes, one each
// way, so that either end can shut its writing side alone, as over TCP.
type duplexPipe struct {
	r, w net.Conn // the reading end of one pipe, the writing end of the other
}

func (p *duplexPipe) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *duplexPipe) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *duplexPipe) CloseWrite() error           { return p.w.Close() }
func (p *duplexPipe) Close() error                { p.w.Close(); return p.r.Close() }
func (p *duplexPipe) LocalAddr() net.Addr         { return pipeAddr{} }
func (p *duplexPipe) RemoteAddr() net.Addr        { return pipeAddr{} }
func (p *duplexPipe) SetDeadline(t time.Time) error {
	p.r.SetDeadline(t)
	return p.w.SetDeadline(t)
}
func (p *duplexPipe) SetReadDeadline(t time.Time) error  { return p.r.SetReadDeadline(t) }
func (p *duplexPipe) SetWriteDeadline(t time.Time) error { return p.w.SetWriteDeadline(t) }

// dialDuplex connects a client to the server that accepts on l, over a
// connection that either end can half-close, and opens h2c on it.
func (l *pipeListener) dialDuplex(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	up, upServer := net.Pipe()
	downServer, down := net.Pipe()
	c := &duplexPipe{r: down, w: up}
	select {
	case l.conns <- &duplexPipe{r: upServer, w: downServer}:
	case <-l.done:
		t.Fatal("dial: listener closed")
	}
	if _, err := io.WriteString(c, "GET /h2c HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// TestHTTPServerShutsIdleH2CConnectionForClientToClose checks, on a fake
// clock, an h2c connection that can be half-closed (TCP), whose stream in
// flight at the shutdown ends, under a client that is still sending: once
// the stream's last write has returned, the hook shuts the connection's writing
// side rather than close it, so that the client reads to the end and the
// server still reads what the client sends (over TCP, a socket closed
// under a sending client resets the connection, and the kernel drops the
// bytes it has not sent yet), and drops the server's answer to a request
// sent then. It returns the moment the client closes the connection, or
// h2cLinger after the end if the client never does, even with nothing
// more written or reported on the connection to wake it.
func TestHTTPServerShutsIdleH2CConnectionForClientToClose(t *testing.T) {
	for _, clientCloses := range []bool{true, false} {
		name := "client sends, then closes"
		if !clientCloses {
			name = "client keeps it open, silent"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := newTest()
				entered, release := make(chan struct{}, 2), make(chan struct{})
				srv := &http.Server{Handler: m.Handler(fakeH2C(t, true, func() {
					entered <- struct{}{}
					<-release
				}))}
				var hookReturned time.Time
				m.Add("http", timedHook(HTTPServer(srv), &hookReturned), Timeout(10*time.Second))
				c, br := servePipe(t, srv).dialDuplex(t)
				defer c.Close()
				got := make(chan error, 1)
				go func() { got <- ask(c, br, 3) }()
				<-entered
				m.Trigger()
				synctest.Wait() // Shutdown has returned: the stream alone holds the hook
				close(release)
				if err := <-got; err != nil {
					t.Fatalf("stream in flight: %v", err)
				}
				if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Fatalf("h2c connection at the hook: Read() = %d, %v; want 0, EOF", n, err)
				}
				ended := time.Now()
				if clientCloses {
					if _, err := io.WriteString(c, "2\n"); err != nil {
						t.Errorf("client sending after the end of the server's stream: %v; want the server to read it", err)
					}
					time.Sleep(10 * time.Millisecond) // the server answers, into the void
				}
				synctest.Wait()
				select {
				case <-m.Done():
					t.Fatal("shutdown ended with the client's side of the connection open")
				default:
				}
				want := ended.Add(h2cLinger)
				if clientCloses {
					want = time.Now()
					c.Close()
				}
				if err := m.Wait(); err != nil {
					t.Errorf("Wait() = %v, want nil", err)
				}
				if !hookReturned.Equal(want) {
					t.Errorf("hook returned %v after the end of the connection's stream; want %v", hookReturned.Sub(ended), want.Sub(ended))
				}
			})
		})
	}
}
