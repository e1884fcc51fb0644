package e2e

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

const (
	wsClients = 50
	wsEvery   = 20 * time.Millisecond // each client sends a message this often
	wsAfter   = 500 * time.Millisecond
)

// wsClient sends numbered messages on a WebSocket to examples/streams and
// counts the acknowledgements. It is a gorilla/websocket client, another
// implementation than the server's coder/websocket. When the connection
// ends it reconnects and sends again every message not yet acknowledged.
//
// Lost means a message that the client sent (once or more) and whose
// acknowledgement never came, not even after a resend. Duplicated means
// an acknowledgement for a message already acknowledged; the servers'
// own count (acked, summed over both pods) catches a message processed
// twice whose second acknowledgement the client never saw.
type wsClient struct {
	t    *testing.T
	addr string

	mu      sync.Mutex
	next    int          // the next message number
	unacked map[int]bool // sent, not acknowledged
	acked   map[int]bool
	dups    int
	resent  int
	pids    []int           // the pod of each connection
	refused int             // connection attempts that failed (the client retries)
	closes  []string        // how each connection ended
	gaps    []time.Duration // close frame received to next connection up
}

// ack records an acknowledgement.
func (c *wsClient) ack(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.acked[n]:
		c.dups++
	case !c.unacked[n]:
		c.t.Errorf("ack %d: never sent", n)
	default:
		c.acked[n] = true
		delete(c.unacked, n)
	}
}

// wsUp says that client's connection to pod pid is up.
type wsUp struct{ client, pid int }

// connect dials and reads the server's hello, retrying a failed attempt
// after 20 ms, as a client's backoff would, for up to 10 s.
func (c *wsClient) connect() (*websocket.Conn, int, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	var err error
	for range 500 {
		var conn *websocket.Conn
		if conn, _, err = d.Dial("ws://"+c.addr+"/ws", nil); err == nil {
			var hello []byte
			if _, hello, err = conn.ReadMessage(); err == nil {
				pid, perr := strconv.Atoi(strings.TrimPrefix(string(hello), "hello "))
				if perr == nil {
					return conn, pid, nil
				}
				err = fmt.Errorf("hello %q", hello)
			}
			conn.Close()
		}
		c.mu.Lock()
		c.refused++
		c.mu.Unlock()
		time.Sleep(20 * time.Millisecond) // the client's backoff
	}
	return nil, 0, fmt.Errorf("no connection in 500 attempts: %w", err)
}

// run connects, sends until stop is closed, then waits for the last
// acknowledgements and closes normally. up is told each time a connection
// is up.
func (c *wsClient) run(id int, stop <-chan struct{}, up chan<- wsUp) error {
	c.unacked, c.acked = map[int]bool{}, map[int]bool{}
	c.next = 1
	var closedAt time.Time
	for attempt := 0; ; attempt++ {
		if attempt > 10 {
			return errors.New("more than 10 connections")
		}
		conn, pid, err := c.connect()
		if err != nil {
			return err
		}
		c.mu.Lock()
		if !closedAt.IsZero() {
			c.gaps = append(c.gaps, time.Since(closedAt))
		}
		c.pids = append(c.pids, pid)
		c.mu.Unlock()
		up <- wsUp{id, pid}
		ended := make(chan error, 1)
		go func() { // the one reader
			for {
				_, p, err := conn.ReadMessage()
				if err != nil {
					ended <- err
					return
				}
				n, err := strconv.Atoi(strings.TrimPrefix(string(p), "ack "))
				if err != nil {
					ended <- fmt.Errorf("bad ack %q", p)
					return
				}
				c.ack(n)
			}
		}()
		done, err := c.send(conn, stop, ended)
		closedAt = time.Now()
		conn.Close()
		var ce *websocket.CloseError
		switch {
		case done:
			return nil
		case errors.As(err, &ce):
			c.mu.Lock()
			c.closes = append(c.closes, fmt.Sprintf("%d %q", ce.Code, ce.Text))
			c.mu.Unlock()
		default:
			c.mu.Lock()
			c.closes = append(c.closes, "no close frame: "+err.Error())
			c.mu.Unlock()
		}
	}
}

// send resends what is unacknowledged, then sends a new message every
// wsEvery until stop, then waits until every message is acknowledged and
// closes with 1000. It returns done when that close is complete, and
// otherwise the reader's error.
func (c *wsClient) send(conn *websocket.Conn, stop <-chan struct{}, ended <-chan error) (done bool, err error) {
	c.mu.Lock()
	var again []int
	for n := range c.unacked {
		again = append(again, n)
	}
	c.mu.Unlock()
	for _, n := range sortedInts(again) {
		if err := conn.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(n))); err != nil {
			return false, <-ended
		}
		c.mu.Lock()
		c.resent++
		c.mu.Unlock()
	}
	tick := time.NewTicker(wsEvery)
	defer tick.Stop()
	for {
		select {
		case err := <-ended:
			return false, err
		case <-tick.C:
		case <-stop:
			return c.finish(conn, ended)
		}
		c.mu.Lock()
		n := c.next
		c.next++
		c.unacked[n] = true
		c.mu.Unlock()
		if err := conn.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(n))); err != nil {
			return false, <-ended // the reader sees why
		}
	}
}

// finish waits for the last acknowledgements and closes with 1000.
func (c *wsClient) finish(conn *websocket.Conn, ended <-chan error) (bool, error) {
	guard := time.After(30 * time.Second)
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	for {
		c.mu.Lock()
		left := len(c.unacked)
		c.mu.Unlock()
		if left == 0 {
			break
		}
		select {
		case err := <-ended:
			return false, err
		case <-guard:
			return true, fmt.Errorf("%d messages unacknowledged 30s after stop", left)
		case <-poll.C:
		}
	}
	conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(10*time.Second))
	select {
	case err := <-ended:
		if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
			return true, fmt.Errorf("closing: %w", err)
		}
	case <-guard:
		return true, errors.New("no close frame back 30s after stop")
	}
	return true, nil
}

func sortedInts(s []int) []int {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

// wsFigures are what a WebSocket rollout measured.
type wsFigures struct {
	sent, acked, lost, dups, processedTwice, resent int

	onNew      int            // clients whose last connection was to the new pod
	toOld      int            // connections to the old pod after the first
	refused    int            // connection attempts that failed
	gaps       durations      // close frame to the next connection up
	closes     map[string]int // how the clients' connections ended, but the last
	goingAway  int            // close handshakes the old pod completed
	handshakeF int            // and failed
	exit       time.Duration  // the old pod's exit after its drain
}

// wsRollout runs 50 WebSocket clients through the forwarder while the old
// pod, with drain delay d, is replaced, and checks what holds whatever the
// drain: nothing lost or processed twice, every client on the new pod in
// the end, both pods exiting 0.
func wsRollout(t *testing.T, d time.Duration) wsFigures {
	old, _ := startStreams(t, "old pod", d)
	next, _ := startStreams(t, "new pod", 0)
	oldPid, newPid := old.cmd.Process.Pid, next.cmd.Process.Pid
	f := newForwarder(t, old.addr)
	stop := make(chan struct{})
	up := make(chan wsUp, 11*wsClients) // at most 11 connections each: never blocks
	errs := make(chan error, wsClients)
	clients := make([]*wsClient, wsClients)
	for i := range clients {
		clients[i] = &wsClient{t: t, addr: f.addr()}
		go func() { errs <- clients[i].run(i, stop, up) }()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}()
	// upOn waits until the last connection of every client is to pid.
	on := make([]int, wsClients)
	upOn := func(pid int, what string) {
		t.Helper()
		guard := time.After(30 * time.Second)
		for n := 0; n < wsClients; {
			select {
			case u := <-up:
				if on[u.client] != pid && u.pid == pid {
					n++
				} else if on[u.client] == pid && u.pid != pid {
					n--
				}
				on[u.client] = u.pid
			case err := <-errs:
				t.Fatalf("%s: a client ended: %v", what, err)
			case <-guard:
				t.Fatalf("%s: not every client connected to pid %d in 30s", what, pid)
			}
		}
	}
	upOn(oldPid, "before the rollout")
	time.Sleep(warmup) // messages flow for a while before the signal
	sig := old.sigterm()
	time.Sleep(time.Until(sig.Add(lag)))
	f.switchTo(next.addr)
	upOn(newPid, "after the old pod's drain")
	time.Sleep(wsAfter) // and for a while on the new pod
	close(stop)
	for range clients {
		if err := <-errs; err != nil { // each client has its own 30s guards
			t.Errorf("client: %v", err)
		}
	}
	if code := old.wait(sig.Add(d + hangSpan)); code != 0 {
		t.Errorf("old pod: exit code %d, want 0", code)
	}
	next.sigterm()
	if code := next.wait(time.Now().Add(budget + hangSpan)); code != 0 {
		t.Errorf("new pod: exit code %d, want 0", code)
	}

	w := wsFigures{exit: old.exitAt.Sub(sig.Add(d)), closes: map[string]int{}}
	for i, c := range clients {
		w.sent += c.next - 1
		w.acked += len(c.acked)
		w.lost += len(c.unacked)
		w.dups += c.dups
		w.resent += c.resent
		w.refused += c.refused
		w.gaps = append(w.gaps, c.gaps...)
		for _, e := range c.closes {
			w.closes[e]++
		}
		if len(c.pids) > 0 && c.pids[len(c.pids)-1] == newPid {
			w.onNew++
		} else {
			t.Errorf("client %d: connections to pids %v, want the new pod's %d last", i, c.pids, newPid)
		}
		for _, p := range c.pids[1:] {
			if p == oldPid {
				w.toOld++
			}
		}
	}
	o := old.totals("websocket totals", "connections", "acked", "going_away", "handshake_failed")
	n := next.totals("websocket totals", "connections", "acked")
	w.processedTwice = o["acked"] + n["acked"] - w.acked
	w.goingAway, w.handshakeF = o["going_away"], o["handshake_failed"]
	if w.lost != 0 || w.dups != 0 || w.processedTwice != 0 {
		t.Errorf("lost %d, duplicated %d, processed twice %d; want 0, 0, 0", w.lost, w.dups, w.processedTwice)
	}
	if w.sent == 0 || w.acked != w.sent {
		t.Errorf("%d of %d messages acknowledged", w.acked, w.sent)
	}
	return w
}

// TestRolloutWebSocket runs 50 WebSocket clients through the forwarder
// while the old pod is replaced. At the end of its drain (the endpoint has
// moved), the old pod closes every connection with 1001 "going away" and
// completes the close handshake; every client reconnects at its first
// attempt, through the forwarder, to the new pod, resends what was not
// acknowledged, and goes on. No message is lost or processed twice.
func TestRolloutWebSocket(t *testing.T) {
	w := wsRollout(t, drain)
	t.Logf("rollout, WebSocket: %d clients, %d messages sent, %d acknowledged, %d lost, %d duplicated (%d processed twice), %d resent after reconnect; %d of %d clients reconnected to the new pod, %d failed attempts, close frame to reconnect: %v; old pod: %d close handshakes completed, %d failed, exit %v after drain end",
		wsClients, w.sent, w.acked, w.lost, w.dups, w.processedTwice, w.resent, w.onNew, wsClients, w.refused, w.gaps,
		w.goingAway, w.handshakeF, w.exit.Round(time.Millisecond))
	if w.onNew != wsClients || w.toOld != 0 || w.refused != 0 || len(w.gaps) != wsClients {
		t.Errorf("%d clients on the new pod, %d reconnects to the old pod, %d failed attempts, %d reconnects; want %d, 0, 0, %d",
			w.onNew, w.toOld, w.refused, len(w.gaps), wsClients, wsClients)
	}
	if want := `1001 "going away"`; len(w.closes) != 1 || w.closes[want] != wsClients {
		t.Errorf("connections ended with %v, want %d of %s", w.closes, wsClients, want)
	}
	if w.goingAway != wsClients || w.handshakeF != 0 {
		t.Errorf("old pod: %d close handshakes completed, %d failed; want %d, 0", w.goingAway, w.handshakeF, wsClients)
	}
}

// TestRolloutWebSocketNoDrain is the same rollout with -drain-delay 0: the
// streams end at SIGTERM, before the endpoint has moved, and the clients
// reconnect to the pod that is stopping. Nothing is lost, thanks to the
// resends, but the reconnects fail or land on the old pod until the
// forwarder switches. Its figures are reported, not asserted: they are why
// streams end at Context() and not at the signal.
func TestRolloutWebSocketNoDrain(t *testing.T) {
	w := wsRollout(t, 0)
	t.Logf("rollout, WebSocket, NO drain: %d clients, %d messages sent, %d lost; %d failed reconnect attempts, %d reconnects to the old pod; close frame to reconnect: %v",
		wsClients, w.sent, w.lost, w.refused, w.toOld, w.gaps)
}
