//lint:file-ignore SA1019 x/net deprecated h2c and http2.Server, but connect-go and grpc-gateway still document them, and users run them.

package e2e

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
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
	hook, hookErr = h2cServeOn(t, m, mux, ln)
	return ln.Addr().String(), hook, hookErr
}

// h2cServeOn is h2cServer on the listener ln.
func h2cServeOn(t *testing.T, m *shutdown.Manager, mux http.Handler, ln net.Listener) (hook *[2]time.Time, hookErr *error) {
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
	return hook, hookErr
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
// without http2.ConfigureServer, and the hook closes the connection rather
// than wait for it to its deadline.
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
	if err != nil || d > 100*time.Millisecond {
		t.Errorf("Wait() = %v with the hook taking %v; want nil within 100ms", err, d)
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

// h2cUpgrade opens a connection to addr and asks for path over HTTP/1.1
// with "Upgrade: h2c", as curl --http2 does: the request becomes the h2c
// connection's stream 1. It returns a framer over the upgraded connection,
// with the server's 101 read and the flow-control windows opened wide.
func h2cUpgrade(t *testing.T, addr, path string) *http2.Framer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a hang guard
	// HTTP2-Settings: SETTINGS_ENABLE_PUSH = 0, base64url.
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade, HTTP2-Settings\r\n" +
		"Upgrade: h2c\r\nHTTP2-Settings: AAIAAAAA\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade to h2c: %v, %v", resp, err)
	}
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, br)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for _, stream := range []uint32{0, 1} {
		if err := fr.WriteWindowUpdate(stream, 1<<30); err != nil {
			t.Fatal(err)
		}
	}
	return fr
}

// TestH2CUpgradedStreamInFlightFinishes checks an h2c connection made with
// "Upgrade: h2c" (curl --http2) whose first request, stream 1, is in
// flight when shutdown starts: x/net reports the connection idle once it
// has read the client's preface, while stream 1 still runs, and the hook
// must not take that for the end of the stream: the client reads every
// byte.
func TestH2CUpgradedStreamInFlightFinishes(t *testing.T) {
	m := newManager()
	addr, _, hookErr := h2cServer(t, m, h2cMux(nil, nil))
	fr := h2cUpgrade(t, addr, "/stream")
	n, triggered := 0, false
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Errorf("stream 1 in flight: read %d of %d bytes, then %v", n, streamChunks*chunkSize, err)
			break
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			fr.WriteSettingsAck()
		}
		d, ok := f.(*http2.DataFrame)
		if !ok || d.StreamID != 1 {
			continue
		}
		n += len(d.Data())
		if !triggered { // the stream has begun
			m.Trigger()
			triggered = true
		}
		if d.StreamEnded() {
			break
		}
	}
	if n != streamChunks*chunkSize {
		t.Errorf("stream 1 in flight: read %d of %d bytes", n, streamChunks*chunkSize)
	}
	if err := m.Wait(); err != nil {
		t.Errorf("Wait() = %v (hook: %v); want nil", err, *hookErr)
	}
}

// TestH2CConnectionsOnUnixSocketDoNotHoldHook checks two idle h2c
// connections on a Unix socket (a sidecar proxy's wiring): their names
// (the socket's path, and an empty peer) are alike, yet x/net's reports
// about each must reach the connection it serves, so that the hook closes
// both once idle rather than wait for its deadline.
func TestH2CConnectionsOnUnixSocketDoNotHoldHook(t *testing.T) {
	m := newManager()
	sock := t.TempDir() + "/h2c.sock"
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hook, hookErr := h2cServeOn(t, m, h2cMux(nil, nil), ln)
	for range 2 { // two clients, a connection each
		tr := &http.Transport{
			Protocols: new(http.Protocols),
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			},
		}
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		if got := h2cGet(t, &http.Client{Transport: tr, Timeout: 30 * time.Second}, "http://h2c/"); got != "ok" {
			t.Fatalf("GET / = %q", got)
		}
	}
	m.Trigger()
	err = m.Wait()
	took := hook[1].Sub(hook[0])
	t.Logf("x/net h2c, two idle connections on a Unix socket: hook took %v (err %v)", took.Round(time.Microsecond), *hookErr)
	if err != nil || took > 200*time.Millisecond {
		t.Errorf("Wait() = %v with the hook taking %v; want nil within 200ms", err, took)
	}
}
