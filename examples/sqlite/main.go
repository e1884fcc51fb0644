// Command sqlite commits a row to DIR/app.db in a loop, about one a
// millisecond, and prints "committed N" after each commit. On SIGTERM or
// SIGINT it lets the transaction in flight finish, writes a consistent copy
// of the database to DIR/backup.db with VACUUM INTO, closes the database and
// exits 0, all through shutdown's hooks. See docs/signals.md.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/gracefulgo/shutdown"
	_ "modernc.org/sqlite"
)

const schema = `CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (last INTEGER NOT NULL);
INSERT INTO meta SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM meta);`

func main() {
	dir := flag.String("dir", ".", "directory for app.db and backup.db")
	flag.Parse()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(*dir, "app.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		log.Fatal(err)
	}
	var last int
	if _, err := db.Exec(schema); err != nil {
		log.Fatal(err)
	}
	if err := db.QueryRow("SELECT last FROM meta").Scan(&last); err != nil {
		log.Fatal(err)
	}

	m := shutdown.New()
	// Last added runs first: the backup, then the close. AfterRun holds both
	// until the writer loop (Run's fn) has returned, so neither sees a
	// transaction half done and the close does not pull the database away
	// from under a commit.
	m.Add("close db", shutdown.Closer(db), shutdown.AfterRun())
	backup := filepath.Join(*dir, "backup.db")
	m.Add("backup", func(ctx context.Context) error { return vacuumInto(ctx, db, backup) }, shutdown.AfterRun())

	err = m.Run(func(ctx context.Context) error {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for n := last + 1; ; n++ {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
			if err := commit(db, n); err != nil {
				return err
			}
			if _, err := fmt.Printf("committed %d\n", n); err != nil {
				return err
			}
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%v; backup written to %s\n", context.Cause(m.Context()), backup)
}

// commit writes row n and records it as the last one, in one transaction.
// It uses Begin, not BeginTx(ctx): a transaction bound to the shutdown
// context would be rolled back when shutdown starts; this one finishes.
func commit(db *sql.DB, n int) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback() // a no-op after Commit
	if _, err := tx.Exec("INSERT INTO rows (id, body) VALUES (?, ?)", n, fmt.Sprintf("row %d", n)); err != nil {
		return err
	}
	if _, err := tx.Exec("UPDATE meta SET last = ?", n); err != nil {
		return err
	}
	return tx.Commit()
}

// vacuumInto writes a consistent snapshot of db to dst. VACUUM INTO does not
// fsync what it writes and refuses an existing file, so it writes a
// temporary file, which is fsynced and renamed, and the directory fsynced.
func vacuumInto(ctx context.Context, db *sql.DB, dst string) error {
	tmp := dst + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", tmp); err != nil {
		return err
	}
	if err := syncPath(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	return syncPath(filepath.Dir(dst))
}

// syncPath fsyncs a file or a directory by name.
func syncPath(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}
