package e2e

import (
	"regexp"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestWebSocketClientIgnoringCloseIsCut connects two WebSocket clients to
// examples/streams: one completes the close handshake, the other reads the
// close frame 1001 and never answers it. The server waits for the
// handshake until its hook's deadline, then the connection is cut, the
// shutdown error it logs counts the one connection, and the process exits
// within its budget.
func TestWebSocketClientIgnoringCloseIsCut(t *testing.T) {
	const (
		drainD  = time.Second
		budgetD = 4 * time.Second
	)
	in := startProgram(t, "pod", streamsBin, "-addr", "127.0.0.1:0", "-grpc-addr", "127.0.0.1:0",
		"-drain-delay", drainD.String(), "-timeout", budgetD.String())
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	dial := func() *websocket.Conn {
		t.Helper()
		c, _, err := d.Dial("ws://"+in.addr+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, hello, err := c.ReadMessage(); err != nil {
			t.Fatalf("hello: %q, %v", hello, err)
		}
		return c
	}
	good, deaf := dial(), dial()
	deaf.SetCloseHandler(func(int, string) error { return nil }) // no close frame back

	// The well-behaved client: the default close handler answers.
	goodErr := make(chan error, 1)
	go func() {
		_, _, err := good.ReadMessage()
		goodErr <- err
	}()
	type cut struct {
		closeFrame error
		at         time.Time
	}
	deafCut := make(chan cut, 1)
	go func() {
		_, _, err := deaf.ReadMessage() // the close frame
		// Then hold the connection without a word until the server cuts it.
		buf := make([]byte, 64)
		for {
			if _, rerr := deaf.UnderlyingConn().Read(buf); rerr != nil {
				deafCut <- cut{err, time.Now()}
				return
			}
		}
	}()

	sig := in.sigterm()
	guard := time.After(30 * time.Second)
	select {
	case err := <-goodErr:
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Errorf("well-behaved client: ReadMessage() = %v, want close 1001", err)
		}
	case <-guard:
		t.Fatal("well-behaved client: no close frame in 30s")
	}
	var c cut
	select {
	case c = <-deafCut:
	case <-guard:
		t.Fatal("the client that ignores the close frame was not cut in 30s")
	}
	if !websocket.IsCloseError(c.closeFrame, websocket.CloseGoingAway) {
		t.Errorf("ignoring client: first ReadMessage() = %v, want close 1001", c.closeFrame)
	}
	// Cut at the hook's deadline (budget less its margin), not at the close
	// frame: a lower bound holds on a busy machine; the upper one is a
	// generous hang guard.
	if after := c.at.Sub(sig); after < budgetD/2 || after > budgetD+5*time.Second {
		t.Errorf("ignoring client cut %v after SIGTERM; want at the hook's deadline, about %v", after, budgetD)
	}
	code := in.wait(sig.Add(budgetD + 5*time.Second))
	exit := in.exitAt.Sub(sig)
	if code != 1 {
		t.Errorf("exit code %d, want 1 (the shutdown error)", code)
	}
	// The shutdown error names one connection, whichever hook cut it.
	shutdownErr := regexp.MustCompile(`msg=shutdown error=.*\b1 (?:[a-z-]+ ){0,3}connections?\b.*`)
	logged := shutdownErr.FindString(in.logs())
	if logged == "" {
		t.Errorf("no shutdown error counting 1 connection in the log:\n%s", in.logs())
	}
	t.Logf("client ignoring the close frame: cut %v after SIGTERM (drain %v, budget %v); exit %v after SIGTERM; logged: %s",
		c.at.Sub(sig).Round(time.Millisecond), drainD, budgetD, exit.Round(time.Millisecond), logged)
}
