package main

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"

	"github.com/coder/websocket"
)

// wsServer acknowledges each message of a WebSocket: it greets with
// "hello <pid>" (so a test can tell the instances apart) and answers every
// message p with "ack p". When stop (m.Context()) is done, it closes each
// connection with 1001 "going away" and waits for the client's close frame.
type wsServer struct {
	stop context.Context

	accepted, acked, goingAway, failed atomic.Int64
}

func (s *wsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered the request
	}
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

func (s *wsServer) logTotals() {
	slog.Info("websocket totals", "connections", s.accepted.Load(), "acked", s.acked.Load(),
		"going_away", s.goingAway.Load(), "handshake_failed", s.failed.Load())
}
