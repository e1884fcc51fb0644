// Command fx is the minimal HTTP service with go.uber.org/fx: the server
// starts in an OnStart hook and drains in an OnStop hook; fx's own events go
// to the same slog logger; app.Run waits for SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"

	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	fx.New(
		fx.Supply(log),
		fx.WithLogger(func(l *slog.Logger) fxevent.Logger { return &fxevent.SlogLogger{Logger: l} }),
		fx.Invoke(serve),
	).Run()
	log.Info("stopped")
}

func serve(lc fx.Lifecycle, log *slog.Logger) {
	srv := &http.Server{Addr: addr(), Handler: http.HandlerFunc(hello)}
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			ln, err := net.Listen("tcp", srv.Addr)
			if err != nil {
				return err
			}
			log.Info("serving", "addr", srv.Addr)
			go func() {
				if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
					log.Error("serve", "error", err)
				}
			}()
			return nil
		},
		OnStop: srv.Shutdown,
	})
}

func hello(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello\n")) }

func addr() string {
	if a := os.Getenv("ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:8080"
}
