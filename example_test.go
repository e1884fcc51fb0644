package shutdown_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gracefulgo/shutdown"
)

// quiet keeps the examples' output to what they print themselves.
var quiet = shutdown.WithLogger(slog.New(slog.DiscardHandler))

// Hooks run last added first, like deferred calls: the server that uses the
// database stops before the database closes.
func Example() {
	m := shutdown.New(quiet)
	m.Add("database", func(ctx context.Context) error {
		fmt.Println("close database")
		return nil
	})
	m.Add("cache", func(ctx context.Context) error {
		fmt.Println("flush cache")
		return nil
	})
	m.Add("http", func(ctx context.Context) error {
		fmt.Println("drain http server")
		return nil
	})

	m.Trigger() // in a service: SIGTERM or SIGINT
	if err := m.Wait(); err != nil {
		fmt.Println(err)
	}
	// Output:
	// drain http server
	// flush cache
	// close database
}

// Run wraps main: fn runs until shutdown starts (here it ends on its own,
// which starts shutdown too), then the hooks run, and Run returns one error
// that says what went wrong.
func ExampleManager_Run() {
	m := shutdown.New(quiet)
	m.Add("database", func(ctx context.Context) error {
		return errors.New("connection reset")
	})
	err := m.Run(func(ctx context.Context) error {
		fmt.Println("serving")
		return nil
	})
	fmt.Println(err)
	// Output:
	// serving
	// shutdown: hook "database": connection reset
}

// Go runs the parts of a service as components: any of them returning
// stops the others. Here the gRPC server fails at startup, so the HTTP
// server, still serving, is drained by its hook, the worker ends its job
// when the context is cancelled, and the queue closes only after the
// worker has returned (AfterRun). Wait names what failed.
func ExampleManager_Go() {
	m := shutdown.New(quiet)
	stopHTTP := make(chan struct{})
	m.Add("queue", func(ctx context.Context) error {
		fmt.Println("queue closed")
		return nil
	}, shutdown.AfterRun())
	m.Add("http", func(ctx context.Context) error {
		close(stopHTTP) // shutdown.HTTPServer(srv) in a real service
		return nil
	})

	m.Go("http", func(ctx context.Context) error {
		<-stopHTTP
		return http.ErrServerClosed // a clean stop: not in the result
	})
	m.Go("worker", func(ctx context.Context) error {
		<-ctx.Done()
		fmt.Println("worker finished its job")
		return nil
	})
	m.Go("grpc", func(ctx context.Context) error {
		return errors.New("listen tcp :9090: bind: address already in use")
	})

	err := m.Wait()
	fmt.Println(context.Cause(m.Context()))
	fmt.Println(err)
	// Output:
	// worker finished its job
	// queue closed
	// shutdown: component "grpc" returned: listen tcp :9090: bind: address already in use
	// shutdown: component "grpc": listen tcp :9090: bind: address already in use
}

// Release releases a Manager that will not be used, say when a constructor
// fails after New: it stops catching signals and ends the Manager, so no
// goroutine of it is left and SIGINT kills the process again.
func ExampleManager_Release() {
	m := shutdown.New(quiet)
	defer m.Release() // once Wait has returned, it changes nothing
	if _, err := os.Open("/no/such/config.json"); err != nil {
		fmt.Println("config:", errors.Unwrap(err))
		return
	}
	// ... m.Add, m.Go, m.Wait ...
	// Output:
	// config: no such file or directory
}

// A hook gets a context that ends a little before its bound; a hook that
// returns the context's error is reported with the bound that cut it off.
func ExampleTimeout() {
	m := shutdown.New(quiet)
	m.Add("slow-flush", func(ctx context.Context) error {
		<-ctx.Done() // a flush that does not finish in time
		return ctx.Err()
	}, shutdown.Timeout(100*time.Millisecond))
	m.Trigger()
	err := m.Wait()
	fmt.Println(err)
	fmt.Println(errors.Is(err, shutdown.ErrTimeout))
	// Output:
	// shutdown: hook "slow-flush": timed out after 100ms
	// true
}

// AfterRun makes the flush wait for the writer, so it never races it.
// Register in the natural order: the resource first, its user second. The
// opposite order (an AfterRun hook that runs before the hook that makes fn
// return) waits for fn until the budget ends.
func ExampleAfterRun() {
	m := shutdown.New(quiet)
	var buf strings.Builder
	w := bufio.NewWriter(&buf)
	m.Add("flush", func(ctx context.Context) error {
		fmt.Println("flush after the writer stopped")
		return w.Flush()
	}, shutdown.AfterRun())

	err := m.Run(func(ctx context.Context) error {
		for i := 0; ; i++ {
			if i == 3 {
				m.Trigger() // in a service: SIGTERM
			}
			select {
			case <-ctx.Done():
				fmt.Println("writer stopped")
				return nil
			default:
				fmt.Fprintf(w, "record %d\n", i)
			}
		}
	})
	fmt.Println(err, strings.HasPrefix(buf.String(), "record 0\n"))
	// Output:
	// writer stopped
	// flush after the writer stopped
	// <nil> true
}

// The wrong order: the AfterRun hook is added after the server, so it runs
// before it and waits for Run's function, which waits for the server to
// stop, which waits for its turn after the AfterRun hook: nothing moves until
// the budget ends. Add the database first, as in ExampleAfterRun.
func ExampleAfterRun_wrongOrder() {
	m := shutdown.New(quiet, shutdown.WithTimeout(100*time.Millisecond))
	stopped := make(chan struct{})
	m.Add("server", func(ctx context.Context) error { close(stopped); return nil })
	m.Add("database", func(ctx context.Context) error { return nil }, shutdown.AfterRun())
	err := m.Run(func(ctx context.Context) error {
		m.Trigger() // in a service: SIGTERM
		<-stopped   // serving until the server hook stops it
		return nil
	})
	fmt.Println(err)
	close(stopped) // the server hook never ran: let the abandoned function end
	// Output:
	// shutdown: run function: timed out after the 100ms budget
	// shutdown: hook "database": skipped: Run's function had not returned when the 100ms budget was spent
	// shutdown: hook "server": skipped: the 100ms budget was spent
}

// Hooks in the same Concurrent set run together; the set takes the place of
// its first member in the order.
func ExampleConcurrent() {
	m := shutdown.New(quiet)
	m.Add("database", func(ctx context.Context) error {
		fmt.Println("database closed after both servers")
		return nil
	})
	for _, name := range []string{"public", "admin"} {
		m.Add(name, func(ctx context.Context) error {
			return nil // drain one server; both drain at once
		}, shutdown.Concurrent("servers"))
	}
	m.Trigger()
	fmt.Println(m.Wait())
	// Output:
	// database closed after both servers
	// <nil>
}

type file struct{ name string }

func (f *file) Close() error {
	fmt.Println("closed", f.name)
	return nil
}

// Closer turns anything with a Close method into a hook.
func ExampleCloser() {
	m := shutdown.New(quiet)
	m.Add("audit log", shutdown.Closer(&file{"audit.log"}))
	m.Trigger()
	fmt.Println(m.Wait())
	// Output:
	// closed audit.log
	// <nil>
}

// HTTPServer drains a server: its listener closes, requests in flight
// finish, and Serve returns http.ErrServerClosed, which Run treats as a
// clean stop.
func ExampleHTTPServer() {
	m := shutdown.New(quiet)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &http.Server{Handler: m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))}
	m.Add("http", shutdown.HTTPServer(srv))

	go func() {
		resp, err := http.Get("http://" + ln.Addr().String())
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			fmt.Println(string(b))
		}
		m.Trigger()
	}()
	err = m.Run(func(ctx context.Context) error { return srv.Serve(ln) })
	fmt.Println("Run:", err)
	// Output:
	// hello
	// Run: <nil>
}

// TriggerCause starts shutdown with a reason, which Context's cause reports
// and Wait returns.
func ExampleManager_TriggerCause() {
	m := shutdown.New(quiet)
	m.TriggerCause(errors.New("config: database URL changed"))
	err := m.Wait()
	fmt.Println(context.Cause(m.Context()))
	fmt.Println(err)
	// Output:
	// config: database URL changed
	// config: database URL changed
}

// Errors name each hook that failed; errors.As reaches the details.
func ExampleHookError() {
	m := shutdown.New(quiet)
	m.Add("queue", func(ctx context.Context) error { panic("nil consumer") })
	m.Trigger()
	err := m.Wait()
	var he *shutdown.HookError
	if errors.As(err, &he) {
		fmt.Println(he.Name, errors.Is(err, shutdown.ErrPanic), len(he.Stack) > 0)
	}
	fmt.Println(err)
	// Output:
	// queue true true
	// shutdown: hook "queue": panic: nil consumer
}

// A whole service: the usual shape of main. It blocks until SIGTERM or
// SIGINT, so it has no Output to check.
func ExampleNew() {
	m := shutdown.New(shutdown.WithDrainDelay(5 * time.Second))
	srv := &http.Server{Addr: ":8080", Handler: m.Handler(http.DefaultServeMux)}
	http.Handle("/readyz", m.ReadinessHandler())
	m.Add("http", shutdown.HTTPServer(srv))
	if err := m.Run(func(ctx context.Context) error { return srv.ListenAndServe() }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// Report says where the time went; its String draws a timeline. The
// durations vary from run to run, so this example prints only the outcomes.
func ExampleManager_Report() {
	m := shutdown.New(quiet, shutdown.WithTimeout(time.Second))
	m.Add("database", func(ctx context.Context) error { return nil })
	m.Add("cache", func(ctx context.Context) error { return errors.New("redis: connection refused") })
	m.Add("queue", func(ctx context.Context) error {
		<-ctx.Done() // stuck until its deadline
		return ctx.Err()
	}, shutdown.Timeout(50*time.Millisecond))
	m.Trigger()
	m.Wait()

	// fmt.Print(r) would draw the timeline:
	//   shutdown: triggered: 47ms of the 1s budget
	//   queue    |xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx |   189µs +46ms    timeout
	//   cache    |                                       x|    46ms +375µs   failed
	//   database |                                       =|    46ms +86µs    ok
	r := m.Report()
	fmt.Println(r.Cause)
	for _, h := range r.Hooks {
		fmt.Println(h.Name, h.Outcome)
	}
	// Output:
	// shutdown: triggered
	// queue timeout
	// cache failed
	// database ok
}
