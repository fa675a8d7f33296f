package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors/webhook"
)

// shape is what one load pass sends.
type shape struct {
	targets     []string // full webhook URLs, used round-robin
	secret      string
	concurrency int
	rate        float64 // req/s, open loop; 0 = closed loop (workers back to back)
	duration    time.Duration
	count       int64 // > 0: send exactly this many, ignore duration
	bodySize    int
	marker      string
	runID       int64 // makes webhook ids unique across runs against one store
}

// targetStats is what one target answered.
type targetStats struct {
	sent       int64
	accepted   int64 // 2xx with the event stored as new
	duplicates int64 // 2xx for an id the agent had already stored
	errors     map[string]int64
	latNs      []int64 // ack latency of 2xx answers
}

func (t *targetStats) add(o *targetStats) {
	t.sent += o.sent
	t.accepted += o.accepted
	t.duplicates += o.duplicates
	if t.errors == nil {
		t.errors = map[string]int64{}
	}
	for k, v := range o.errors {
		t.errors[k] += v
	}
	t.latNs = append(t.latNs, o.latNs...)
}

// passResult is one load pass.
type passResult struct {
	start, end time.Time // first send, last answer
	targets    []targetStats
	acked      []int64 // seqs answered 2xx as new
	late       int64   // open loop: sends that left after their slot because every worker was busy
}

func (r *passResult) total() targetStats {
	var t targetStats
	for i := range r.targets {
		t.add(&r.targets[i])
	}
	return t
}

// run sends the load and returns what came back. Bodies and ids embed the
// seq, so every request is a new event.
func (s shape) run(ctx context.Context) (*passResult, error) {
	if len(s.targets) == 0 {
		return nil, errors.New("no target")
	}
	secretOK := strings.HasPrefix(s.secret, "whsec_")
	if !secretOK {
		return nil, errors.New("secret must be a Standard Webhooks secret (whsec_...)")
	}
	var (
		next    atomic.Int64 // next seq
		late    atomic.Int64
		workers = make([]*worker, s.concurrency)
		wg      sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(s.duration)

	// Open loop: a dispatcher hands out send slots at the rate; a busy pool
	// delays a slot and its latency counts from the slot, not from when a
	// worker got to it (no coordinated omission).
	var slots chan time.Time
	if s.rate > 0 {
		slots = make(chan time.Time, s.concurrency*4)
		go func() {
			defer close(slots)
			interval := time.Duration(float64(time.Second) / s.rate)
			slot := start
			for n := int64(0); ; n++ {
				if s.count > 0 && n >= s.count || s.count == 0 && !slot.Before(deadline) {
					return
				}
				if d := time.Until(slot); d > 0 {
					select {
					case <-time.After(d):
					case <-ctx.Done():
						return
					}
				}
				select {
				case slots <- slot:
				default:
					late.Add(1)
					select {
					case slots <- slot:
					case <-ctx.Done():
						return
					}
				}
				slot = slot.Add(interval)
			}
		}()
	}

	for i := range workers {
		w, err := newWorker(s, i)
		if err != nil {
			return nil, err
		}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer w.close()
			for ctx.Err() == nil {
				var from time.Time
				if slots != nil {
					slot, ok := <-slots
					if !ok {
						return
					}
					from = slot
				} else if s.count == 0 && !time.Now().Before(deadline) {
					return
				}
				seq := next.Add(1) - 1
				if s.count > 0 && seq >= s.count {
					return
				}
				w.send(ctx, seq, from)
			}
		}()
	}
	wg.Wait()
	res := &passResult{start: start, end: time.Now(), targets: make([]targetStats, len(s.targets)), late: late.Load()}
	for _, w := range workers {
		for i := range w.stats {
			res.targets[i].add(&w.stats[i])
		}
		res.acked = append(res.acked, w.acked...)
	}
	return res, ctx.Err()
}

// worker sends one request at a time and keeps its own stats, merged after
// the pass, so workers share nothing: each has its own connection to each
// target.
type worker struct {
	s      shape
	conns  []*postConn // by target
	rr     int
	stats  []targetStats
	acked  []int64
	body   []byte
	reply  []byte
	filler string
}

func newWorker(s shape, i int) (*worker, error) {
	w := &worker{s: s, rr: i % len(s.targets), stats: make([]targetStats, len(s.targets)), reply: make([]byte, 512)}
	for j := range w.stats {
		w.stats[j].errors = map[string]int64{}
	}
	for _, t := range s.targets {
		c, err := newPostConn(t)
		if err != nil {
			return nil, err
		}
		w.conns = append(w.conns, c)
	}
	w.filler = strings.Repeat("x", max(s.bodySize, 0))
	return w, nil
}

func (w *worker) close() {
	for _, c := range w.conns {
		c.close()
	}
}

// buildBody writes the webhook into the worker's buffer:
// {"type":"load.test","data":{"marker":M,"seq":N,"sent_ns":T,"filler":"xxx"}}
// with the filler sized so the body is about bodySize bytes, like the ~1 KB
// bodies of the River measurements.
func (w *worker) buildBody(seq, sentNs int64) []byte {
	b := w.body[:0]
	b = append(b, `{"type":"load.test","data":{"marker":`...)
	b = strconv.AppendQuote(b, w.s.marker)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"sent_ns":`...)
	b = strconv.AppendInt(b, sentNs, 10)
	const tail = `,"filler":""}}`
	pad := max(w.s.bodySize-len(b)-len(tail), 0)
	b = append(b, `,"filler":"`...)
	b = append(b, w.filler[:min(pad, len(w.filler))]...)
	b = append(b, `"}}`...)
	w.body = b
	return b
}

func (w *worker) send(ctx context.Context, seq int64, slot time.Time) {
	ti := w.rr
	w.rr = (w.rr + 1) % len(w.s.targets)
	st := &w.stats[ti]
	st.sent++

	now := time.Now()
	if slot.IsZero() {
		slot = now
	}
	body := w.buildBody(seq, now.UnixNano())
	id := "evt_" + strconv.FormatInt(w.s.runID, 10) + "_" + strconv.FormatInt(seq, 10)
	h, err := webhook.SignStandard(w.s.secret, id, now, body)
	if err != nil {
		st.errors["sign"]++
		return
	}
	h.Set("Content-Type", "application/json")
	conn := w.conns[ti]
	resp, err := conn.post(ctx, h, body)
	if err != nil {
		st.errors[transportClass(ctx, err)]++
		return
	}
	n, _ := io.ReadFull(resp.Body, w.reply)
	_, err = io.Copy(io.Discard, resp.Body) // read to the end so the connection is reused
	resp.Body.Close()
	if err != nil {
		conn.close()
	} else {
		conn.done(resp)
	}
	lat := time.Since(slot)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		st.errors[strconv.Itoa(resp.StatusCode)]++
		return
	}
	st.latNs = append(st.latNs, int64(lat))
	// {"accepted":1,"duplicates":0}: a duplicate is an id seen before, which
	// a load run never sends on purpose (it shows ids clashing across runs).
	if bytes.Contains(w.reply[:n], []byte(`"accepted":0`)) {
		st.duplicates++
		return
	}
	st.accepted++
	w.acked = append(w.acked, seq)
}

func transportClass(ctx context.Context, err error) string {
	var op *net.OpError
	switch {
	case errors.Is(err, context.Canceled), ctx.Err() != nil:
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "timeout"
	case errors.As(err, &op) && op.Op == "dial":
		return "dial"
	default:
		return "conn"
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ceilingServer is the bare net/http handler the agent is compared with: it
// reads the body and answers what the agent answers, and does nothing else.
func ceilingServer() (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	reply := []byte(`{"accepted":1,"duplicates":0}` + "\n")
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(reply)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	return fmt.Sprintf("http://%s/hooks/inbox", ln.Addr()), func() { _ = srv.Close() }, nil
}
