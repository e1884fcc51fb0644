// Command httpserver is an HTTP service that drains the way Kubernetes
// needs: readiness fails at SIGTERM, it keeps serving for -drain-delay,
// moves keep-alive clients off with Connection: close, finishes requests in
// flight and exits 0. The e2e tests and examples/kubernetes drive it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/gracefulgo/shutdown"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	drain := flag.Duration("drain-delay", 5*time.Second, "time to keep serving after SIGTERM, with readiness failing")
	timeout := flag.Duration("timeout", 25*time.Second, "total shutdown budget, drain delay included")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	m := shutdown.New(shutdown.WithTimeout(*timeout), shutdown.WithDrainDelay(*drain))

	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") }
	mux.HandleFunc("GET /{$}", ok)
	mux.HandleFunc("GET /livez", ok)
	mux.Handle("GET /readyz", m.ReadinessHandler())
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil {
			http.Error(w, "d: "+err.Error(), http.StatusBadRequest)
			return
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C: // the drain does not cancel requests: only Close does
			fmt.Fprintln(w, "ok")
		case <-r.Context().Done():
		}
	})
	// No BaseContext from m.Context(): it ends before the server drains.
	srv := &http.Server{Handler: m.Handler(mux), ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		slog.Error("listen", "error", err)
		os.Exit(1)
	}
	m.Add("http", shutdown.HTTPServer(srv))
	slog.Info("listening", "addr", ln.Addr().String(), "drain_delay", *drain, "timeout", *timeout)
	if err := m.Run(func(context.Context) error { return srv.Serve(ln) }); err != nil {
		slog.Error("shutdown", "error", err)
		os.Exit(1)
	}
	slog.Info("exiting")
}
