package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
)

// wsServer acknowledges each message of a WebSocket: it greets with
// "hello <pid>" (so a test can tell the instances apart) and answers every
// message p with "ack p". When stop (m.Context()) is done, it closes each
// connection with 1001 "going away" and waits for the client's close frame.
type wsServer struct {
	stop context.Context

	mu    sync.Mutex
	conns map[*websocket.Conn]struct{}
	idle  chan struct{} // closed when conns empties, if wait is waiting

	accepted, acked, goingAway, failed atomic.Int64
}

func (s *wsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered the request
	}
	s.track(c, true)
	defer s.track(c, false)
	s.accepted.Add(1)
	// The handler's whole shutdown code: at m.Context() cancellation, close
	// with 1001 and complete the handshake (Close waits for the client's
	// close frame, at most 5 s), while the loop below keeps reading.
	closed := make(chan error, 1)
	stop := context.AfterFunc(s.stop, func() {
		closed <- c.Close(websocket.StatusGoingAway, "going away")
	})
	// Not s.stop: coder/websocket cuts the connection, with no close
	// handshake, when the context of a Read or Write ends.
	ctx := r.Context()
	err = c.Write(ctx, websocket.MessageText, []byte("hello "+strconv.Itoa(os.Getpid())))
	for err == nil {
		var p []byte
		if _, p, err = c.Read(ctx); err == nil {
			if err = c.Write(ctx, websocket.MessageText, append([]byte("ack "), p...)); err == nil {
				s.acked.Add(1)
			}
		}
	}
	if stop() { // the client left before shutdown
		c.CloseNow()
		return
	}
	if err := <-closed; err != nil {
		s.failed.Add(1)
		slog.Warn("websocket: close handshake", "error", err)
		return
	}
	s.goingAway.Add(1)
}

func (s *wsServer) track(c *websocket.Conn, open bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = map[*websocket.Conn]struct{}{}
	}
	if open {
		s.conns[c] = struct{}{}
		return
	}
	delete(s.conns, c)
	if len(s.conns) == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// wait is a hook that waits for the connections to finish their close
// handshakes, and at its deadline says how many are still open (the
// process exit then closes them). HTTPServer does not wait for hijacked
// connections on this base: without this hook the process could exit
// before the handshakes are done.
func (s *wsServer) wait(ctx context.Context) error {
	s.mu.Lock()
	if len(s.conns) == 0 {
		s.mu.Unlock()
		return nil
	}
	idle := make(chan struct{})
	s.idle = idle
	s.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Errorf("websocket: %d connection(s) did not finish the close handshake: %w", len(s.conns), ctx.Err())
}

func (s *wsServer) logTotals() {
	slog.Info("websocket totals", "connections", s.accepted.Load(), "acked", s.acked.Load(),
		"going_away", s.goingAway.Load(), "handshake_failed", s.failed.Load())
}
