// Command oklog is the minimal HTTP service with github.com/oklog/run: a
// signal actor and a server actor whose interrupt drains the server.
package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/oklog/run"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	srv := &http.Server{Handler: http.HandlerFunc(hello)}
	ln, err := net.Listen("tcp", addr())
	if err != nil {
		log.Error("listen", "error", err)
		os.Exit(1)
	}
	var g run.Group
	g.Add(run.SignalHandler(context.Background(), syscall.SIGTERM, os.Interrupt))
	g.Add(func() error {
		log.Info("serving", "addr", ln.Addr().String())
		return srv.Serve(ln)
	}, func(error) {
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			log.Error("shutdown", "error", err)
		}
	})
	if err := g.Run(); err != nil && !errors.Is(err, run.ErrSignal) {
		log.Error("run", "error", err)
		os.Exit(1)
	}
	log.Info("stopped")
}

func hello(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello\n")) }

func addr() string {
	if a := os.Getenv("ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:8080"
}
