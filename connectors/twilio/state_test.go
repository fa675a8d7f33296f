package twilio_test

import (
	"bytes"
	"context"
	"sort"
	"sync"
)

// memState is connectors.State in memory, with a switchable failure.
type memState struct {
	mu   sync.Mutex
	m    map[string][]byte
	fail error
}

func newMemState() *memState { return &memState{m: map[string][]byte{}} }

func (s *memState) Get(_ context.Context, key string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, false, s.fail
	}
	v, ok := s.m[key]
	return bytes.Clone(v), ok, nil
}

func (s *memState) Put(_ context.Context, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.m[key] = bytes.Clone(value)
	return nil
}

func (s *memState) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	delete(s.m, key)
	return nil
}

func (s *memState) setFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

func (s *memState) keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.m))
	for k := range s.m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
