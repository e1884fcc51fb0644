package k8s

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// stream is one server-sent event client of GET /events, as a browser's
// EventSource is: when a stream ends it reconnects after the server's
// retry time (100 ms) with Last-Event-ID, and the server resumes from there.
type stream struct {
	mu     sync.Mutex
	last   uint64   // the id of the last event received
	events int      // events received
	moves  int      // streams that ended cleanly, each followed by a reconnect
	gaps   int      // events whose id was not last+1
	errors []string // streams cut mid-way and reconnects that failed
}

// follow keeps the stream going through addr until ctx is done.
func (s *stream) follow(ctx context.Context, addr string) {
	for ctx.Err() == nil {
		clean, err := s.once(ctx, addr)
		s.mu.Lock()
		switch {
		case ctx.Err() != nil: // the test ended it
		case err != nil:
			s.errors = append(s.errors, err.Error())
		case clean:
			s.moves++
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond): // the server's retry: 100
		}
	}
}

// once reads one stream to its end. clean means the response ended at an
// event boundary, as the server ends it; an error, that it did not start
// or was cut.
func (s *stream) once(ctx context.Context, addr string) (clean bool, err error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return false, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	s.mu.Lock()
	req := fmt.Sprintf("GET /events HTTP/1.1\r\nHost: load\r\nAccept: text/event-stream\r\nLast-Event-ID: %d\r\n\r\n", s.last)
	s.mu.Unlock()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		return false, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("status %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	var id uint64
	pending := false // fields read, not yet dispatched
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "" && pending:
			s.dispatch(id)
			pending = false
		case strings.HasPrefix(line, "id: "):
			id, err = strconv.ParseUint(strings.TrimPrefix(line, "id: "), 10, 64)
			if err != nil {
				return false, err
			}
			pending = true
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("stream cut: %w", err)
	}
	if pending {
		return false, fmt.Errorf("stream cut in the middle of event %d", id)
	}
	return true, nil
}

func (s *stream) dispatch(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id != s.last+1 {
		s.gaps++
	}
	s.last = id
	s.events++
}

func (s *stream) counts() (events, moves, gaps int, errors []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.events, s.moves, s.gaps, append([]string(nil), s.errors...)
}

// startStreams follows n streams through addr until ctx is done.
func startStreams(ctx context.Context, wg *sync.WaitGroup, addr string, n int) []*stream {
	ss := make([]*stream, n)
	for i := range ss {
		ss[i] = &stream{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ss[i].follow(ctx, addr)
		}()
	}
	return ss
}
