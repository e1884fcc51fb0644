// Command shutdown is the minimal HTTP service with this library: Run wraps
// the server, and the HTTPServer hook drains it on SIGTERM or SIGINT.
package main

import (
	"context"
	"log/slog"
	"net/http"
	"os"

	"github.com/gracefulgo/shutdown"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	m := shutdown.New(shutdown.WithLogger(log))
	srv := &http.Server{Addr: addr(), Handler: m.Handler(http.HandlerFunc(hello))}
	m.Add("http", shutdown.HTTPServer(srv))
	err := m.Run(func(context.Context) error {
		log.Info("serving", "addr", srv.Addr)
		return srv.ListenAndServe()
	})
	if err != nil {
		log.Error("shutdown", "error", err)
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
