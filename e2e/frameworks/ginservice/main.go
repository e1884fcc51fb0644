// Command ginservice is a gin service under shutdown, as docs/recipes.md
// wires it: a route, a slow route and a server-sent event stream that ends
// when the drain is over. The signal test sends it SIGTERM.
package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/gracefulgo/shutdown"
)

func main() {
	drain := flag.Duration("drain-delay", 5*time.Second, "time to keep serving after SIGTERM")
	flag.Parse()
	m := shutdown.New(shutdown.WithDrainDelay(*drain))

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.GET("/hello", func(c *gin.Context) { c.String(http.StatusOK, "hello\n") })
	r.GET("/slow", func(c *gin.Context) {
		slog.Info("slow request started")
		<-m.Context().Done() // in flight when the server's hook starts
		time.Sleep(100 * time.Millisecond)
		c.String(http.StatusOK, strings.Repeat("the slow response, whole\n", 4000))
	})
	r.GET("/events", func(c *gin.Context) {
		n := 0
		c.Stream(func(io.Writer) bool {
			if n == 0 {
				c.SSEvent("open", n)
			} else {
				select {
				case <-m.Context().Done(): // the drain is over: end the stream
					c.SSEvent("end", n)
					slog.Info("stream ended by shutdown")
					return false
				case <-c.Request.Context().Done():
					return false
				case <-time.After(50 * time.Millisecond):
					c.SSEvent("tick", n)
				}
			}
			n++
			return true
		})
	})

	srv := &http.Server{Handler: m.Handler(r), ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		slog.Error("listen", "error", err)
		os.Exit(1)
	}
	m.Add("http", shutdown.HTTPServer(srv))
	m.Go("http", func(context.Context) error { return srv.Serve(ln) })
	slog.Info("listening", "addr", ln.Addr().String())
	if err := m.Wait(); err != nil {
		slog.Error("shutdown", "error", err)
		os.Exit(1)
	}
	slog.Info("exiting")
}
