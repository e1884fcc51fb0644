package shutdown_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/gracefulgo/shutdown"
)

// Listen returns a socket inherited from the old process of an upgrade or
// from systemd, and otherwise binds one; Ready, once the server serves,
// tells the old process (or systemd) that this one has taken over.
func ExampleManager_Listen() {
	m := shutdown.New(shutdown.WithSignals(), shutdown.WithLogger(slog.New(slog.DiscardHandler)))
	l, err := m.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &http.Server{Handler: m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello")
	}))}
	m.Add("http", shutdown.HTTPServer(srv))
	m.Go("http", func(context.Context) error { return srv.Serve(l) })
	if err := m.Ready(); err != nil {
		fmt.Println(err)
		return
	}

	resp, err := http.Get("http://" + l.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
	m.Trigger()
	fmt.Println(m.Wait())
	// Output:
	// hello
	// <nil>
}

// A service that restarts without downtime on SIGHUP (systemd's
// `ExecReload=kill -HUP $MAINPID`): the new binary starts on the same
// socket, and this process shuts down once the new one is Ready; Wait
// returns nil then, and context.Cause(m.Context()) matches ErrUpgraded.
func ExampleWithUpgradeSignal() {
	m := shutdown.New(
		shutdown.WithUpgradeSignal(syscall.SIGHUP),
		shutdown.WithUpgradeTimeout(30*time.Second),
		shutdown.WithPIDFile("/run/myservice.pid"),
	)
	l, err := m.Listen("tcp", ":8080")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: m.Handler(http.NotFoundHandler())}
	m.Add("http", shutdown.HTTPServer(srv))
	m.Go("http", func(context.Context) error { return srv.Serve(l) })
	if err := m.Ready(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	if err := m.Wait(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
