// Command postgres takes orders over HTTP and stores them in PostgreSQL
// through a pgx pool: POST /orders?id=N inserts order N in a transaction and
// answers 201 only after COMMIT. On SIGTERM the HTTP server drains (every
// order in flight commits and is answered), then the pool closes, so
// PostgreSQL sees each connection end with a Terminate message, not a broken
// socket with a transaction open.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/gracefulgo/shutdown"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	dsn := flag.String("dsn", os.Getenv("DATABASE_URL"), "PostgreSQL connection string")
	work := flag.Duration("tx-delay", 20*time.Millisecond, "time each order's transaction stays open (pg_sleep), to stand for real work")
	flag.Parse()
	m := shutdown.New()

	pool, err := pgxpool.New(context.Background(), *dsn)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), `CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, placed timestamptz NOT NULL DEFAULT now())`); err != nil {
		log.Fatal(err)
	}
	// Added first, so it runs last; AfterRun also holds it until the HTTP
	// component has returned. pool.Close waits for every connection in use
	// to be released, which a stuck query can hold past the hook's
	// deadline: return then, and let Close finish as the process exits.
	m.Add("postgres", func(ctx context.Context) error {
		closed := make(chan struct{})
		go func() { pool.Close(); close(closed) }()
		select {
		case <-closed:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("pool.Close had not returned: %w", ctx.Err())
		}
	}, shutdown.AfterRun())

	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.FormValue("id"), 10, 64)
		if err != nil {
			http.Error(w, "id: "+err.Error(), http.StatusBadRequest)
			return
		}
		// The request's context, not m.Context(): an order in flight at the
		// signal commits; only the client going away rolls it back.
		err = pgx.BeginFunc(r.Context(), pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(r.Context(), `INSERT INTO orders (id) VALUES ($1)`, id); err != nil {
				return err
			}
			_, err := tx.Exec(r.Context(), `SELECT pg_sleep($1)`, work.Seconds())
			return err
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	srv := &http.Server{Handler: m.Handler(mux)}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	m.Add("http", shutdown.HTTPServer(srv)) // before Serve: it tracks connections
	m.Go("http", func(context.Context) error { return srv.Serve(ln) })
	fmt.Println("listening on", ln.Addr())

	if err := m.Wait(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(context.Cause(m.Context()))
}
