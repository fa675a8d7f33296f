package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// postConn is one keep-alive HTTP/1.1 connection a worker owns and posts
// webhooks on, one at a time.
//
// Why not net/http's client: the tool shares the machine with the agent it
// measures, and net/http's transport runs two goroutines per connection and
// hands every request and answer between them over channels; that was a
// third of the tool's CPU. Here a request is one write and its answer is
// read with net/http's own parser (http.ReadResponse), with nothing in
// between. What the agent sees on the wire is the same.
type postConn struct {
	host, path string // host is also the address dialled
	conn       net.Conn
	br         *bufio.Reader
	buf        []byte
	stop       func() bool // unregisters this request's cancel hook
}

// requestTimeout bounds one request, as the http.Client timeout did.
const requestTimeout = 30 * time.Second

func newPostConn(target string) (*postConn, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("%s: only http:// targets", target)
	}
	return &postConn{host: u.Host, path: u.RequestURI()}, nil
}

// post sends body with the given headers and returns the answer with its
// body unread; the caller must read it to the end before the next post.
// Any error leaves the connection closed: the next post dials again.
func (p *postConn) post(ctx context.Context, h http.Header, body []byte) (*http.Response, error) {
	if p.conn == nil {
		d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
		c, err := d.DialContext(ctx, "tcp", p.host)
		if err != nil {
			return nil, err
		}
		p.conn, p.br = c, bufio.NewReaderSize(c, 4096)
	}
	// A cancelled run must not wait for a slow answer.
	c := p.conn
	p.stop = context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	b := p.buf[:0]
	b = append(b, "POST "...)
	b = append(b, p.path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, p.host...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n"...)
	for k, vs := range h {
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "\r\n"...)
	b = append(b, body...)
	p.buf = b
	if err := p.conn.SetDeadline(time.Now().Add(requestTimeout)); err != nil {
		p.close()
		return nil, err
	}
	if _, err := p.conn.Write(b); err != nil {
		p.close()
		return nil, err
	}
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		p.close()
		return nil, err
	}
	return resp, nil
}

// done ends an answer whose body was read to the end.
func (p *postConn) done(resp *http.Response) {
	if resp.Close || !p.stop() {
		p.close() // the server is done with it, or the run was cancelled
	}
}

func (p *postConn) close() {
	if p.conn == nil {
		return
	}
	if p.stop != nil {
		p.stop()
	}
	_ = p.conn.Close()
	p.conn, p.br = nil, nil
}
