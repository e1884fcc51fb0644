//lint:file-ignore SA1019 x/net deprecated h2c and http2.Server, but connect-go and grpc-gateway still document them, and users run them.

package e2e

import (
	"bufio"
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
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// h2cServer serves mux behind h2c.NewHandler(mux, &http2.Server{}) inside
// m.Handler, the wiring connect-go and grpc-gateway document, on a
// loopback port, with HTTPServer's hook under a 5s timeout. It returns the
// address and where the hook's start and end are noted.
func h2cServer(t *testing.T, m *shutdown.Manager, mux http.Handler) (addr string, hook *[2]time.Time, hookErr *error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return h2cServerOn(t, m, mux, ln)
}

// h2cServerOn is h2cServer on ln.
func h2cServerOn(t *testing.T, m *shutdown.Manager, mux http.Handler, ln net.Listener) (addr string, hook *[2]time.Time, hookErr *error) {
	t.Helper()
	srv := &http.Server{Handler: m.Handler(h2c.NewHandler(mux, &http2.Server{}))}
	drain := shutdown.HTTPServer(srv)
	hook, hookErr = new([2]time.Time), new(error)
	m.Add("http", func(ctx context.Context) error {
		hook[0] = time.Now()
		err := drain(ctx)
		hook[1], *hookErr = time.Now(), err
		return err
	}, shutdown.Timeout(5*time.Second))
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	return ln.Addr().String(), hook, hookErr
}

// h2cClient is Go's HTTP/2 client with prior knowledge, over one connection.
func h2cClient(t *testing.T) *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func h2cGet(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.ProtoMajor != 2 {
		t.Fatalf("GET %s: %s, %v; want HTTP/2", url, resp.Proto, err)
	}
	return string(b)
}

const streamChunks, chunkSize = 20, 16 << 10

// h2cMux has / (a short answer), /stream (20 chunks of 16 KiB, 10 ms
// apart) and /held (answers once release is closed).
func h2cMux(entered chan<- struct{}, release <-chan struct{}) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		chunk := strings.Repeat("x", chunkSize)
		for range streamChunks {
			io.WriteString(w, chunk)
			http.NewResponseController(w).Flush()
			time.Sleep(10 * time.Millisecond) // a stream that takes 200ms
		}
	})
	mux.HandleFunc("/held", func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "held ok")
	})
	return mux
}

func newManager() *shutdown.Manager {
	return shutdown.New(shutdown.WithSignals(), shutdown.WithLogger(slog.New(slog.DiscardHandler)), shutdown.WithTimeout(10*time.Second))
}

// TestH2CIdleConnectionDoesNotHoldHook checks x/net's h2c under Handler
// with an h2c connection idle when shutdown starts: x/net sends no GOAWAY
// without http2.ConfigureServer, and the hook ends the connection (shuts
// its writing side, and Go's client closes it) once h2cFlushGrace (100ms)
// has passed with no GOAWAY written, rather than wait for it to its
// deadline.
func TestH2CIdleConnectionDoesNotHoldHook(t *testing.T) {
	m := newManager()
	addr, hook, hookErr := h2cServer(t, m, h2cMux(nil, nil))
	if got := h2cGet(t, h2cClient(t), "http://"+addr+"/"); got != "ok" {
		t.Fatalf("GET / = %q", got)
	}
	m.Trigger()
	err := m.Wait()
	d := hook[1].Sub(hook[0])
	t.Logf("x/net h2c, idle connection: hook returned %v after it started (err %v)", d.Round(time.Microsecond), *hookErr)
	if err != nil || d > 300*time.Millisecond {
		t.Errorf("Wait() = %v with the hook taking %v; want nil within 300ms", err, d)
	}
}

// TestH2CStreamInFlightFinishesThenHookReturns checks x/net's h2c under
// Handler with a stream in flight when shutdown starts: the client reads
// every byte, and the hook returns right after the stream's end.
func TestH2CStreamInFlightFinishesThenHookReturns(t *testing.T) {
	m := newManager()
	addr, hook, hookErr := h2cServer(t, m, h2cMux(nil, nil))
	c := h2cClient(t)
	h2cGet(t, c, "http://"+addr+"/") // the connection is up
	resp, err := c.Get("http://" + addr + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.Peek(1); err != nil { // the stream has begun
		t.Fatal(err)
	}
	m.Trigger()
	n, err := io.Copy(io.Discard, br)
	lastRead := time.Now()
	if err != nil || n != streamChunks*chunkSize {
		t.Errorf("stream in flight: read %d of %d bytes, %v", n, streamChunks*chunkSize, err)
	}
	werr := m.Wait()
	after := hook[1].Sub(lastRead)
	t.Logf("x/net h2c, stream in flight: hook ran %v, returned %v after the client read the stream's last byte (err %v)",
		hook[1].Sub(hook[0]).Round(time.Microsecond), after.Round(time.Microsecond), *hookErr)
	if werr != nil || after > 100*time.Millisecond {
		t.Errorf("Wait() = %v, hook returned %v after the last byte; want nil within 100ms", werr, after)
	}
}

// TestH2CLeavesTrackerTrustingBesideHTTP1 checks an HTTP/1.1 response in
// flight beside an idle h2c connection: x/net's reports about the h2c
// connection (never reported new by the server) leave the hook trusting
// its list of connections, so it returns within milliseconds of the
// response's end rather than at Shutdown's next poll.
func TestH2CLeavesTrackerTrustingBesideHTTP1(t *testing.T) {
	m := newManager()
	entered, release := make(chan struct{}), make(chan struct{})
	addr, hook, hookErr := h2cServer(t, m, h2cMux(entered, release))
	h2cGet(t, h2cClient(t), "http://"+addr+"/")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	got := make(chan error, 1)
	var answered time.Time
	go func() {
		resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get("http://" + addr + "/held")
		if err == nil {
			var b []byte
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			answered = time.Now()
			if err == nil && (string(b) != "held ok" || resp.ProtoMajor != 1) {
				err = errors.New("unexpected response " + resp.Proto + " " + string(b))
			}
		}
		got <- err
	}()
	<-entered
	m.Trigger()
	time.Sleep(300 * time.Millisecond) // the response takes 300ms more: Shutdown polls every 256ms by then
	close(release)
	if err := <-got; err != nil {
		t.Errorf("HTTP/1.1 response in flight: %v", err)
	}
	err := m.Wait()
	after := hook[1].Sub(answered)
	t.Logf("x/net h2c beside HTTP/1.1: hook returned %v after the HTTP/1.1 response was read (err %v)", after.Round(time.Microsecond), *hookErr)
	if err != nil || after > 50*time.Millisecond {
		t.Errorf("Wait() = %v, hook returned %v after the response; want nil within 50ms", err, after)
	}
}

// endListener is a loopback listener whose connections say when the
// server first ends one: shuts its writing side or closes it.
// closeOnly hides CloseWrite, as a listener's wrapper that embeds
// net.Conn does (netutil.LimitListener's, a PROXY protocol listener's).
type endListener struct {
	net.Listener
	ended     chan struct{}
	once      sync.Once
	closeOnly bool
}

func (l *endListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	ec := endConn{c.(*net.TCPConn), l}
	if l.closeOnly {
		return closeOnlyConn{ec}, nil
	}
	return ec, nil
}

// closeOnlyConn is a connection without CloseWrite.
type closeOnlyConn struct{ net.Conn }

type endConn struct {
	*net.TCPConn
	l *endListener
}

func (c endConn) CloseWrite() error {
	c.l.once.Do(func() { close(c.l.ended) })
	return c.TCPConn.CloseWrite()
}

func (c endConn) Close() error {
	c.l.once.Do(func() { close(c.l.ended) })
	return c.TCPConn.Close()
}

// gatedConn is a client's connection that stops reading from the socket
// while its gate is shut, as a client busy elsewhere leaves the server's
// bytes in the sockets' buffers.
type gatedConn struct {
	net.Conn
	shut *atomic.Bool
	open <-chan struct{}
}

func (c gatedConn) Read(p []byte) (int, error) {
	if c.shut.Load() {
		<-c.open
	}
	return c.Conn.Read(p)
}

// TestH2CResponseReachesClientThatReadsAfterTheEnd checks x/net's h2c
// with Handler outside only (no GOAWAY) and a response of 512 KiB that
// the server has finished writing while the client has not read it from
// the socket yet: the hook ends the connection, and the client, reading
// only then (and sending WINDOW_UPDATEs as it reads), still gets every
// byte, and the hook returns nil. Closing the socket there would answer
// the client's first WINDOW_UPDATE with a reset, which discards the bytes
// the server's kernel still holds (on a run of its own, that cut 7 in 10):
// five rounds, each a server and shutdown of its own.
func TestH2CResponseReachesClientThatReadsAfterTheEnd(t *testing.T) {
	for round := range 5 {
		if err := readAfterTheEnd(t, false); err != nil {
			t.Fatalf("round %d: %v", round+1, err)
		}
	}
}

// TestH2CResponseReachesClientThatReadsAfterTheEndWithoutCloseWrite is
// TestH2CResponseReachesClientThatReadsAfterTheEnd over a listener whose
// connections cannot shut their writing side alone (a wrapper that embeds
// net.Conn): the hook, unable to half-close, drops x/net's writes and
// leaves the connection open for h2cLinger before it closes it, rather
// than close it at once under the client's WINDOW_UPDATEs, and the client
// still gets every byte.
func TestH2CResponseReachesClientThatReadsAfterTheEndWithoutCloseWrite(t *testing.T) {
	for round := range 5 {
		if err := readAfterTheEnd(t, true); err != nil {
			t.Fatalf("round %d: %v", round+1, err)
		}
	}
}

// readAfterTheEnd runs one round of
// TestH2CResponseReachesClientThatReadsAfterTheEnd and says what went
// wrong, if anything.
func readAfterTheEnd(t *testing.T, closeOnly bool) error {
	const size = 512 << 10
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	el := &endListener{Listener: ln, ended: make(chan struct{}), closeOnly: closeOnly}
	release, written := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		defer close(written)
		rc := http.NewResponseController(w)
		rc.Flush() // the header
		<-release
		chunk := strings.Repeat("x", 16<<10)
		for range size / len(chunk) {
			io.WriteString(w, chunk)
			rc.Flush()
		}
	})
	m := newManager()
	addr, _, _ := h2cServerOn(t, m, mux, el)
	var shut atomic.Bool
	open := make(chan struct{})
	tr := &http.Transport{Protocols: new(http.Protocols), DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := new(net.Dialer).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return gatedConn{c, &shut, open}, nil
	}}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get("http://" + addr + "/big")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	shut.Store(true) // the client stops reading the socket
	close(release)
	m.Trigger()
	ended := el.ended
	if closeOnly {
		// The client reads once the handler has returned: the hook ends
		// the connection as it reads, and cannot show it first (no FIN).
		ended = written
	}
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		return errors.New("the hook did not end the connection in 30s")
	}
	close(open)
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != size {
		return fmt.Errorf("response finished before the end: read %d of %d bytes, %v", n, size, err)
	}
	if err := m.Wait(); err != nil {
		return fmt.Errorf("Wait() = %v, want nil", err)
	}
	return nil
}
