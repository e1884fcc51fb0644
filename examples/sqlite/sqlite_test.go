//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMBacksUpEveryReportedCommit builds the program, stops it with
// SIGTERM mid-stream and finds, in the backup, every row whose commit it
// reported, and nothing else.
func TestSIGTERMBacksUpEveryReportedCommit(t *testing.T) {
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "sqlite")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// A hang guard only: it kills the child long after a healthy run ends.
	guard := 60 * time.Second
	if d, ok := t.Deadline(); ok {
		guard = min(guard, time.Until(d)*9/10)
	}
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	dir := filepath.Join(tmp, "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "-dir", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if cmd.ProcessState == nil { // the test failed before Wait
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()

	committed, signalled := 0, false
	var other []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		num, ok := strings.CutPrefix(line, "committed ")
		if !ok {
			other = append(other, line)
			continue
		}
		if n, err := strconv.Atoi(num); err != nil || n != committed+1 || len(other) > 0 {
			t.Fatalf("stdout line %q after committed %d and %q, want \"committed %d\"", line, committed, other, committed+1)
		}
		committed++
		if committed == 50 && !signalled {
			if err := syscall.Kill(cmd.Process.Pid, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			signalled = true
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want exit code 0; stdout ended %q; stderr:\n%s", err, other, stderr.String())
	}
	if !signalled {
		t.Fatalf("stdout ended after %d commits, before SIGTERM was sent; stderr:\n%s", committed, stderr.String())
	}
	backup := filepath.Join(dir, "backup.db")
	want := "shutdown: received SIGTERM; backup written to " + backup
	if len(other) != 1 || other[0] != want {
		t.Errorf("stdout after the commits = %q, want [%q]", other, want)
	}

	for _, name := range []string{backup, filepath.Join(dir, "app.db")} {
		count, lo, hi, last, check := inspect(t, name)
		if count != committed || lo != 1 || hi != committed || last != committed || check != "ok" {
			t.Errorf("%s: %d rows, ids %d..%d, meta.last %d, integrity_check %q; want %d rows, ids 1..%d, meta.last %d, \"ok\"",
				filepath.Base(name), count, lo, hi, last, check, committed, committed, committed)
		}
	}
	if !t.Failed() {
		t.Logf("SIGTERM after 50 reported commits: %d committed, all %[1]d in backup.db", committed)
	}
}

// inspect opens a database read-only and reports its rows and its health.
func inspect(t *testing.T, name string) (count, lo, hi, last int, check string) {
	t.Helper()
	db, err := sql.Open("sqlite", fmt.Sprintf("file:%s?mode=ro", name))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.QueryRow("SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0), (SELECT last FROM meta) FROM rows").Scan(&count, &lo, &hi, &last)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return count, lo, hi, last, check
}
