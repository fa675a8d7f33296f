// Package file is a sink that appends one JSON line per delivery to a local
// file: the quickstart's outbox and the crash tests' witness of what was
// delivered.
package file

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
)

const provider = "file"

// ActionAppend is the sink's one action.
const ActionAppend = "append"

// Config is a file connector's configuration.
type Config struct {
	Path string `yaml:"path"`
}

// Validate checks the config.
func (c *Config) Validate() error {
	if c.Path == "" {
		return errors.New("path: required")
	}
	return nil
}

var fields = []config.Field{{
	Name: "path", Kind: config.KindString, Required: true, Example: "./data/out.jsonl",
	Doc: "File to append to, relative to the config file's folder. It and its folder are created if " +
		"missing (mode 0600: documents may hold patient data).",
}}

// Type declares the `file` connector type.
func Type() connectors.Type {
	return connectors.Define(connectors.Type{
		Name:   "file",
		Doc:    "Appends one JSON line per delivery to a local file; for trying routes and for tests.",
		Fields: fields,
		Actions: []connectors.Action{{
			Name: ActionAppend,
			Doc: "Append {\"delivery_id\",\"event_id\",\"route\",\"action\",\"document\"} as one line and " +
				"fsync before reporting success.",
		}},
	}, func(c *Config, env connectors.Env) (any, error) {
		return New(c, env)
	})
}

// Line is what the sink writes for each delivery.
type Line struct {
	DeliveryID string         `json:"delivery_id"`
	EventID    string         `json:"event_id"`
	Route      string         `json:"route"`
	Action     string         `json:"action"`
	Document   map[string]any `json:"document"`
}

// Sink appends lines to one file. It is safe for concurrent use.
type Sink struct {
	path string

	mu     sync.Mutex
	f      *os.File
	closed bool
}

// New resolves c.Path against env.Dir. The file is created at the first
// delivery, so `validate` leaves the disk alone.
func New(c *Config, env connectors.Env) (*Sink, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	p := c.Path
	if !filepath.IsAbs(p) && env.Dir != "" {
		p = filepath.Join(env.Dir, p)
	}
	return &Sink{path: p}, nil
}

// open creates the folder (0750) and the file (0600) on first use. Called with s.mu held.
func (s *Sink) open() error {
	if s.f != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o750); err != nil {
		return err
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	s.f = f
	return nil
}

// Path is the resolved file path.
func (s *Sink) Path() string { return s.path }

// Do appends one line with a single write and fsyncs it. A failed write is
// truncated away, so the file never keeps a torn line from this process.
func (s *Sink) Do(ctx context.Context, d connectors.Delivery) (connectors.Receipt, error) {
	if d.Action != "" && d.Action != ActionAppend {
		return connectors.Receipt{}, &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: fmt.Sprintf("unknown action %q", d.Action)}
	}
	action := d.Action
	if action == "" {
		action = ActionAppend
	}
	b, err := json.Marshal(Line{DeliveryID: d.DeliveryID, EventID: d.EventID, Route: d.Route, Action: action, Document: d.Document})
	if err != nil {
		return connectors.Receipt{}, &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: "the document is not JSON-encodable"}
	}
	b = append(b, '\n')
	if err := ctx.Err(); err != nil {
		return connectors.Receipt{}, &connectors.Error{Class: connectors.Transient, Provider: provider, Msg: "not written: " + err.Error()}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return connectors.Receipt{}, &connectors.Error{Class: connectors.Transient, Provider: provider, Msg: "sink is closed"}
	}
	if err := s.open(); err != nil {
		return connectors.Receipt{}, &connectors.Error{Class: connectors.Transient, Provider: provider, Msg: "cannot open the file", Err: err}
	}
	var size int64 = -1
	if fi, err := s.f.Stat(); err == nil {
		size = fi.Size()
	}
	if _, err := s.f.Write(b); err != nil {
		if size >= 0 {
			_ = s.f.Truncate(size)
		}
		return connectors.Receipt{}, &connectors.Error{Class: connectors.Transient, Provider: provider, Msg: "write failed", Err: err}
	}
	if err := s.f.Sync(); err != nil {
		// The line may or may not be on disk.
		return connectors.Receipt{}, &connectors.Error{Class: connectors.Ambiguous, Provider: provider, Msg: "fsync failed", Err: err}
	}
	return connectors.Receipt{Status: "appended"}, nil
}

// Close closes the file; later deliveries fail as transient.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.f == nil {
		return nil
	}
	return s.f.Close()
}

var (
	_ connectors.Sink   = (*Sink)(nil)
	_ connectors.Closer = (*Sink)(nil)
)
