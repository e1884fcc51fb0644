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

// run connects, sends until stop is closed, then waits for the last
// acknowledgements and closes normally. up receives one value each time
// a connection is up.
func (c *wsClient) run(stop <-chan struct{}, up chan<- int) error {
	c.unacked, c.acked = map[int]bool{}, map[int]bool{}
	c.next = 1
	var closedAt time.Time
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	for attempt := 0; ; attempt++ {
		if attempt > 10 {
			return errors.New("more than 10 connections")
		}
		conn, _, err := d.Dial("ws://"+c.addr+"/ws", nil)
		if err != nil {
			return fmt.Errorf("dial: %w", err)
		}
		_, hello, err := conn.ReadMessage()
		pid, perr := strconv.Atoi(strings.TrimPrefix(string(hello), "hello "))
		if err != nil || perr != nil {
			conn.Close()
			return fmt.Errorf("hello: %q, %v", hello, err)
		}
		c.mu.Lock()
		if !closedAt.IsZero() {
			c.gaps = append(c.gaps, time.Since(closedAt))
		}
		c.pids = append(c.pids, pid)
		c.mu.Unlock()
		up <- pid
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

// TestRolloutWebSocket runs 50 WebSocket clients through the forwarder
// while the old pod is replaced. At the end of its drain (the endpoint has
// moved), the old pod closes every connection with 1001 "going away" and
// completes the close handshake; every client reconnects, through the
// forwarder, to the new pod, resends what was not acknowledged, and goes
// on. No message is lost or processed twice.
func TestRolloutWebSocket(t *testing.T) {
	old, _ := startStreams(t, "old pod", drain)
	next, _ := startStreams(t, "new pod", 0)
	f := newForwarder(t, old.addr)
	stop := make(chan struct{})
	up := make(chan int, 11*wsClients) // at most 11 connections each: never blocks
	errs := make(chan error, wsClients)
	clients := make([]*wsClient, wsClients)
	for i := range clients {
		clients[i] = &wsClient{t: t, addr: f.addr()}
		go func() { errs <- clients[i].run(stop, up) }()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}()
	// upOn waits for n connections to come up on pid.
	upOn := func(n, pid int, what string) {
		t.Helper()
		guard := time.After(30 * time.Second)
		for n > 0 {
			select {
			case p := <-up:
				if p != pid {
					t.Fatalf("%s: a client connected to pid %d, want %d", what, p, pid)
				}
				n--
			case err := <-errs:
				t.Fatalf("%s: a client ended: %v", what, err)
			case <-guard:
				t.Fatalf("%s: %d clients not connected after 30s", what, n)
			}
		}
	}
	upOn(wsClients, old.cmd.Process.Pid, "before the rollout")
	time.Sleep(warmup) // messages flow for a while before the signal
	sig := old.sigterm()
	time.Sleep(time.Until(sig.Add(lag)))
	f.switchTo(next.addr)
	upOn(wsClients, next.cmd.Process.Pid, "after the old pod's drain")
	time.Sleep(wsAfter) // and for a while on the new pod
	close(stop)
	for range clients {
		if err := <-errs; err != nil { // each client has its own 30s guards
			t.Errorf("client: %v", err)
		}
	}
	if code := old.wait(sig.Add(drain + hangSpan)); code != 0 {
		t.Errorf("old pod: exit code %d, want 0", code)
	}
	exit := old.exitAt.Sub(sig.Add(drain))
	next.sigterm()
	if code := next.wait(time.Now().Add(budget + hangSpan)); code != 0 {
		t.Errorf("new pod: exit code %d, want 0", code)
	}
	if n := f.dialErrors(); n > 0 {
		t.Errorf("forwarder: %d dials to a backend failed", n)
	}

	var sent, acked, lost, dups, resent, reconnected int
	var gaps durations
	for i, c := range clients {
		sent += c.next - 1
		acked += len(c.acked)
		lost += len(c.unacked)
		dups += c.dups
		resent += c.resent
		gaps = append(gaps, c.gaps...)
		if len(c.pids) == 2 && c.pids[1] == next.cmd.Process.Pid {
			reconnected++
		} else {
			t.Errorf("client %d: connections to pids %v, want [%d %d]", i, c.pids, old.cmd.Process.Pid, next.cmd.Process.Pid)
		}
		if want := `1001 "going away"`; len(c.closes) != 1 || c.closes[0] != want {
			t.Errorf("client %d: connections ended with %q, want one %s", i, c.closes, want)
		}
	}
	o := old.totals("websocket totals", "connections", "acked", "going_away", "handshake_failed")
	n := next.totals("websocket totals", "connections", "acked")
	processedTwice := o["acked"] + n["acked"] - acked
	t.Logf("rollout, WebSocket: %d clients, %d messages sent, %d acknowledged, %d lost, %d duplicated (%d processed twice), %d resent after reconnect; %d of %d clients reconnected to the new pod, close frame to reconnect: %v; old pod: %d close handshakes completed, %d failed, exit %v after drain end",
		wsClients, sent, acked, lost, dups, processedTwice, resent, reconnected, wsClients, gaps,
		o["going_away"], o["handshake_failed"], exit.Round(time.Millisecond))
	if lost != 0 || dups != 0 || processedTwice != 0 {
		t.Errorf("lost %d, duplicated %d, processed twice %d; want 0, 0, 0", lost, dups, processedTwice)
	}
	if reconnected != wsClients {
		t.Errorf("%d clients reconnected to the new pod, want %d", reconnected, wsClients)
	}
	if o["going_away"] != wsClients || o["handshake_failed"] != 0 {
		t.Errorf("old pod: %d close handshakes completed, %d failed; want %d, 0", o["going_away"], o["handshake_failed"], wsClients)
	}
	if sent == 0 || acked != sent {
		t.Errorf("%d of %d messages acknowledged", acked, sent)
	}
}
