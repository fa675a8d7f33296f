package store

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"time"
)

// checkpointer moves the SQLite write-ahead log into the database file in
// the background. SQLite's automatic checkpoint runs inside the commit that
// crosses its threshold (1,000 pages): under load every dozen commits or so
// one took 10-25 ms longer, and every webhook waiting on it waited too. So
// the write connection never checkpoints (wal_autocheckpoint=0) and this
// connection runs PASSIVE checkpoints, which copy what no reader still
// needs without taking the write lock. SQLite starts the log over from the
// beginning once it has all been copied, and journal_size_limit trims the
// file then.
type checkpointer struct {
	db      *sql.DB
	commits func() uint64
	log     *slog.Logger
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// checkpointEvery is how often the log is copied while there are writes.
const checkpointEvery = 250 * time.Millisecond

func startCheckpointer(path string, commits func() uint64, log *slog.Logger) (*checkpointer, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=synchronous(FULL)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	c := &checkpointer{db: db, commits: commits, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	go c.loop()
	return c, nil
}

func (c *checkpointer) loop() {
	defer close(c.done)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	var seen uint64
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		n := c.commits()
		if n == seen {
			continue // nothing written since the last one
		}
		seen = n
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := c.db.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`)
		cancel()
		if err != nil {
			c.log.Warn("could not checkpoint the SQLite log; it grows until a checkpoint succeeds", "error", err)
		}
	}
}

// close stops the loop. The last connection to close checkpoints what is left.
func (c *checkpointer) close() error {
	c.once.Do(func() { close(c.stop) })
	<-c.done
	return c.db.Close()
}
