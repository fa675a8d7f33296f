package agentproc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Delivery is one document the sink received.
type Delivery struct {
	Seq    int64
	SentNs int64 // the sender's clock when it built the webhook
	AtNs   int64 // the sink's clock on receipt (same host, same clock)
	Key    string
	Marker string
}

// Sink is an in-process HTTP endpoint standing in for the remote system the
// agent delivers to. It records every document the route maps
// ({marker, seq, sent_ns}) with its Idempotency-Key header, and answers 200.
type Sink struct {
	URL string

	delay time.Duration
	srv   *http.Server // nil when fast
	ln    net.Listener

	connMu    sync.Mutex
	openConns map[net.Conn]struct{} // fast: to close them on Close

	received atomic.Int64 // every request, fast or not
	conns    atomic.Int64 // TCP connections the agent opened to us

	mu    sync.Mutex
	log   []Delivery
	count map[string]map[int64]int32 // by marker, then seq
	bad   int64                      // bodies that were not a mapped load document
}

// SinkOptions tune StartSink.
type SinkOptions struct {
	// Addr to listen on; default 127.0.0.1:0.
	Addr string
	// Fast answers 200 without reading the document (only counting it), for
	// measuring ingest with a sink that costs as little as it can: it serves
	// keep-alive HTTP/1.1 itself (net/http's parser, one goroutine per
	// connection, no per-request machinery), since it runs on the cores of
	// the agent being measured, where a real remote would not.
	Fast bool
	// Delay makes each answer take this long, like a remote API. A request
	// whose connection closes during the wait is dropped, not recorded: the
	// remote rolls back when its client goes away, so only a retry by the
	// agent gets that document through.
	Delay time.Duration
}

// StartSink listens and serves until Close.
func StartSink(opts SinkOptions) (*Sink, error) {
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Sink{URL: "http://" + ln.Addr().String() + "/deliver", delay: opts.Delay, ln: ln, count: map[string]map[int64]int32{}}
	if opts.Fast {
		s.openConns = map[net.Conn]struct{}{}
		go s.serveFast()
		return s, nil
	}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.conns.Add(1)
			}
		},
	}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the server.
func (s *Sink) Close() error {
	if s.srv != nil {
		return s.srv.Close()
	}
	err := s.ln.Close()
	s.connMu.Lock()
	for c := range s.openConns {
		_ = c.Close()
	}
	s.openConns = nil
	s.connMu.Unlock()
	return err
}

// fastOK is the whole answer of a fast sink.
var fastOK = []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

func (s *Sink) serveFast() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		s.connMu.Lock()
		if s.openConns == nil {
			s.connMu.Unlock()
			_ = c.Close()
			return
		}
		s.openConns[c] = struct{}{}
		s.connMu.Unlock()
		s.conns.Add(1)
		go s.serveFastConn(c)
	}
}

// serveFastConn answers each request on c with 200 after reading its body,
// until the agent closes the connection or sends something unparsable.
func (s *Sink) serveFastConn(c net.Conn) {
	defer func() {
		s.connMu.Lock()
		delete(s.openConns, c)
		s.connMu.Unlock()
		_ = c.Close()
	}()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		s.received.Add(1)
		_, err = io.Copy(io.Discard, req.Body)
		req.Body.Close()
		if err != nil {
			return
		}
		if _, err := c.Write(fastOK); err != nil || req.Close {
			return
		}
	}
}

// ServeHTTP records one delivery.
func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.received.Add(1)
	at := time.Now().UnixNano()
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-r.Context().Done():
			return // the agent is gone: nothing was committed here
		}
	}
	d, err := parseDoc(body)
	s.mu.Lock()
	if err != nil {
		s.bad++
		s.mu.Unlock()
		// A permanent error: the agent must not retry a document we cannot read.
		w.WriteHeader(http.StatusUnprocessableEntity)
		return
	}
	d.AtNs = at
	d.Key = r.Header.Get("Idempotency-Key")
	s.log = append(s.log, d)
	m := s.count[d.Marker]
	if m == nil {
		m = map[int64]int32{}
		s.count[d.Marker] = m
	}
	m[d.Seq]++
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// parseDoc reads {marker, seq, sent_ns}. Numbers pass through the agent's
// mapping as JSON numbers (or strings, if a mapping formats them), so both
// are accepted; sent_ns may lose sub-microsecond precision as a float64.
func parseDoc(b []byte) (Delivery, error) {
	var doc struct {
		Marker string `json:"marker"`
		Seq    any    `json:"seq"`
		SentNs any    `json:"sent_ns"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return Delivery{}, err
	}
	seq, err := toInt(doc.Seq)
	if err != nil {
		return Delivery{}, err
	}
	sent, err := toInt(doc.SentNs)
	if err != nil {
		return Delivery{}, err
	}
	return Delivery{Seq: seq, SentNs: sent, Marker: doc.Marker}, nil
}

func toInt(v any) (int64, error) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = string(x)
	case string:
		s = x
	default:
		return 0, errors.New("not a number")
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, err
	}
	return int64(f), nil
}

// Received counts requests, including those a fast sink did not read.
func (s *Sink) Received() int64 { return s.received.Load() }

// Conns counts the TCP connections the agent opened to the sink; far more
// connections than deliveries in flight means the agent is not reusing them.
func (s *Sink) Conns() int64 { return s.conns.Load() }

// Distinct is how many different seqs arrived carrying marker. Each run
// has its own marker, so a late delivery from an earlier run is not counted.
func (s *Sink) Distinct(marker string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.count[marker])
}

// Missing returns the seqs of want that have not arrived with marker.
func (s *Sink) Missing(marker string, want []int64) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int64
	for _, seq := range want {
		if s.count[marker][seq] == 0 {
			out = append(out, seq)
		}
	}
	return out
}

// Bad counts bodies that were not a load document.
func (s *Sink) Bad() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bad
}

// Deliveries returns a copy of everything recorded so far, in arrival order.
func (s *Sink) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.log...)
}

// Reset forgets what was recorded (between runs sharing one sink).
func (s *Sink) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = nil
	s.count = map[string]map[int64]int32{}
	s.bad = 0
	s.received.Store(0)
	s.conns.Store(0)
}
