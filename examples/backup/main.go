// Command backup shows what SIGTERM saves and SIGKILL loses. It starts a new
// DIR/data.log, appends "record N" lines to it through a buffer, about one a
// millisecond, and prints "accepted N" once record N is in the buffer. On
// SIGTERM or SIGINT it stops, flushes and fsyncs data.log, copies it to
// DIR/backup.log and exits 0; after SIGKILL, whatever was still in the
// buffer is gone. See docs/signals.md.
//
//	go build -o /tmp/backup ./examples/backup
//	/tmp/backup -dir /tmp >/tmp/out & sleep 1; kill $!; wait $!   # or kill -9 $!
//
// (Signal the program itself: after "go run ... &", $! is the go command,
// and kill $! leaves the program running.)
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/gracefulgo/shutdown"
)

func main() {
	dir := flag.String("dir", ".", "directory for data.log and backup.log")
	flag.Parse()
	data, backup := filepath.Join(*dir, "data.log"), filepath.Join(*dir, "backup.log")
	f, err := os.OpenFile(data, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	w := bufio.NewWriter(f) // 4 KiB, written to the kernel only when full

	m := shutdown.New()
	// Hooks run last added first: the flush, then the backup. AfterRun makes
	// both wait until the writer (Run's fn) has returned, so w has one user.
	m.Add("backup", func(context.Context) error { return copyFile(data, backup) }, shutdown.AfterRun())
	m.Add("flush data.log", func(context.Context) error {
		return errors.Join(w.Flush(), f.Sync(), f.Close())
	}, shutdown.AfterRun())

	err = m.Run(func(ctx context.Context) error {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
			if _, err := fmt.Fprintf(w, "record %d\n", n); err != nil {
				return err
			}
			if _, err := fmt.Printf("accepted %d\n", n); err != nil {
				return err
			}
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%v; backup written to %s\n", context.Cause(m.Context()), backup)
}

// copyFile writes a copy of src to dst so that dst is either the old file or
// the whole new one, even after a power cut: temporary file, fsync, rename,
// fsync of the directory that holds the new name.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), filepath.Base(dst)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	_, err = io.Copy(tmp, in)
	if err = errors.Join(err, tmp.Sync(), tmp.Close()); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(dst))
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
