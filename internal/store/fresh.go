package store

import "sync"

// freshRows holds the rows the committer just wrote for first attempts it
// handed to the dispatcher (SQLite), so an attempt a millisecond later does
// not read back what was written: Load takes each row from here at most once
// and reads the ledger for the rest. Reading them back was ~7% of the
// agent's CPU at full load (docs/load.md).
//
// A held row is exactly what the ledger holds until the row's own attempt
// changes it: the only other writer of a pending first attempt is an erasure
// (Purge), which drops everything held. Rows past the budget are simply not
// held; Load reads those.
type freshRows struct {
	mu    sync.Mutex
	rows  map[string]Loaded
	bytes int
}

// freshBudget bounds the payload bytes held. The dispatcher queue holds up to
// dispatchQueue ids; with ~1 KB webhooks they all fit.
const freshBudget = 32 << 20

// rowOverhead approximates a held row's size besides its payload.
const rowOverhead = 512

func newFreshRows() *freshRows { return &freshRows{rows: map[string]Loaded{}} }

// put holds rows just committed.
func (f *freshRows) put(ls []Loaded) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range ls {
		n := len(l.Event.Payload) + rowOverhead
		if f.bytes+n > freshBudget {
			return
		}
		if _, ok := f.rows[l.Delivery.ID]; ok {
			continue
		}
		f.rows[l.Delivery.ID] = l
		f.bytes += n
	}
}

// take removes and returns the held rows among ids, and the ids it does not hold.
func (f *freshRows) take(ids []string) (held []Loaded, rest []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.rows) == 0 {
		return nil, ids
	}
	held = make([]Loaded, 0, len(ids))
	for _, id := range ids {
		l, ok := f.rows[id]
		if !ok {
			rest = append(rest, id)
			continue
		}
		delete(f.rows, id)
		f.bytes -= len(l.Event.Payload) + rowOverhead
		held = append(held, l)
	}
	return held, rest
}

// drop forgets every held row: they may no longer be what the ledger holds.
func (f *freshRows) drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.rows)
	f.bytes = 0
}
