package shutdown_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/gracefulgo/shutdown"
)

// Handler marks every response from Stopping on with "Connection: close":
// the client's keep-alive connection ends after that response, and its next
// request opens a new one, which the load balancer sends elsewhere.
func ExampleManager_Handler() {
	m := shutdown.New(shutdown.WithSignals(), shutdown.WithLogger(slog.New(slog.DiscardHandler)))
	ts := httptest.NewServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	})))
	defer ts.Close()

	get := func() {
		resp, err := http.Get(ts.URL)
		if err != nil {
			fmt.Println(err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// Go's client moves "Connection: close" from the header to Close.
		fmt.Println("Connection: close:", resp.Close)
	}
	get()
	m.Trigger()
	get()
	m.Wait()
	// Output:
	// Connection: close: false
	// Connection: close: true
}

// ReadinessHandler fails readiness as soon as shutdown starts, while the
// service keeps serving through the drain delay.
func ExampleManager_ReadinessHandler() {
	m := shutdown.New(shutdown.WithSignals(), shutdown.WithLogger(slog.New(slog.DiscardHandler)))
	probe := func() {
		w := httptest.NewRecorder()
		m.ReadinessHandler().ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
		fmt.Print(w.Code, " ", w.Body.String())
	}
	probe()
	m.Trigger()
	probe()
	m.Wait()
	// Output:
	// 200 ok
	// 503 shutting down
}

// WithGracePeriod takes the numbers from the pod's manifest. With
// terminationGracePeriodSeconds: 30 and a 10s preStop sleep, 18s are left
// for the shutdown; a drain delay that cannot fit is found at New.
func ExampleWithGracePeriod() {
	opt := shutdown.WithGracePeriod(30*time.Second, 10*time.Second)
	fmt.Println(opt)

	defer func() { fmt.Println(recover()) }()
	shutdown.New(shutdown.WithSignals(), shutdown.WithGracePeriod(8*time.Second, 0), shutdown.WithDrainDelay(6*time.Second))
	// Output:
	// shutdown.WithGracePeriod(30s, 10s)
	// shutdown: WithDrainDelay(6s) does not fit shutdown.WithGracePeriod(8s, 0s): its budget is 6s
}

// A stream (server-sent events here; a WebSocket alike) ends when
// Context is cancelled, after the drain delay, so that its client
// reconnects elsewhere; HTTPServer waits for it.
func ExampleManager_Handler_stream() {
	m := shutdown.New(shutdown.WithSignals(), shutdown.WithLogger(slog.New(slog.DiscardHandler)))
	srv := &http.Server{Handler: m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: 1\ndata: hello\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-m.Context().Done(): // shutting down: end the stream
		case <-r.Context().Done(): // the client went away
		}
	}))}
	m.Add("http", shutdown.HTTPServer(srv)) // before srv serves
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(ln)

	resp, err := http.Get("http://" + ln.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && sc.Text() != "" {
		fmt.Println(sc.Text())
	}
	m.Trigger()
	rest, err := io.ReadAll(resp.Body)
	fmt.Printf("stream ended: %q, %v\n", rest, err)
	fmt.Println("Wait:", m.Wait())
	// Output:
	// id: 1
	// data: hello
	// stream ended: "", <nil>
	// Wait: <nil>
}
