package shutdown

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// Focused tests of behaviour the contract names and no other test reaches.

// blockingHandler is a log handler that blocks on records whose message
// contains block, until release is closed: a stuck log pipeline.
type blockingHandler struct {
	slog.Handler
	block   string
	blocked chan struct{} // closed when the first record blocks
	release chan struct{}
}

func (h *blockingHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.block) {
		close(h.blocked)
		<-h.release
	}
	return nil
}

// DESIGN step 7: the second signal's record goes to another goroutine and
// the exit waits for it at most 1s, so a stuck log handler cannot hold the
// process.
func TestSecondSignalExitsDespiteStuckLogHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &blockingHandler{Handler: slog.NewTextHandler(io.Discard, nil), block: "second signal",
			blocked: make(chan struct{}), release: make(chan struct{})}
		got := make(chan chan<- os.Signal, 1)
		exited := make(chan int, 1)
		m := New(seams{notify: captureNotify(got), exit: func(c int) { exited <- c }}, WithLogger(slog.New(h)))
		release := make(chan struct{})
		entered := make(chan struct{})
		m.Add("stuck", func(ctx context.Context) error { close(entered); <-release; return nil })
		sigs := <-got
		sigs <- syscall.SIGTERM
		<-entered
		start := time.Now()
		sigs <- syscall.SIGTERM
		<-h.blocked
		code := <-exited
		if waited := time.Since(start); waited != time.Second {
			t.Errorf("exit came %v after the second signal, want 1s (the log handler is stuck)", waited)
		}
		if code != 128+15 {
			t.Errorf("exit code = %d, want 143", code)
		}
		close(h.release)
		close(release)
		m.Wait()
	})
}

// DESIGN: without WithLogger, records go to slog.Default() as it is at the
// time of each record, not at New.
func TestDefaultLoggerAtTimeOfRecord(t *testing.T) {
	old := slog.Default()
	t.Cleanup(func() { slog.SetDefault(old) })
	var atNew, later logBuffer
	slog.SetDefault(atNew.logger(slog.LevelInfo))
	m := New(WithSignals())
	slog.SetDefault(later.logger(slog.LevelInfo))
	m.Add("db", func(context.Context) error { return nil })
	m.Trigger()
	if err := m.Wait(); err != nil {
		t.Fatalf("Wait() = %v, want nil", err)
	}
	if s := later.String(); !strings.Contains(s, "shutdown: started") || !strings.Contains(s, "hook=db") {
		t.Errorf("slog.Default() at the time of the records got:\n%s\nwant the start and the db hook", s)
	}
	if s := atNew.String(); s != "" {
		t.Errorf("slog.Default() at New got records:\n%s", s)
	}
}
