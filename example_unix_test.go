//go:build unix

package shutdown_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/gracefulgo/shutdown"
)

// A real SIGTERM, sent by the process to itself, starts the shutdown; the
// cause names it, and a signal-started shutdown is clean.
func ExampleWithSignals() {
	m := shutdown.New(quiet, shutdown.WithSignals(syscall.SIGTERM))
	m.Add("db", func(ctx context.Context) error {
		fmt.Println("closing db")
		return nil
	})
	p, err := os.FindProcess(os.Getpid())
	if err != nil {
		fmt.Println(err)
		return
	}
	p.Signal(syscall.SIGTERM)
	err = m.Wait()
	fmt.Println(context.Cause(m.Context()))
	fmt.Println("result:", err)
	// Output:
	// closing db
	// shutdown: received SIGTERM
	// result: <nil>
}

// The cause of a signal-started shutdown is a *SignalError, so a service
// can tell which signal stopped it (SIGINT from a terminal, SIGTERM from an
// orchestrator).
func ExampleSignalError() {
	m := shutdown.New(quiet, shutdown.WithSignals(syscall.SIGINT))
	p, err := os.FindProcess(os.Getpid())
	if err != nil {
		fmt.Println(err)
		return
	}
	p.Signal(syscall.SIGINT)
	m.Wait()
	var se *shutdown.SignalError
	if errors.As(context.Cause(m.Context()), &se) {
		fmt.Println("stopped by", se.Signal)
		fmt.Println("a CLI would exit", se.ExitCode()) // os.Exit(se.ExitCode())
	}
	// Output:
	// stopped by interrupt
	// a CLI would exit 130
}
