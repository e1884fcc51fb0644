package shutdown_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/gracefulgo/shutdown"
)

// drainEnded is a log handler that prints why each drain ended.
type drainEnded struct{ slog.Handler }

func (drainEnded) Enabled(context.Context, slog.Level) bool { return true }

func (h drainEnded) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "shutdown: drain ended" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "reason" {
				fmt.Println("drain ended:", a.Value)
			}
			return true
		})
	}
	return nil
}

// WithAdaptiveDrain ends the drain once the requests through Handler have
// stopped for the quiet window Q (here 1s, its least), rather than after a
// fixed guess. Traffic stopped when the load balancer moved it, a moment
// before the signal; a fixed drain would have waited 5s.
func ExampleWithAdaptiveDrain() {
	m := shutdown.New(shutdown.WithSignals(), shutdown.WithAdaptiveDrain(0, 5*time.Second),
		shutdown.WithLogger(slog.New(drainEnded{slog.DiscardHandler})))
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	for range 100 { // a busy service: λ is high, so Q is its least, 1s
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}
	m.Trigger()
	m.Wait()
	fmt.Println("drained for", m.Report().Drain.Round(100*time.Millisecond))
	fmt.Println("late arrivals:", m.Report().LateArrivals)
	// Output:
	// drain ended: quiet
	// drained for 1s
	// late arrivals: 0
}
