package shutdown

// This file follows one server's connections for HTTPServer's hook: those
// the server reports through ConnState, those hijacked through Handler,
// and those that x/net's HTTP/2 server serves over a hijacked one (h2c).

import (
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// connTracker follows one server's connections, through the ConnState
// callback that HTTPServer chains onto it, and the connections hijacked
// through Handler on it.
//
// Why ConnState and not a count of requests in Handler: a handler's return
// says nothing about the response's bytes still buffered, which the server
// writes after it (a slow reader's last kilobytes), and Handler sees only
// the routes it wraps. The server reports StateIdle or StateClosed after
// its last write of a response has returned, on every route.
type connTracker struct {
	mu       sync.Mutex
	conns    map[net.Conn]http.ConnState // the server's own, from StateNew until closed or hijacked
	coverage coverage                    // whether conns lists every connection the server has open
	// hijacking counts Hijack calls under way through Handler; hijacked
	// holds the connections they returned, until closed, and byAddr the
	// same by their addresses, to know x/net's reports about them.
	hijacking int
	hijacked  map[*hijackedConn]struct{}
	byAddr    map[string][]*hijackedConn
	wake      chan struct{} // closed at the next change, while the hook waits
	// pastDeadline: the hook has closed what was open at its deadline; a
	// Hijack that ends after that closes its connection at once.
	pastDeadline bool
}

// coverage is what the tracker knows of the server's connections, from the
// one rule net/http keeps: the first report of every connection it serves
// is StateNew. It only moves forward: noReport, then complete, or partial
// at any time, for good.
type coverage int

const (
	// noReport: nothing reported yet. Nothing has connected, or s.ConnState
	// was replaced after HTTPServer and the tracker hears nothing.
	noReport coverage = iota
	// complete: every report so far was for a connection first reported
	// StateNew (or for one that x/net serves over a hijacked connection,
	// which is no connection of the server's own): conns is the whole list.
	complete
	// partial: a connection was reported without StateNew first, so the
	// callback was installed after it opened (HTTPServer called while s
	// served, a data race it documents): conns may miss some. The hook
	// then relies on Shutdown, as it would without the tracker.
	partial
)

// stateClosing marks a connection that the hook has closed itself, until
// the server reports it closed.
const stateClosing http.ConnState = -1

// setState is the ConnState callback's part: net/http's reports for the
// connections it serves, and x/net's for those its HTTP/2 server serves
// over a connection hijacked through Handler (StateActive and StateIdle
// only, see servedOver).
func (t *connTracker) setState(c net.Conn, st http.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.changed() // deferred last, so it runs first: under t.mu
	if st == http.StateNew {
		t.conns[c] = st
		if t.coverage == noReport {
			t.coverage = complete
		}
		return
	}
	if _, known := t.conns[c]; known {
		if st == http.StateHijacked || st == http.StateClosed {
			delete(t.conns, c)
		} else {
			t.conns[c] = st
		}
		return
	}
	if hc := t.servedOver(c); hc != nil && (st == http.StateActive || st == http.StateIdle) {
		hc.h2cReport(st)
		return
	}
	t.coverage = partial
}

// servedOver returns the connection hijacked through Handler that c is, or
// wraps, when x/net's HTTP/2 server reports c: h2c.NewHandler hijacks the
// connection and hands http2.Server.ServeConn either it or a wrapper that
// first reads the bytes already buffered, and ServeConn reports states for
// that through the BaseConfig server's ConnState. A wrapper is known by
// its addresses: the pair of local and remote address names one open TCP
// connection. On a Unix socket every connection has the same names, but
// each its own *net.UnixAddr, which a wrapper returns as it is. t.mu is
// held.
func (t *connTracker) servedOver(c net.Conn) *hijackedConn {
	var hc *hijackedConn
	switch v := c.(type) {
	case *hijackedConn:
		hc = v
	case hijackedHalfCloser:
		hc = v.hijackedConn
	default:
		same := t.byAddr[addrKey(c)]
		switch ua, unix := c.RemoteAddr().(*net.UnixAddr); {
		case len(same) == 1:
			hc = same[0]
		case unix:
			for _, o := range same {
				if o.RemoteAddr() == net.Addr(ua) {
					hc = o
				}
			}
		}
	}
	if _, ok := t.hijacked[hc]; !ok {
		return nil
	}
	return hc
}

// addrKey names c by its addresses, or is "" if it has none.
func addrKey(c net.Conn) string {
	l, r := c.LocalAddr(), c.RemoteAddr()
	if l == nil || r == nil {
		return ""
	}
	return l.Network() + " " + l.String() + " " + r.String()
}

func (t *connTracker) hijackStarts() {
	t.mu.Lock()
	t.hijacking++
	t.mu.Unlock()
}

// hijackEnds ends a Hijack through Handler that hijackStarts counted: on
// success it tracks c and returns it wrapped. h2cUpgrade says the request
// asked for "Upgrade: h2c" (see hijackedConn.falseIdle).
func (t *connTracker) hijackEnds(c net.Conn, err error, h2cUpgrade bool) net.Conn {
	t.mu.Lock()
	t.hijacking--
	t.changed()
	if err != nil {
		t.mu.Unlock()
		return c
	}
	hc := &hijackedConn{Conn: c, t: t, addr: addrKey(c), falseIdle: h2cUpgrade}
	late := t.pastDeadline
	if !late {
		t.hijacked[hc] = struct{}{}
		if hc.addr != "" {
			t.byAddr[hc.addr] = append(t.byAddr[hc.addr], hc)
		}
	}
	t.mu.Unlock()
	if late {
		// The hook has closed what it knew of at its deadline and is gone:
		// nobody else would close this one.
		closeNow(c)
	}
	if _, ok := c.(halfCloser); ok {
		return hijackedHalfCloser{hc}
	}
	return hc
}

// upgradesToH2C reports whether r asks for "Upgrade: h2c" (RFC 7540
// section 3.2), the way x/net's h2c.NewHandler tells such a request.
func upgradesToH2C(r *http.Request) bool {
	for _, v := range r.Header["Upgrade"] {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "h2c") {
				return true
			}
		}
	}
	return false
}

func (t *connTracker) hijackedClosed(c *hijackedConn) {
	t.mu.Lock()
	delete(t.hijacked, c)
	if same := t.byAddr[c.addr]; len(same) > 0 {
		for i, o := range same {
			if o == c {
				same = append(same[:i], same[i+1:]...)
				break
			}
		}
		if len(same) == 0 {
			delete(t.byAddr, c.addr)
		} else {
			t.byAddr[c.addr] = same
		}
	}
	t.changed()
	t.mu.Unlock()
}

// changed wakes the hook, if it waits; t.mu is held.
func (t *connTracker) changed() {
	if t.wake != nil {
		close(t.wake)
		t.wake = nil
	}
}

// h2cFlushGrace is how long after x/net reports an h2c connection idle the
// hook waits for x/net's last write when no write follows the report.
// x/net reports StateIdle as soon as a stream's last frame is in its
// buffer (closeStream, called from wroteFrame), and flushes that buffer
// right after, on a goroutine of its own: the first write to end after the
// report is that flush. No write follows when the buffer was already empty
// (a large last frame is written straight through) or the client reset
// the stream; then nothing is left to flush, and the grace only bounds the
// wait.
const h2cFlushGrace = 100 * time.Millisecond

// h2cLinger is how long the hook leaves an h2c connection open after
// shutting its writing side, for the client to close it first; net/http
// waits as long before it closes an HTTP/1.x connection it has shut so.
const h2cLinger = 500 * time.Millisecond

// h2cStep is what the hook does next to an h2c connection.
type h2cStep int

const (
	h2cWait  h2cStep = iota // nothing yet
	h2cShut                 // shut its writing side
	h2cClose                // close it
)

// h2cReport notes x/net's report for the connection it serves over c;
// t.mu is held.
func (c *hijackedConn) h2cReport(st http.ConnState) {
	c.h2c = true
	if st == http.StateActive {
		c.idleSince = time.Time{}
		return
	}
	if c.falseIdle {
		c.falseIdle = false
		return
	}
	if c.idleSince.IsZero() {
		c.idleSince, c.wroteAtIdle = time.Now(), c.wrote.Load()
	}
}

// h2cIdleFromNow counts the h2c connections already idle as idle from
// now, the hook's start, with the writes so far: with http2.ConfigureServer
// on the server, Shutdown has x/net write a GOAWAY on each, and the hook
// shuts the connection once that write has returned (or after
// h2cFlushGrace with none), so that the client reads the GOAWAY and retries
// elsewhere a request it sends then, rather than lose it with the
// connection.
func (t *connTracker) h2cIdleFromNow(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for hc := range t.hijacked {
		if hc.h2c && !hc.idleSince.IsZero() {
			hc.idleSince, hc.wroteAtIdle = now, hc.wrote.Load()
		}
	}
}

// h2cNext says what the hook does next to c, an h2c connection, now; when
// it waits, it returns when to look again (zero: at the next change).
//
// It does not close the connection when x/net reports it idle: the client
// may still be sending (a request, a WINDOW_UPDATE for the response it
// reads), and a socket closed with the client's bytes unread, or that
// receives some after, answers with a reset, which discards whatever of
// the responses the kernel has not sent yet (a slow reader's last
// kilobytes). Once x/net's last write after the report has returned (or
// h2cFlushGrace has passed with none), it shuts the writing side instead:
// the client gets every byte, then the end of the stream, and closes the
// connection (Go's client does at once), and x/net, still reading, closes
// its side. The connection drops x/net's writes from then on (see
// dropWrites), and the hook closes it after h2cLinger if the client has
// not. t.mu is held.
func (c *hijackedConn) h2cNext(now time.Time) (step h2cStep, again time.Time) {
	switch {
	case !c.h2c:
		return h2cWait, time.Time{}
	case !c.shutAt.IsZero():
		if end := c.shutAt.Add(h2cLinger); now.Before(end) {
			return h2cWait, end
		}
		return h2cClose, time.Time{}
	case c.idleSince.IsZero() && !c.dropWrites.Load():
		return h2cWait, time.Time{}
	}
	c.watched.Store(true) // a write's end wakes the hook
	if !c.dropWrites.Load() {
		switch {
		case c.writing.Load() > 0:
			return h2cWait, time.Time{}
		case c.wrote.Load() == c.wroteAtIdle && now.Before(c.idleSince.Add(h2cFlushGrace)):
			return h2cWait, c.idleSince.Add(h2cFlushGrace)
		}
		// The drop first, then the count of writes under way: a write
		// that begins now either sees the drop or is counted below.
		c.dropWrites.Store(true)
	}
	if c.writing.Load() > 0 {
		return h2cWait, time.Time{} // one that began before the drop: its end
	}
	return h2cShut, time.Time{}
}

// lingers reports whether the hook, ending c, shuts its writing side (see
// shutWrite) and leaves it open for h2cLinger, rather than close it now.
// It closes now a connection that cannot shut its writing side alone and
// had nothing written since it went idle: nothing of a response is left on
// its way to be cut, and a client that sees no end would send its next
// requests into the drop for the whole linger. t.mu is held.
func (c *hijackedConn) lingers() bool {
	_, half := c.Conn.(halfCloser)
	return half || c.wrote.Load() > c.wroteAtIdle
}

// shutWrite shuts c's writing side, or closes it if it is a TLS
// connection: a close_notify could block on a client that reads nothing,
// and h2c is cleartext anyway. A connection that cannot shut its writing
// side alone (a listener's wrapper that embeds net.Conn, as
// netutil.LimitListener's) is left open, its writes dropped, until the
// hook closes it after h2cLinger: closing it now, under a client still
// reading (and sending WINDOW_UPDATEs), would reset it and cut the
// responses the kernel has not sent yet.
func shutWrite(c net.Conn) {
	if _, secure := c.(*tls.Conn); secure {
		closeNow(c)
		return
	}
	if hc, ok := c.(halfCloser); ok {
		hc.CloseWrite()
	}
}

// trackers maps each server given to HTTPServer to its tracker, for
// Handler's Hijack. The keys are weak pointers, and a cleanup deletes an
// entry when its server is collected (a tracker does not point back to its
// server), so a server that is never drained is not kept alive here.
var trackers sync.Map // weak.Pointer[http.Server] -> *connTracker
