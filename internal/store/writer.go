package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// writer is the group committer: every write goes through one goroutine that
// gathers the requests waiting at that moment (lingering briefly when there
// are few) and commits them in one transaction. With synchronous=FULL the
// fsync, not the SQL, is the cost of a commit, so sharing it is what makes
// durable ingest fast; on SQLite it also keeps to the one writer SQLite allows.
type writer[TTx any] struct {
	e        *engine[TTx]
	reqs     chan *request[TTx]
	linger   time.Duration
	maxBatch int
	done     chan struct{}
	stopOnce sync.Once
	// commits counts committed transactions (the checkpointer's cue).
	commits atomic.Uint64
	// catchUp, set by the checkpointer, asks for catchUpLog between commits.
	catchUp atomic.Bool
}

type request[TTx any] struct {
	ctx     context.Context
	accept  []Incoming
	outcome *Outcome
	fn      func(ctx context.Context, tx TTx) error

	result []bool
	reply  chan error
}

var errStopped = errors.New("store is closed")

func newWriter[TTx any](e *engine[TTx], linger time.Duration) *writer[TTx] {
	if linger <= 0 {
		linger = time.Millisecond
	}
	w := &writer[TTx]{e: e, reqs: make(chan *request[TTx], 4096), linger: linger, maxBatch: 512, done: make(chan struct{})}
	go w.loop()
	return w
}

func (w *writer[TTx]) do(ctx context.Context, r *request[TTx]) ([]bool, error) {
	r.ctx = ctx
	r.reply = make(chan error, 1)
	select {
	case w.reqs <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-w.done:
		return nil, errStopped
	}
	select {
	case err := <-r.reply:
		return r.result, err
	case <-ctx.Done():
		// The request may still commit; callers treat this as "unknown" and
		// senders retry, which dedupe makes harmless.
		return nil, ctx.Err()
	}
}

func (w *writer[TTx]) stop() {
	w.stopOnce.Do(func() { close(w.done) })
}

func (w *writer[TTx]) loop() {
	batch := make([]*request[TTx], 0, w.maxBatch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		batch = batch[:0]
		select {
		case r := <-w.reqs:
			batch = append(batch, r)
		case <-w.done:
			w.drain()
			return
		}
		// Take whatever is already waiting, then linger a moment for company
		// if the batch is small; a busy server forms big batches without waiting.
	gather:
		for len(batch) < w.maxBatch {
			select {
			case r := <-w.reqs:
				batch = append(batch, r)
			default:
				if len(batch) >= 16 {
					break gather
				}
				timer.Reset(w.linger)
				select {
				case r := <-w.reqs:
					batch = append(batch, r)
					if !timer.Stop() {
						<-timer.C
					}
				case <-timer.C:
					break gather
				}
			}
		}
		w.commit(batch)
		if w.catchUp.Swap(false) && w.e.catchUpLog != nil {
			w.e.catchUpLog()
		}
	}
}

// drain fails whatever is still queued at shutdown.
func (w *writer[TTx]) drain() {
	for {
		select {
		case r := <-w.reqs:
			r.reply <- errStopped
		default:
			return
		}
	}
}

func (w *writer[TTx]) commit(batch []*request[TTx]) {
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.reply <- err // the caller gave up before anything was written
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	err := w.run(live)
	// One request may have spoiled the batch, but when the database itself
	// is unreachable every request would fail again, one connection attempt
	// at a time, holding up the writer for minutes: answer them all at once.
	if err == nil || len(live) == 1 || w.e.unavailable(err) {
		for _, r := range live {
			r.reply <- err
		}
		return
	}
	// Otherwise run each alone so the others still commit and the culprit
	// gets its own error.
	for _, r := range live {
		r.reply <- w.run([]*request[TTx]{r})
	}
}

func (w *writer[TTx]) run(batch []*request[TTx]) (err error) {
	// The batch outlives any one caller: a caller that gives up mid-commit
	// must not roll back the others' work.
	e := w.e
	ctx := context.Background()
	if e.writeTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.writeTimeout)
		defer cancel()
	}
	tx, err := e.begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			e.rollback(ctx, tx)
		}
	}()
	var accepts []*request[TTx]
	now := time.Now()
	// Outcomes that queue nothing next are written together (grouped), in
	// their place among the other requests.
	var plain []*Outcome
	flush := func() error {
		err := e.recordOutcomes(ctx, tx, plain, now)
		plain = plain[:0]
		return err
	}
	for _, r := range batch {
		switch {
		case r.accept != nil:
			accepts = append(accepts, r)
		case r.outcome != nil && r.outcome.Next.IsZero():
			plain = append(plain, r.outcome)
		case r.outcome != nil:
			if err = flush(); err != nil {
				return err
			}
			if err = e.recordOutcome(ctx, tx, r.outcome, now); err != nil {
				return err
			}
		case r.fn != nil:
			if err = flush(); err != nil {
				return err
			}
			if err = r.fn(ctx, tx); err != nil {
				return err
			}
		}
	}
	if err = flush(); err != nil {
		return err
	}
	var direct []Loaded
	if len(accepts) > 0 {
		if direct, err = e.acceptBatch(ctx, tx, accepts); err != nil {
			return err
		}
	}
	if err = e.commit(ctx, tx); err != nil {
		return err
	}
	w.commits.Add(1)
	if len(direct) > 0 {
		e.fresh.put(direct)
		ids := make([]string, len(direct))
		for i := range direct {
			ids[i] = direct[i].Delivery.ID
		}
		e.direct.add(ids)
	}
	return nil
}
