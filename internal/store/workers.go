package store

import (
	"context"
	"sync"
	"time"

	"github.com/riverqueue/river"
)

// attemptTimeout bounds the attempts of one job; sinks set their own, shorter
// HTTP timeouts.
const attemptTimeout = 90 * time.Second

// working is the set of queue jobs this process is attempting right now. The
// Postgres sweeper requeues this agent's jobs that the database says are
// running but that are not in it.
type working struct{ m sync.Map }

func (w *working) track(id int64) func() {
	w.m.Store(id, true)
	return func() { w.m.Delete(id) }
}

func (w *working) ids() map[int64]bool {
	out := map[int64]bool{}
	w.m.Range(func(k, _ any) bool {
		out[k.(int64)] = true
		return true
	})
	return out
}

// deliveryWorker runs one delivery's job: a scheduled delivery, a retry, a
// wait or a replay.
type deliveryWorker struct {
	river.WorkerDefaults[DeliveryArgs]
	deliver Deliver
	working *working
}

func (w *deliveryWorker) Timeout(*river.Job[DeliveryArgs]) time.Duration { return attemptTimeout }

func (w *deliveryWorker) Work(ctx context.Context, job *river.Job[DeliveryArgs]) error {
	defer w.working.track(job.ID)()
	return w.deliver(ctx, job.ID, []string{job.Args.DeliveryID})
}

// batchWorker runs a batch job: first attempts on Postgres.
type batchWorker struct {
	river.WorkerDefaults[BatchArgs]
	deliver Deliver
	working *working
}

func (w *batchWorker) Timeout(*river.Job[BatchArgs]) time.Duration { return attemptTimeout }

func (w *batchWorker) Work(ctx context.Context, job *river.Job[BatchArgs]) error {
	defer w.working.track(job.ID)()
	return w.deliver(ctx, job.ID, job.Args.DeliveryIDs)
}
