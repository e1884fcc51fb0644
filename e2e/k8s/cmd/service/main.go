// Command service is the e2e/k8s tests' workload beside examples/httpserver:
//
//   - -mode=naive: the control. It calls http.Server.Shutdown at once on
//     SIGTERM and its readiness answers 200 to the end.
//   - -mode=prestop: the library with WithGracePeriod(grace, preStop) and
//     WithDrainDelay(-drain-delay), 0 by default, for a pod whose preStop
//     sleep is the drain.
//   - -mode=budget-timeout and -mode=budget-grace: no server; a "flush" hook,
//     then a "slow" hook that needs -hook, under WithTimeout(60s) or
//     WithGracePeriod(grace, 0). Hooks run last added first, so the flush
//     comes after the slow hook.
//
// It logs "exiting" as its last line when it exits on its own.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/gracefulgo/shutdown"
)

func main() {
	mode := flag.String("mode", "naive", "naive, prestop, budget-timeout or budget-grace")
	grace := flag.Duration("grace", 30*time.Second, "the pod's terminationGracePeriodSeconds")
	preStop := flag.Duration("prestop", 5*time.Second, "the pod's preStop sleep (-mode=prestop)")
	drain := flag.Duration("drain-delay", 0, "the drain delay after the preStop sleep (-mode=prestop)")
	hook := flag.Duration("hook", 45*time.Second, "how long the slow hook needs (-mode=budget-*)")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	var err error
	switch *mode {
	case "naive":
		err = naive()
	case "prestop":
		err = preStopped(shutdown.New(shutdown.WithGracePeriod(*grace, *preStop), shutdown.WithDrainDelay(*drain)))
	case "budget-timeout":
		err = budget(shutdown.New(shutdown.WithTimeout(60*time.Second), shutdown.WithDrainDelay(0)), *hook)
	case "budget-grace":
		err = budget(shutdown.New(shutdown.WithGracePeriod(*grace, 0), shutdown.WithDrainDelay(0)), *hook)
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if err != nil {
		slog.Error("exiting", "error", err)
		os.Exit(1)
	}
	slog.Info("exiting")
}

// routes are the paths both servers answer: / and /livez say ok, /slow?d=2s
// answers after d, /events streams until the client leaves, and /readyz is
// the readiness given.
func routes(ready http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") }
	mux.HandleFunc("GET /{$}", ok)
	mux.HandleFunc("GET /livez", ok)
	mux.Handle("GET /readyz", ready)
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil {
			http.Error(w, "d: "+err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(d):
			fmt.Fprintln(w, "ok")
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("GET /events", events)
	return mux
}

// events streams server-sent events, one every 20 ms, numbered on from the
// request's Last-Event-ID, the naive way: until the client goes away. The
// library's version, in examples/httpserver, also ends at the drain's end.
func events(w http.ResponseWriter, r *http.Request) {
	id, _ := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64)
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprint(w, "retry: 100\n\n")
	rc := http.NewResponseController(w)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for rc.Flush() == nil {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
		id++
		fmt.Fprintf(w, "id: %d\ndata: %d\n\n", id, id)
	}
}

// naive is the common first attempt: Shutdown as soon as SIGTERM comes,
// while kube-proxy still sends new connections here.
func naive() error {
	srv := &http.Server{Handler: routes(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})), ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go srv.Serve(ln)
	slog.Info("listening", "addr", ln.Addr().String())
	s := <-sig
	slog.Info("naive: received signal; Shutdown at once", "signal", s.String())
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}

// preStopped serves with the library; the preStop sleep before SIGTERM was
// the drain, so the drain delay is 0.
func preStopped(m *shutdown.Manager) error {
	srv := &http.Server{Handler: m.Handler(routes(m.ReadinessHandler())), ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		return err
	}
	m.Add("http", shutdown.HTTPServer(srv))
	m.Go("http", func(context.Context) error { return srv.Serve(ln) })
	slog.Info("listening", "addr", ln.Addr().String())
	return m.Wait()
}

// budget registers a flush, then a slow hook that honours its context but
// needs longer than the pod's grace period.
func budget(m *shutdown.Manager, need time.Duration) error {
	m.Add("flush", func(context.Context) error {
		slog.Info("flush: ran")
		return nil
	})
	m.Add("slow", func(ctx context.Context) error {
		slog.Info("slow: started", "needs", need)
		select {
		case <-time.After(need):
			slog.Info("slow: done")
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	slog.Info("waiting for SIGTERM")
	return m.Wait()
}
