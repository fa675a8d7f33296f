// Package testutil holds helpers shared by tests: a TCP proxy that can cut a
// connection to a real server (to test "database unreachable" for real), and
// the Postgres test database settings.
package testutil

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"context"

	"github.com/jackc/pgx/v5"
)

// Proxy forwards TCP connections to a target until it is cut.
type Proxy struct {
	target string
	ln     net.Listener
	addr   string

	mu    sync.Mutex
	conns map[net.Conn]bool
	down  bool
}

// NewProxy listens on a loopback port and forwards to target.
func NewProxy(t *testing.T, target string) *Proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{target: target, ln: ln, addr: ln.Addr().String(), conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() { p.ln.Close(); p.Cut() })
	return p
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.addr }

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = true
		p.mu.Unlock()
		go p.pipe(c)
	}
}

func (p *Proxy) pipe(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[up] = true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
}

// Cut drops every connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// Restore accepts connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// PostgresURL returns CLINICBRIDGE_TEST_POSTGRES_URL or skips the test.
func PostgresURL(t testing.TB) string {
	url := os.Getenv("CLINICBRIDGE_TEST_POSTGRES_URL")
	if url == "" {
		t.Skip("CLINICBRIDGE_TEST_POSTGRES_URL is not set: skipping a Postgres test (.ci/run sets it)")
	}
	return url
}

// TempSchema names a fresh schema for one test and drops it afterwards, so
// runs never see each other's rows. The store creates it.
func TempSchema(t testing.TB, url string) string {
	name := fmt.Sprintf("cbtest_%d_%d", time.Now().UnixNano(), rand.IntN(1e6))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Logf("drop schema %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+name+" CASCADE"); err != nil {
			t.Logf("drop schema %s: %v", name, err)
		}
	})
	return name
}
