package frameworks

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/gin-gonic/gin"
	"github.com/go-chi/chi/v5"
	"github.com/labstack/echo/v4"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gracefulgo/shutdown"
)

// stack is one framework's wiring of the service, as docs/recipes.md
// shows it.
type stack struct {
	name string
	// wire builds the framework's routes for s under s.m and returns the
	// server that HTTPServer drains and what its component runs, which
	// serves on ln.
	wire  func(s *service, ln net.Listener) (srv *http.Server, serve func() error)
	calls func(t *testing.T, b *balancer) calls
	// unanswered: the wiring sends no GOAWAY, so a request the client sends
	// as HTTPServer ends its connection may fail before any response (Go's
	// client does not retry it). Every response that began still arrives
	// whole.
	unanswered bool
}

var stacks = []stack{
	{"gin", wireGin, http1, false},
	{"echo (own http.Server)", wireEcho, http1, false},
	{"echo (Start, WrapMiddleware)", wireEchoStart, http1, false},
	{"chi", wireChi, http1, false},
	{"x/net h2c, Handler outside", wireXNetH2C, http2PriorKnowledge, true},
	{"x/net h2c, Handler inside too", wireXNetH2CInner, http2PriorKnowledge, false},
	{"x/net h2c, inside + Configure", wireXNetH2CConfigured, http2PriorKnowledge, false},
	{"net/http h2c (Protocols)", wireProtocols, http2PriorKnowledge, false},
	{"connect-go", wireConnect, newConnectCalls, false},
}

func http1(t *testing.T, b *balancer) calls { return newHTTPCalls(t, b, false) }
func http2PriorKnowledge(t *testing.T, b *balancer) calls {
	return newHTTPCalls(t, b, true)
}

// serveOn is the component of a server of its own.
func serveOn(srv *http.Server, ln net.Listener) func() error {
	return func() error { return srv.Serve(ln) }
}

func wireGin(s *service, ln net.Listener) (*http.Server, func() error) {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.GET("/hello", func(c *gin.Context) { c.String(http.StatusOK, helloBody) })
	r.GET("/slow", func(c *gin.Context) { c.String(http.StatusOK, s.slow(c.Request.Context())) })
	r.GET("/events", func(c *gin.Context) {
		n := 0
		c.Stream(func(w io.Writer) bool {
			ev, more := s.next(c.Request.Context(), n)
			if ev != "" {
				c.SSEvent(ev, n)
			}
			n++
			return more
		})
	})
	srv := &http.Server{Handler: s.m.Handler(r)}
	return srv, serveOn(srv, ln)
}

// echoRoutes is the service on a new echo instance.
func echoRoutes(s *service) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/hello", func(c echo.Context) error { return c.String(http.StatusOK, helloBody) })
	e.GET("/slow", func(c echo.Context) error { return c.String(http.StatusOK, s.slow(c.Request().Context())) })
	e.GET("/events", func(c echo.Context) error {
		w := c.Response()
		w.Header().Set(echo.HeaderContentType, "text/event-stream")
		return s.stream(c.Request().Context(), func(ev string, n int) error {
			fmt.Fprintf(w, "event: %s\ndata: %d\n\n", ev, n)
			w.Flush()
			return nil
		})
	})
	return e
}

// wireEcho serves echo on a server of the service's own: the wiring the
// recipe recommends.
func wireEcho(s *service, ln net.Listener) (*http.Server, func() error) {
	srv := &http.Server{Handler: s.m.Handler(echoRoutes(s))}
	return srv, serveOn(srv, ln)
}

// wireEchoStart keeps echo's Start, which sets e.Server's Handler to e:
// Handler goes in as echo middleware, and HTTPServer drains e.Server.
func wireEchoStart(s *service, ln net.Listener) (*http.Server, func() error) {
	e := echoRoutes(s)
	e.Use(echo.WrapMiddleware(s.m.Handler))
	e.Listener = ln
	return e.Server, func() error { return e.Start("") }
}

func wireChi(s *service, ln net.Listener) (*http.Server, func() error) {
	r := chi.NewRouter()
	r.Use(s.m.Handler)
	r.Get("/hello", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, helloBody) })
	r.Get("/slow", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, s.slow(r.Context())) })
	r.Get("/events", s.sse)
	srv := &http.Server{Handler: r}
	return srv, serveOn(srv, ln)
}

// cleartextHTTP2 returns net/http's own protocols for HTTP/1.1 and HTTP/2
// without TLS (Go 1.24 on): no hijack, and Shutdown sends GOAWAY.
func cleartextHTTP2() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return p
}

func wireProtocols(s *service, ln net.Listener) (*http.Server, func() error) {
	srv := &http.Server{Handler: s.m.Handler(s.mux()), Protocols: cleartextHTTP2()}
	return srv, serveOn(srv, ln)
}

// The connect-go procedures, with protobuf's well-known StringValue for
// messages so that no generated code is needed.
const (
	procHello  = "/frameworks.v1.Service/Hello"
	procSlow   = "/frameworks.v1.Service/Slow"
	procEvents = "/frameworks.v1.Service/Events"
)

type str = wrapperspb.StringValue

func wireConnect(s *service, ln net.Listener) (*http.Server, func() error) {
	mux := http.NewServeMux()
	mux.Handle(procHello, connect.NewUnaryHandlerSimple(procHello, func(context.Context, *str) (*str, error) {
		return wrapperspb.String(helloBody), nil
	}))
	mux.Handle(procSlow, connect.NewUnaryHandlerSimple(procSlow, func(ctx context.Context, _ *str) (*str, error) {
		return wrapperspb.String(s.slow(ctx)), nil
	}))
	mux.Handle(procEvents, connect.NewServerStreamHandlerSimple(procEvents, func(ctx context.Context, _ *str, st *connect.ServerStream[str]) error {
		return s.stream(ctx, func(ev string, _ int) error { return st.Send(wrapperspb.String(ev)) })
	}))
	srv := &http.Server{Handler: s.m.Handler(mux), Protocols: cleartextHTTP2()}
	return srv, serveOn(srv, ln)
}

// connectCalls calls the connect-go service as its users' clients would:
// the plain requests with the Connect protocol over HTTP/1.1 (a browser's
// way), the slow call and the stream with gRPC over HTTP/2 without TLS.
type connectCalls struct {
	hello1, slow2 *connect.Client[str, str]
	events2       *connect.Client[str, str]
}

func newConnectCalls(t *testing.T, b *balancer) calls {
	h1 := newHTTPCalls(t, b, false).c
	h2 := newHTTPCalls(t, b, true).c
	return connectCalls{
		hello1:  connect.NewClient[str, str](h1, base+procHello),
		slow2:   connect.NewClient[str, str](h2, base+procSlow, connect.WithGRPC()),
		events2: connect.NewClient[str, str](h2, base+procEvents, connect.WithGRPC()),
	}
}

func unary(ctx context.Context, c *connect.Client[str, str], want string) error {
	resp, err := c.CallUnary(ctx, connect.NewRequest(wrapperspb.String("")))
	if err != nil {
		return err
	}
	if got := resp.Msg.GetValue(); got != want {
		return fmt.Errorf("got %d bytes, want %d", len(got), len(want))
	}
	return nil
}

func (c connectCalls) hello(ctx context.Context) error { return unary(ctx, c.hello1, helloBody) }
func (c connectCalls) slow(ctx context.Context) error  { return unary(ctx, c.slow2, slowBody) }

func (c connectCalls) stream(ctx context.Context, opened chan<- struct{}) error {
	st, err := c.events2.CallServerStream(ctx, connect.NewRequest(wrapperspb.String("")))
	if err != nil {
		return err
	}
	defer st.Close()
	var events []string
	for st.Receive() {
		events = append(events, st.Msg().GetValue())
		if len(events) == 1 && events[0] == "open" {
			opened <- struct{}{}
		}
	}
	return streamEnd(events, st.Err())
}

// serve starts st's service on a loopback port under m, with its server
// drained by HTTPServer and run as a component, as the recipes do.
func serve(t *testing.T, st stack, m *shutdown.Manager) (*service, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newService(m)
	srv, run := st.wire(s, ln)
	m.Add("http", shutdown.HTTPServer(srv))
	m.Go("http", func(context.Context) error { return run() })
	return s, ln.Addr().String()
}

// serveOther starts st's service again, as the other instance that the
// balancer sends new connections to once the one under test is out. It is
// shut down at the end of the test, after the clients have closed their
// connections if it was started before them.
func serveOther(t *testing.T, st stack) string {
	t.Helper()
	m := shutdown.New(shutdown.WithSignals(), shutdown.WithTimeout(budget),
		shutdown.WithLogger(logBuffer(t, "the other instance")))
	_, addr := serve(t, st, m)
	t.Cleanup(func() {
		m.Trigger()
		m.Wait()
	})
	return addr
}

// TestFrameworksFinishRequestsAndEndStreamsOnShutdown runs each framework
// on a real http.Server drained by HTTPServer, as a component, and
// triggers the shutdown while a slow request is in flight, two streams
// are open and clients keep sending requests through the drain delay
// (and on to another instance once the balancer has taken this one out).
// Every request gets its whole response, every stream is ended by
// m.Context() and the client sees its clean end, Wait returns nil, and
// the shutdown ends within the drain delay plus 1.5 s.
func TestFrameworksFinishRequestsAndEndStreamsOnShutdown(t *testing.T) {
	var rows []string
	for _, st := range stacks {
		t.Run(strings.NewReplacer(" ", "_", "/", "_").Replace(st.name), func(t *testing.T) {
			r := row{framework: st.name, exitCode: -1}
			defer func() { rows = append(rows, r.String()) }()
			m := shutdown.New(shutdown.WithSignals(), shutdown.WithDrainDelay(drain),
				shutdown.WithTimeout(budget), shutdown.WithLogger(logBuffer(t, "the instance under test")))
			s, addr := serve(t, st, m)
			// If the test ends before its shutdown:
			t.Cleanup(func() { m.Trigger(); m.Wait() })
			// Before the clients, so that its cleanup runs after theirs.
			other := serveOther(t, st)
			lb := newBalancer(addr)
			r.tr = drive(t, target{
				calls:    st.calls(t, lb),
				lb:       lb,
				other:    other,
				slowIn:   s.slowIn,
				shutdown: m.Trigger,
				done:     m.Done(),
			})
			err := m.Wait()
			if err != nil {
				t.Errorf("Wait() = %v, want nil", err)
			}
			r.ended, r.exitCode = int(s.ended.Load()), exitCode(err)
			r.tr.check(t, r.ended, st.unanswered)
			t.Logf("\n%s\n%s", tableHead, r)
		})
	}
	t.Logf("exit code: 0 when Wait returned nil; exit time: Trigger to Wait's return, drain delay %v; "+
		"in drain: requests sent to the instance during its drain; slowest: the slowest request\n%s\n%s",
		drain, tableHead, strings.Join(rows, "\n"))
}
