// Command queue is a NATS JetStream worker: it consumes the jobs stream
// through a durable pull consumer with explicit acks and, for each message,
// appends its payload (the job id) to a file, fsyncs it, prints
// "processed ID delivery N" and acks, waiting for the server to confirm.
// On SIGTERM it stops pulling, finishes and acks the messages it already
// holds, then drains the connection and waits for it to close, so nothing
// it processed is redelivered to the next worker.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/gracefulgo/shutdown"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	url := flag.String("nats", nats.DefaultURL, "NATS server URL")
	out := flag.String("out", "processed.txt", "file the processed ids are appended to")
	ackWait := flag.Duration("ack-wait", 30*time.Second, "redelivery delay of a message not acked")
	job := flag.Duration("work", 0, "time each job takes, to stand for real work")
	flag.Parse()
	m := shutdown.New()

	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	m.Add("ids file", shutdown.Closer(f), shutdown.AfterRun())

	closed := make(chan struct{})
	nc, err := nats.Connect(*url, nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		log.Fatal(err)
	}
	// Drain returns at once; the connection is done when the closed
	// handler runs. AfterRun: only after the worker has acked its last.
	m.Add("nats", func(ctx context.Context) error {
		if err := nc.Drain(); err != nil {
			return err
		}
		select {
		case <-closed:
			return nil
		case <-ctx.Done():
			nc.Close()
			return ctx.Err()
		}
	}, shutdown.AfterRun())

	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "JOBS", Subjects: []string{"jobs"}}); err != nil {
		log.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "JOBS", jetstream.ConsumerConfig{
		Durable: "worker", AckPolicy: jetstream.AckExplicitPolicy, AckWait: *ackWait,
	})
	if err != nil {
		log.Fatal(err)
	}
	m.Go("worker", func(ctx context.Context) error { return work(ctx, cons, f, *job) })
	fmt.Println("ready")
	if err := m.Wait(); err != nil {
		log.Fatal(err)
	}
}

// work processes messages until ctx is cancelled, then finishes the ones
// already pulled and returns nil.
func work(ctx context.Context, cons jetstream.Consumer, f *os.File, job time.Duration) error {
	// A small buffer: what is pulled is what must be finished at the signal.
	it, err := cons.Messages(jetstream.PullMaxMessages(10))
	if err != nil {
		return err
	}
	defer context.AfterFunc(ctx, it.Drain)() // stop pulling; Next yields what is buffered
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		time.Sleep(job) // the job: not cut short by ctx, it is finished
		if _, err := fmt.Fprintf(f, "%s\n", msg.Data()); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		md, err := msg.Metadata()
		if err != nil {
			return err
		}
		fmt.Printf("processed %s delivery %d\n", msg.Data(), md.NumDelivered)
		// DoubleAck is AckSync: it waits for the server's confirmation. Not
		// bound to ctx, which is already cancelled for the last messages.
		if err := msg.DoubleAck(context.WithoutCancel(ctx)); err != nil {
			return err
		}
	}
}
