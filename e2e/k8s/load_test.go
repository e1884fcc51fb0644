package k8s

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// The load speaks HTTP/1.1 on raw connections, as wrk does, and counts every
// request that gets no 200 as failed. Go's http.Client would hide some
// failures: it silently resends an idempotent request whose reused
// connection the server closed.

// tally counts one kind of load.
type tally struct {
	mu      sync.Mutex
	sent    int
	failed  int
	samples []string // the first few errors, to tell what failed
}

func (t *tally) add(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sent++
	if err != nil {
		t.failed++
		if len(t.samples) < 5 {
			t.samples = append(t.samples, err.Error())
		}
	}
}

func (t *tally) counts() (sent, failed int, samples []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sent, t.failed, append([]string(nil), t.samples...)
}

// conn is one client connection, opened when a request needs it.
type conn struct {
	addr string
	c    net.Conn
	br   *bufio.Reader
}

// get sends GET path and reads the whole response. With keepAlive false it
// asks for Connection: close. After an error, or a response that closes the
// connection, the next get dials again.
func (k *conn) get(path string, keepAlive bool, timeout time.Duration) error {
	if k.c == nil {
		c, err := net.DialTimeout("tcp", k.addr, 5*time.Second)
		if err != nil {
			return err
		}
		k.c, k.br = c, bufio.NewReader(c)
	}
	err := k.exchange(path, keepAlive, timeout)
	if err != nil || !keepAlive {
		k.close()
	}
	return err
}

func (k *conn) exchange(path string, keepAlive bool, timeout time.Duration) error {
	k.c.SetDeadline(time.Now().Add(timeout))
	req := "GET " + path + " HTTP/1.1\r\nHost: load\r\n"
	if !keepAlive {
		req += "Connection: close\r\n"
	}
	if _, err := io.WriteString(k.c, req+"\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	if resp.Close {
		k.close()
	}
	return nil
}

func (k *conn) close() {
	if k.c != nil {
		k.c.Close()
		k.c = nil
	}
}

// loads is the traffic of one rollout: keep-alive connections, a
// connection per request, and slow requests (each on its own connection)
// that are in flight when old pods get SIGTERM.
type loads struct {
	keepAlive, perRequest, slow tally
	wg                          sync.WaitGroup
}

// kind is one load of a rollout, by name.
type kind struct {
	name string
	t    *tally
}

// kinds lists the loads: keep-alive first.
func (l *loads) kinds() []kind {
	return []kind{{"keep-alive", &l.keepAlive}, {"connection per request", &l.perRequest}, {"slow (2 s, in flight at SIGTERM)", &l.slow}}
}

// Rates, well below what saturates the two cores, so that the node's own
// kube-proxy and kubelet get the CPU to do their part in time.
const (
	keepAliveConns = 4
	keepAliveEvery = 20 * time.Millisecond  // 50 requests/s per connection
	perRequestRate = 20 * time.Millisecond  // 50 connections/s
	slowEvery      = 250 * time.Millisecond // 4 slow requests/s
	slowFor        = 2 * time.Second
)

// startLoads sends the loads to addr until ctx is done.
func startLoads(ctx context.Context, addr string) *loads {
	l := &loads{}
	every := func(d time.Duration, f func()) {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(d)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					f()
				}
			}
		}()
	}
	for range keepAliveConns {
		k := &conn{addr: addr}
		every(keepAliveEvery, func() { l.keepAlive.add(k.get("/", true, 10*time.Second)) })
	}
	every(perRequestRate, func() {
		k := &conn{addr: addr}
		l.perRequest.add(k.get("/", false, 10*time.Second))
	})
	every(slowEvery, func() {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			k := &conn{addr: addr}
			l.slow.add(k.get("/slow?d="+slowFor.String(), false, slowFor+10*time.Second))
		}()
	})
	return l
}

// probe is one request for set-up: is the Service answering yet?
func probe(addr string) error {
	k := &conn{addr: addr}
	return k.get("/", false, 2*time.Second)
}
