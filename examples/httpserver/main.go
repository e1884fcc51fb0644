// Command httpserver is an HTTP service that drains the way Kubernetes
// needs: readiness fails at SIGTERM, it keeps serving for -drain-delay,
// moves keep-alive clients off with Connection: close, finishes requests in
// flight and exits 0. GET /events is a server-sent event stream that ends
// when the drain is over, so EventSource clients resume on another
// instance; -h2c also serves HTTP/2 without TLS. The e2e tests and
// examples/kubernetes drive it.
//
// Outside Kubernetes it restarts without downtime: SIGHUP starts the
// binary at os.Args[0] again on the same socket (or a socket from systemd),
// and this process shuts down once the new one is Ready (docs/restarts.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/gracefulgo/shutdown"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	drain := flag.Duration("drain-delay", 5*time.Second, "time to keep serving after SIGTERM, with readiness failing")
	timeout := flag.Duration("timeout", 25*time.Second, "total shutdown budget, drain delay included")
	h2c := flag.Bool("h2c", false, "also serve HTTP/2 without TLS (prior knowledge)")
	pidFile := flag.String("pidfile", "", "write the pid here once serving (for PIDFile= and kill -HUP)")
	upgradeTimeout := flag.Duration("upgrade-timeout", time.Minute, "how long the new process of a SIGHUP upgrade may take to be ready")
	drainMin := flag.Duration("drain-min", 0, "with -drain-max: an adaptive drain, at least this long (instead of -drain-delay)")
	drainMax := flag.Duration("drain-max", 0, "with -drain-min: an adaptive drain, at most this long")
	flag.Parse()
	drainOpt := shutdown.WithDrainDelay(*drain)
	given := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given["drain-min"] != given["drain-max"] { // one alone would be ignored
		fmt.Fprintln(os.Stderr, "-drain-min and -drain-max go together")
		os.Exit(2)
	}
	if given["drain-min"] { // ends once requests through Handler stop
		drainOpt = shutdown.WithAdaptiveDrain(*drainMin, *drainMax)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	opts := []shutdown.Option{shutdown.WithTimeout(*timeout), drainOpt,
		shutdown.WithUpgradeSignal(syscall.SIGHUP), shutdown.WithUpgradeTimeout(*upgradeTimeout)}
	if *pidFile != "" {
		opts = append(opts, shutdown.WithPIDFile(*pidFile))
	}
	m := shutdown.New(opts...)

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
	mux.HandleFunc("GET /events", events(m.Context()))
	// No BaseContext from m.Context(): it ends before the server drains.
	srv := &http.Server{Handler: m.Handler(mux), ReadHeaderTimeout: 10 * time.Second}
	if *h2c {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	ln, err := m.Listen("tcp", *addr) // inherited on an upgrade or from systemd
	if err != nil {
		slog.Error("listen", "error", err)
		os.Exit(1)
	}
	m.Add("http", shutdown.HTTPServer(srv))
	slog.Info("listening", "addr", ln.Addr().String(), "pid", os.Getpid(), "drain_delay", *drain, "timeout", *timeout)
	m.Go("http", func(context.Context) error { return srv.Serve(ln) })
	if err := m.Ready(); err != nil { // the old process of an upgrade shuts down now
		slog.Error("ready", "error", err)
	}
	if err := m.Wait(); err != nil {
		slog.Error("shutdown", "error", err)
		slog.Info("exiting", "pid", os.Getpid(), "code", 1)
		os.Exit(1)
	}
	slog.Info("exiting", "pid", os.Getpid(), "code", 0)
}

// events streams server-sent events, one every 20 ms, whose ids count on
// from the request's Last-Event-ID (or from 1) and whose data is the id.
// The stream ends when stop is done: m.Context(), cancelled after the drain
// delay, once the load balancer sends new connections elsewhere, so the
// client's reconnect (with Last-Event-ID) resumes on another instance. A
// request that arrives after that gets an empty stream, with Connection:
// close from Handler, and so reconnects on a new connection.
func events(stop context.Context) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, "retry: 100\n\n") // reconnect after 100 ms, not the default 3 s
		rc := http.NewResponseController(w)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for rc.Flush() == nil {
			select {
			case <-stop.Done():
				return
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
			id++
			fmt.Fprintf(w, "id: %d\ndata: %d\n\n", id, id)
		}
	}
}
