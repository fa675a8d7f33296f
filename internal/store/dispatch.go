package store

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// dispatcher runs the first attempt of immediate deliveries straight from
// the ledger, without a queue job, on SQLite.
//
// Why: SQLite has one write connection, and River's per-job work on it
// (insert, fetch, complete, each statement re-prepared by its SQLite driver)
// held webhook acks behind it. A SQLite store is the only process on its file
// (lockFile), so it owns every row and needs no queue to hand work out: a
// ledger row in state pending with no job (job_id 0) IS the outbox entry.
// The committer hands the ids it just committed to the dispatcher; rows it
// could not take (queue full, a crash, a failed attempt) are found again by
// scanning the ledger. Retries, waits and scheduled deliveries still get
// River jobs (Outcome.Next), which the attempt's outcome queues in the same
// transaction that ends the outbox entry.
//
// On Postgres several agents share the rows, and River's locked fetch and
// rescuer are what hand them out, so there first attempts stay batch jobs.
//
// Webhooks come first. While webhooks are waiting to be stored and the
// process is short of CPU (busy; see cpuPressure), first attempts run one
// small batch at a time: a sender's retry timer runs while it waits for our
// answer, a delivery has no such clock. Deliveries never stop (one batch
// always runs) and catch up at full width when the burst is over; waiting on
// a slow remote takes no CPU, so it is never held back.
type dispatcher struct {
	deliver Deliver
	// scan lists pending first attempts, oldest first.
	scan func(ctx context.Context, limit int) ([]string, error)
	log  *slog.Logger
	// maxQueue bounds the ids held in memory (dispatchQueue; tests lower it).
	maxQueue int
	// busy reports webhooks waiting to be stored (nil: never).
	busy func() bool

	mu    sync.Mutex
	queue []string
	// owned holds the ids queued or being attempted: each is handed to one
	// attempt at a time.
	owned map[string]struct{}
	// backlog says the ledger may hold first attempts that are not queued.
	backlog bool
	// scanning is set while a scan runs; ids released meanwhile are kept in
	// released, because the scan may have read their rows before their
	// outcome committed and must not hand them out again.
	scanning bool
	released map[string]struct{}
	lastScan time.Time
	failures int
	stopping bool
	// running counts the batches being attempted.
	running int

	wake    chan struct{}
	stopCh  chan struct{}
	workCtx context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

const (
	// dispatchWorkers batches of up to MaxBatch run at once, each with the
	// pipeline's own parallelism inside.
	dispatchWorkers = 8
	// dispatchQueue bounds the ids held in memory; past it they wait in the
	// ledger and a scan finds them once the queue has drained.
	dispatchQueue = 20000
	// scanLimit is above what can be in flight (workers x MaxBatch), so a
	// full page always holds rows that are not in flight: scans make progress.
	scanLimit = 2 * dispatchWorkers * MaxBatch
	// scanEvery is how often a backlog is scanned for while the queue never empties.
	scanEvery = 5 * time.Second
	// busyBatch is the batch size while webhooks wait (one batch at a time).
	busyBatch = 10
)

func newDispatcher(deliver Deliver, scan func(context.Context, int) ([]string, error), busy func() bool, log *slog.Logger) *dispatcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &dispatcher{
		workCtx:  ctx,
		cancel:   cancel,
		deliver:  deliver,
		scan:     scan,
		busy:     busy,
		maxQueue: dispatchQueue,
		log:      log,
		owned:    map[string]struct{}{},
		// Whatever a previous process accepted and did not finish is in the ledger.
		backlog: true,
		wake:    make(chan struct{}, 1),
		stopCh:  make(chan struct{}),
	}
}

// add takes ids the committer just made durable.
func (d *dispatcher) add(ids []string) {
	d.mu.Lock()
	if d.stopping {
		d.mu.Unlock()
		return // they wait in the ledger for the next start
	}
	d.enqueue(ids)
	d.mu.Unlock()
	d.signal()
}

// enqueue is called with mu held.
func (d *dispatcher) enqueue(ids []string) {
	for _, id := range ids {
		if _, ok := d.owned[id]; ok {
			continue
		}
		if len(d.queue) >= d.maxQueue {
			d.backlog = true
			continue
		}
		d.owned[id] = struct{}{}
		d.queue = append(d.queue, id)
	}
}

func (d *dispatcher) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) start() {
	for range dispatchWorkers {
		d.wg.Add(1)
		go d.work()
	}
}

// stop stops taking work and waits for the attempts in flight until ctx
// ends, then cancels them. What is still queued stays pending in the ledger.
func (d *dispatcher) stop(ctx context.Context) error {
	d.mu.Lock()
	if d.stopping {
		d.mu.Unlock()
		return nil
	}
	d.stopping = true
	d.mu.Unlock()
	close(d.stopCh)
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
		d.cancel()
		return nil
	case <-ctx.Done():
		d.cancel()
		<-done
		return ctx.Err()
	}
}

func (d *dispatcher) work() {
	defer d.wg.Done()
	for {
		ids, scan, more := d.next()
		switch {
		case scan:
			if more {
				d.signal()
			}
			d.rescan()
			continue
		case ids == nil:
			select {
			case <-d.wake:
				continue
			case <-d.stopCh:
				return
			}
		}
		if more {
			d.signal() // another worker can take the rest
		}
		ctx, cancel := context.WithTimeout(d.workCtx, attemptTimeout)
		err := d.deliver(ctx, 0, ids)
		cancel()
		d.release(ids, err)
		d.signal() // a worker held back while webhooks waited can go
	}
}

// next hands a worker a batch, or a scan to do, or nothing.
func (d *dispatcher) next() (ids []string, scan, more bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		return nil, false, false
	}
	// Scan when the queue is empty; while it never empties, still every few
	// seconds, so ids the queue could not take do not wait behind new ones
	// for as long as the load lasts.
	if d.backlog && !d.scanning && (len(d.queue) == 0 || time.Since(d.lastScan) > scanEvery) {
		d.backlog, d.scanning, d.lastScan = false, true, time.Now()
		d.released = map[string]struct{}{}
		return nil, true, len(d.queue) > 0
	}
	if len(d.queue) > 0 {
		n := MaxBatch
		if d.busy != nil && d.busy() {
			if d.running > 0 {
				return nil, false, false // the running batch signals when done
			}
			n = busyBatch
		}
		n = min(len(d.queue), n)
		d.running++
		ids = append([]string(nil), d.queue[:n]...)
		d.queue = d.queue[n:]
		if len(d.queue) == 0 {
			d.queue = nil // let the backing array go
		}
		return ids, false, len(d.queue) > 0
	}
	return nil, false, false
}

func (d *dispatcher) release(ids []string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.running--
	for _, id := range ids {
		delete(d.owned, id)
		if d.scanning {
			d.released[id] = struct{}{}
		}
	}
	if err == nil {
		d.failures = 0
		return
	}
	if d.stopping {
		return // cancelled by stop: the next start finds them
	}
	// The store failed (the attempts' rows are still pending without a job):
	// look again after a pause, growing while it keeps failing.
	d.failures++
	d.log.Warn("first attempts could not be recorded; retrying from the ledger", "error", err, "failures", d.failures)
	d.retryLater()
}

// retryLater sets the backlog after a pause (250 ms doubling, at most 10 s);
// called with mu held.
func (d *dispatcher) retryLater() {
	wait := min(time.Duration(1<<min(d.failures, 6))*125*time.Millisecond, 10*time.Second)
	time.AfterFunc(wait, func() {
		d.mu.Lock()
		d.backlog = true
		d.mu.Unlock()
		d.signal()
	})
}

// rescan pages through the ledger for pending first attempts nobody holds.
func (d *dispatcher) rescan() {
	ctx, cancel := context.WithTimeout(d.workCtx, 30*time.Second)
	ids, err := d.scan(ctx, scanLimit)
	cancel()
	d.mu.Lock()
	released := d.released
	d.scanning, d.released = false, nil
	if err != nil {
		if !d.stopping {
			d.failures++
			d.log.Warn("could not read pending deliveries from the ledger; retrying", "error", err)
			d.retryLater()
		}
		d.mu.Unlock()
		return
	}
	var fresh []string
	for _, id := range ids {
		if _, ok := released[id]; !ok {
			fresh = append(fresh, id)
		}
	}
	d.enqueue(fresh)
	if len(ids) == scanLimit {
		d.backlog = true // there may be more past this page
	}
	d.mu.Unlock()
	d.signal()
}
