package store

import (
	"context"
	"database/sql"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// querier is what our own SQL needs from a connection pool or a transaction,
// on either driver. Queries use $N placeholders, which SQLite accepts too.
type querier interface {
	exec(ctx context.Context, q string, args ...any) (int64, error)
	query(ctx context.Context, q string, args ...any) (rows, error)
}

type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// database/sql (SQLite).

type sqlQ interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

type sqlQuerier struct{ q sqlQ }

func (s sqlQuerier) exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := s.q.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (s sqlQuerier) query(ctx context.Context, q string, args ...any) (rows, error) {
	r, err := s.q.QueryContext(ctx, q, args...)
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
}

type pgxQuerier struct{ q pgxQ }

func (p pgxQuerier) exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := p.q.Exec(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
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
	_ sqlQ = (*sql.DB)(nil)
	_ sqlQ = (*sql.Tx)(nil)
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
