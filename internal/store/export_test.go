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
