//lint:file-ignore SA1019 x/net deprecated h2c, http2.Server and ConfigureServer, but connect-go and grpc-gateway still document them, and users run them.

package e2e

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gracefulgo/shutdown"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"golang.org/x/net/http2/hpack"
)

// TestH2CIdleConnectionGetsGoAwayBeforeItsEnd checks the wiring
// HTTPServer's documentation recommends for x/net's h2c (Handler outside
// and inside h2c.NewHandler, http2.ConfigureServer on the server) with an
// h2c connection that has been idle for longer than h2cFlushGrace when
// shutdown starts: x/net writes a GOAWAY at Shutdown, and the client reads
// it before the connection ends, so that a request it sends at that moment
// is refused by the GOAWAY (and retried elsewhere by Go's client) rather
// than lost with the connection. Five rounds, each a server of its own.
func TestH2CIdleConnectionGetsGoAwayBeforeItsEnd(t *testing.T) {
	for round := range 5 {
		if err := goAwayBeforeTheEnd(t); err != nil {
			t.Fatalf("round %d: %v", round+1, err)
		}
	}
}

// goAwayBeforeTheEnd runs one round of
// TestH2CIdleConnectionGetsGoAwayBeforeItsEnd and says what went wrong.
func goAwayBeforeTheEnd(t *testing.T) error {
	m := newManager()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	h2s := &http2.Server{}
	srv := &http.Server{Handler: m.Handler(h2c.NewHandler(m.Handler(mux), h2s))}
	if err := http2.ConfigureServer(srv, h2s); err != nil {
		t.Fatal(err)
	}
	m.Add("http", shutdown.HTTPServer(srv), shutdown.Timeout(5*time.Second))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	defer func() {
		srv.Close()
		<-served
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a hang guard
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "test"}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	for ended := false; !ended; {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			ended = f.StreamEnded()
		case *http2.HeadersFrame:
			ended = f.StreamEnded()
		}
	}
	// The connection stays idle past h2cFlushGrace (100ms): a state to
	// set up, not a wait for an event.
	time.Sleep(300 * time.Millisecond)
	m.Trigger()
	defer func() {
		c.Close() // as Go's client does at a GOAWAY on an idle connection
		m.Wait()
	}()
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) {
			return errors.New("the connection ended without a GOAWAY")
		}
		if err != nil {
			return err
		}
		if _, ok := f.(*http2.GoAwayFrame); ok {
			return nil
		}
	}
}
