// Command handrolled is the minimal HTTP service with the careful
// hand-rolled shutdown loop: signal.NotifyContext, cleanups run last first,
// each under its own deadline and abandoned when late.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

type cleanup struct {
	name    string
	timeout time.Duration
	fn      func(context.Context) error
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	srv := &http.Server{Addr: addr(), Handler: http.HandlerFunc(hello)}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cleanups := []cleanup{{"http", 20 * time.Second, srv.Shutdown}}
	go func() {
		if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			log.Error("serve", "error", err)
			stop()
		}
	}()
	log.Info("serving", "addr", srv.Addr)
	<-ctx.Done()
	budget, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	failed := false
	for i := len(cleanups) - 1; i >= 0; i-- {
		c := cleanups[i]
		if err := runOne(budget, c); err != nil {
			log.Error("cleanup failed", "name", c.name, "error", err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
	log.Info("stopped")
}

func runOne(budget context.Context, c cleanup) error {
	ctx, cancel := context.WithTimeout(budget, c.timeout)
	defer cancel()
	done := make(chan error, 1) // buffered: an abandoned cleanup can still send
	go func() {
		defer func() {
			if v := recover(); v != nil {
				done <- fmt.Errorf("panic: %v", v)
			}
		}()
		done <- c.fn(ctx)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("abandoned: %w", ctx.Err())
	}
}

func hello(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello\n")) }

func addr() string {
	if a := os.Getenv("ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:8080"
}
