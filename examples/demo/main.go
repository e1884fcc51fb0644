// Demo is the README's first command: a small service (an HTTP server and a
// worker as components, a stand-in database and a buffered access log) that
// sends itself SIGTERM after a second and shuts down in order, logging each
// step and drawing where the time went.
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/gracefulgo/shutdown"
)

// database stands in for a connection pool whose Close takes a moment.
type database struct{}

func (database) Query() { time.Sleep(20 * time.Millisecond) }
func (database) Close() error {
	time.Sleep(150 * time.Millisecond)
	return nil
}

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stdout, nil)))
	m := shutdown.New(shutdown.WithDrainDelay(500*time.Millisecond), shutdown.WithTimeout(5*time.Second))

	var db database
	var mu sync.Mutex
	logFile, _ := os.CreateTemp("", "access-*.log")
	access := bufio.NewWriter(logFile)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		slog.Error("listen", "error", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		db.Query()
		if r.URL.Query().Has("slow") {
			time.Sleep(800 * time.Millisecond) // in flight when SIGTERM lands
		}
		mu.Lock()
		fmt.Fprintf(access, "%s %s\n", r.Method, r.URL)
		mu.Unlock()
		io.WriteString(w, "ok\n")
	}))}

	// Registered resource first, its users after: hooks run last added first.
	m.Add("database", shutdown.Closer(db), shutdown.AfterRun())
	m.Add("access-log", func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if err := access.Flush(); err != nil {
			return err
		}
		return logFile.Close()
	}, shutdown.AfterRun())
	m.Add("http", shutdown.HTTPServer(srv), shutdown.Timeout(2*time.Second))
	m.Go("http", func(ctx context.Context) error { return srv.Serve(ln) })
	m.Go("worker", func(ctx context.Context) error { // a job in flight at the drain's end finishes
		for ctx.Err() == nil {
			db.Query()
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	})

	go func() { // traffic, then a SIGTERM as Kubernetes or systemd would send
		for i := 0; i < 10; i++ {
			if resp, err := http.Get(fmt.Sprintf("http://%s/item/%d", ln.Addr(), i)); err == nil {
				resp.Body.Close()
			}
			time.Sleep(100 * time.Millisecond)
		}
		go http.Get(fmt.Sprintf("http://%s/report?slow", ln.Addr()))
		time.Sleep(50 * time.Millisecond)
		p, _ := os.FindProcess(os.Getpid())
		p.Signal(syscall.SIGTERM)
	}()

	err = m.Wait()
	os.Remove(logFile.Name())
	fmt.Print("\n", m.Report()) // where the seconds went
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1) // a hook failed; a clean shutdown exits 0, even after SIGTERM
	}
}
