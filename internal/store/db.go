package store

import (
	"context"
	"database/sql"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// querier is what our own SQL needs from a connection pool or a transaction,
// on either driver. Queries use $N placeholders, which SQLite accepts too.
type querier interface {
	exec(ctx context.Context, q string, args ...any) (int64, error)
	query(ctx context.Context, q string, args ...any) (rows, error)
	// execEach runs q once per argument list and returns each one's rows
	// affected: one statement parsed once, rather than one long statement
	// whose text changes with the row count.
	execEach(ctx context.Context, q string, argLists [][]any) ([]int64, error)
}

type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// database/sql (SQLite).

// sqlQuerier runs statements through a cache of prepared statements: the
// SQLite driver would otherwise parse every statement on every call, which
// profiles showed as the largest single cost of a write.
type sqlQuerier struct {
	stmts *stmtCache
	tx    *sql.Tx // nil: outside a transaction
}

// stmtCache prepares each distinct query text once per database handle.
type stmtCache struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache { return &stmtCache{db: db, m: map[string]*sql.Stmt{}} }

// get returns the prepared statement for q, preparing it if need be. With
// prepare false it only looks: preparing takes a connection, and inside a
// transaction on SQLite's single write connection that would wait forever.
func (c *stmtCache) get(ctx context.Context, q string, prepare bool) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[q]; ok || !prepare {
		return st, nil
	}
	st, err := c.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	c.m[q] = st
	return st, nil
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
}

// stmt returns a prepared statement for q, or nil inside a transaction when
// q was not prepared beforehand (the hot write statements are, at open).
func (s sqlQuerier) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	st, err := s.stmts.get(ctx, q, s.tx == nil)
	if err != nil || s.tx == nil || st == nil {
		return st, err
	}
	// Bound to the transaction's connection: with SQLite's one write
	// connection, the statement prepared there is reused as it is.
	return s.tx.StmtContext(ctx, st), nil
}

func (s sqlQuerier) exec(ctx context.Context, q string, args ...any) (int64, error) {
	st, err := s.stmt(ctx, q)
	if err != nil {
		return 0, err
	}
	var res sql.Result
	if st != nil {
		res, err = st.ExecContext(ctx, args...)
	} else {
		res, err = s.tx.ExecContext(ctx, q, args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (s sqlQuerier) execEach(ctx context.Context, q string, argLists [][]any) ([]int64, error) {
	st, err := s.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	if st == nil {
		if st, err = s.tx.PrepareContext(ctx, q); err != nil {
			return nil, err
		}
		defer st.Close()
	}
	out := make([]int64, len(argLists))
	for i, args := range argLists {
		res, err := st.ExecContext(ctx, args...)
		if err != nil {
			return nil, err
		}
		if out[i], err = res.RowsAffected(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s sqlQuerier) query(ctx context.Context, q string, args ...any) (rows, error) {
	st, err := s.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	var r *sql.Rows
	if st != nil {
		r, err = st.QueryContext(ctx, args...)
	} else {
		r, err = s.tx.QueryContext(ctx, q, args...)
	}
	if err != nil {
		return nil, err
	}
	return sqlRows{r}, nil
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }

// pgx (PostgreSQL).

type pgxQ interface {
	Exec(ctx context.Context, q string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, q string, args ...any) (pgx.Rows, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

type pgxQuerier struct{ q pgxQ }

func (p pgxQuerier) exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := p.q.Exec(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// execEach sends every statement in one round trip (pgx caches the
// prepared statement by its text).
func (p pgxQuerier) execEach(ctx context.Context, q string, argLists [][]any) ([]int64, error) {
	b := &pgx.Batch{}
	for _, args := range argLists {
		b.Queue(q, args...)
	}
	br := p.q.SendBatch(ctx, b)
	defer br.Close()
	out := make([]int64, len(argLists))
	for i := range argLists {
		tag, err := br.Exec()
		if err != nil {
			return nil, err
		}
		out[i] = tag.RowsAffected()
	}
	return out, br.Close()
}

func (p pgxQuerier) query(ctx context.Context, q string, args ...any) (rows, error) {
	r, err := p.q.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return r, nil
}

var (
	_ pgxQ = (*pgxpool.Pool)(nil)
	_ pgxQ = (pgx.Tx)(nil)
)

// queryAll runs q and scans every row with scan.
func queryAll[T any](ctx context.Context, db querier, scan func(rows) (T, error), q string, args ...any) ([]T, error) {
	r, err := db.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []T
	for r.Next() {
		v, err := scan(r)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, r.Err()
}

// queryOne is queryAll for one row; none is ErrNotFound.
func queryOne[T any](ctx context.Context, db querier, scan func(rows) (T, error), q string, args ...any) (T, error) {
	all, err := queryAll(ctx, db, scan, q, args...)
	var zero T
	if err != nil {
		return zero, err
	}
	if len(all) == 0 {
		return zero, ErrNotFound
	}
	return all[0], nil
}

func scanInt64(r rows) (int64, error) {
	var v int64
	return v, r.Scan(&v)
}
