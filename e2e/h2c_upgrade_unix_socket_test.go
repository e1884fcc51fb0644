//lint:file-ignore SA1019 x/net deprecated h2c and http2.Server, but connect-go and grpc-gateway still document them, and users run them.

package e2e

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

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
	_, hook, hookErr := h2cServerOn(t, m, h2cMux(nil, nil), ln)
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
