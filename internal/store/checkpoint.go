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
// file then. Under steady writes that moment never comes on its own, so a
// long log is finished by the committer between two commits (catchUp).
type checkpointer struct {
	db      *sql.DB
	commits func() uint64
	// catchUp asks the committer to copy the rest of a long log itself
	// between two commits, so the log can start over (see loop).
	catchUp func()
	log     *slog.Logger
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// checkpointEvery is how often the log is copied while there are writes.
const checkpointEvery = 250 * time.Millisecond

// restartFrames is the log length (4 KiB frames) past which the committer
// is asked to let the log start over (a variable for tests).
var restartFrames = 4096

func startCheckpointer(path string, commits func() uint64, catchUp func(), log *slog.Logger) (*checkpointer, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=synchronous(FULL)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	c := &checkpointer{db: db, commits: commits, catchUp: catchUp, log: log, stop: make(chan struct{}), done: make(chan struct{})}
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
		// The log's length in frames when the checkpoint began; it copies up
		// to there, and commits land after it meanwhile.
		var busy, frames, copied int
		err := c.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &copied)
		cancel()
		if err != nil {
			c.log.Warn("could not checkpoint the SQLite log; it grows until a checkpoint succeeds", "error", err)
			continue
		}
		// Under steady writes a checkpoint never catches the end of the log:
		// commits land while it copies, so SQLite never starts the log over
		// and it grew by ~50 MB/s at full load. Past restartFrames the
		// committer copies the few frames written since, between two commits,
		// when nothing else can write; its next commit starts the log over.
		if frames >= restartFrames && c.catchUp != nil {
			c.catchUp()
		}
	}
}

// close stops the loop. The last connection to close checkpoints what is left.
func (c *checkpointer) close() error {
	c.once.Do(func() { close(c.stop) })
	<-c.done
	return c.db.Close()
}
