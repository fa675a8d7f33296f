package store

import "database/sql"

// SetDispatchQueue lowers the in-memory bound of a SQLite store's
// dispatcher, so a test can overflow it.
func SetDispatchQueue(s Store, n int) {
	e := s.(*engine[*sql.Tx])
	e.direct.mu.Lock()
	e.direct.maxQueue = n
	e.direct.mu.Unlock()
}

// HeldRows is how many first attempts' rows a SQLite store holds for their
// attempt (freshRows).
func HeldRows(s Store) int {
	e := s.(*engine[*sql.Tx])
	e.fresh.mu.Lock()
	defer e.fresh.mu.Unlock()
	return len(e.fresh.rows)
}

// SetRestartFrames sets the log length past which the committer lets the
// log start over, for every store in the process; it returns the old value.
func SetRestartFrames(n int) int {
	old := restartFrames
	restartFrames = n
	return old
}
