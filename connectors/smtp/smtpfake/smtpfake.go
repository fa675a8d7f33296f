// Package smtpfake is a real SMTP server for tests, built on
// github.com/emersion/go-smtp and listening on 127.0.0.1: it captures every
// message, can require AUTH PLAIN, offers STARTTLS or implicit TLS with a
// generated self-signed certificate (exported, so clients can trust it), and
// answers scripted reply codes (451 once, 550 for an address, ...).
package smtpfake

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// Stages a reply can be scripted at.
const (
	StageMail = "MAIL" // the reply to MAIL FROM
	StageRcpt = "RCPT" // the reply to RCPT TO
	StageData = "DATA" // the reply after the message's final dot
)

// MaxMessageBytes is the largest message the fake accepts (552 beyond it).
const MaxMessageBytes = 10 << 20

// Message is one message the fake accepted.
type Message struct {
	From string   // MAIL FROM
	To   []string // RCPT TO, in order
	Data []byte   // the message as received (CRLF line endings, dots unstuffed)
	// User is the authenticated user name, "" without AUTH.
	User string
	// TLS says the message travelled over TLS (STARTTLS or implicit).
	TLS bool
	At  time.Time
}

// Parsed parses Data as an RFC 5322 message.
func (m Message) Parsed() (*mail.Message, error) { return mail.ReadMessage(bytes.NewReader(m.Data)) }

// Reply is a scripted SMTP answer. Text may quote the address, as real
// servers do.
type Reply struct {
	Code     int
	Enhanced [3]int // e.g. {5, 1, 1}; zero means 4.0.0 / 5.0.0
	Text     string
}

func (r Reply) err() *gosmtp.SMTPError {
	ec := gosmtp.EnhancedCode(r.Enhanced)
	if r.Enhanced == [3]int{} {
		ec = gosmtp.EnhancedCodeNotSet
	}
	return &gosmtp.SMTPError{Code: r.Code, EnhancedCode: ec, Message: r.Text}
}

// TLSMode is how the fake offers TLS.
type TLSMode int

const (
	// STARTTLS offers STARTTLS with the self-signed certificate (the default).
	STARTTLS TLSMode = iota
	// Implicit speaks TLS from the first byte.
	Implicit
	// NoTLS offers no TLS at all.
	NoTLS
)

// Server is a running fake. Close it when done.
type Server struct {
	srv  *gosmtp.Server
	ln   net.Listener
	addr string

	users             map[string]string
	requireAuth       bool
	allowInsecureAuth bool
	mode              TLSMode

	mu        sync.Mutex
	messages  []Message
	script    map[string][]Reply
	rcptRules map[string]Reply
	sessions  int
	hold      chan struct{} // non-nil: Data blocks until Close
	closed    bool
}

// Option configures a Server.
type Option func(*Server)

// WithAuth requires AUTH PLAIN as user with password before MAIL FROM.
func WithAuth(user, password string) Option {
	return func(s *Server) {
		if s.users == nil {
			s.users = map[string]string{}
		}
		s.users[user] = password
		s.requireAuth = true
	}
}

// WithTLS sets how TLS is offered (default STARTTLS).
func WithTLS(m TLSMode) Option { return func(s *Server) { s.mode = m } }

// AllowInsecureAuth offers AUTH on a connection without TLS (a local relay).
func AllowInsecureAuth() Option { return func(s *Server) { s.allowInsecureAuth = true } }

// Start listens on 127.0.0.1 on a free port and serves until Close.
func Start(opts ...Option) (*Server, error) {
	s := &Server{script: map[string][]Reply{}, rcptRules: map[string]Reply{}}
	for _, o := range opts {
		o(s)
	}
	cert, err := Certificate()
	if err != nil {
		return nil, err
	}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) {
		s.mu.Lock()
		s.sessions++
		s.mu.Unlock()
		return &session{s: s, conn: c}, nil
	}))
	srv.Domain = "smtpfake.localhost"
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxMessageBytes = MaxMessageBytes
	srv.MaxRecipients = 100
	srv.AllowInsecureAuth = s.allowInsecureAuth
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = log.New(io.Discard, "", 0)
	switch s.mode {
	case STARTTLS:
		srv.TLSConfig = tlsConf
	case Implicit:
		ln = tls.NewListener(ln, tlsConf)
	}
	s.srv, s.ln, s.addr = srv, ln, ln.Addr().String()
	go func() { _ = srv.Serve(ln) }()
	return s, nil
}

// Addr is host:port.
func (s *Server) Addr() string { return s.addr }

// Host is the listening host (127.0.0.1).
func (s *Server) Host() string { h, _, _ := net.SplitHostPort(s.addr); return h }

// Port is the listening port.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// Close stops the server, ending held DATA replies and open connections.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
	s.mu.Unlock()
	err := s.srv.Close()
	if errors.Is(err, gosmtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Reply answers the next command at stage (StageMail, StageRcpt, StageData)
// with r, once. Calls queue up per stage.
func (s *Server) Reply(stage string, r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script[stage] = append(s.script[stage], r)
}

// RejectRecipient answers every RCPT TO for addr with r (an unknown user:
// 550 5.1.1).
func (s *Server) RejectRecipient(addr string, r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcptRules[strings.ToLower(addr)] = r
}

// HoldData makes the server read each message and then never reply to its
// final dot (until Close): the client's timeout after DATA.
func (s *Server) HoldData() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil && !s.closed {
		s.hold = make(chan struct{})
	}
}

// Messages returns the accepted messages, oldest first.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.messages))
	for i, m := range s.messages {
		m.To = append([]string(nil), m.To...)
		m.Data = bytes.Clone(m.Data)
		out[i] = m
	}
	return out
}

// Sessions is how many SMTP sessions were opened (a client that sends
// EHLO again after STARTTLS opens a second one).
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

func (s *Server) scripted(stage string) *gosmtp.SMTPError {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.script[stage]
	if len(q) == 0 {
		return nil
	}
	s.script[stage] = q[1:]
	return q[0].err()
}

type session struct {
	s    *Server
	conn *gosmtp.Conn
	user string
	from string
	to   []string
}

var errAuthRequired = &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}

func (ss *session) AuthMechanisms() []string {
	if ss.s.users == nil {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || ss.s.users == nil {
		return nil, gosmtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if want, ok := ss.s.users[user]; ok && want == pass && (identity == "" || identity == user) {
			ss.user = user
			return nil
		}
		return gosmtp.ErrAuthFailed
	}), nil
}

func (ss *session) Mail(from string, _ *gosmtp.MailOptions) error {
	if ss.s.requireAuth && ss.user == "" {
		return errAuthRequired
	}
	if err := ss.s.scripted(StageMail); err != nil {
		return err
	}
	ss.from, ss.to = from, nil
	return nil
}

func (ss *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	ss.s.mu.Lock()
	rule, ok := ss.s.rcptRules[strings.ToLower(to)]
	ss.s.mu.Unlock()
	if ok {
		return rule.err()
	}
	if err := ss.s.scripted(StageRcpt); err != nil {
		return err
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	hold := ss.s.hold
	ss.s.mu.Unlock()
	if hold != nil {
		<-hold
		return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "shutting down"}
	}
	if err := ss.s.scripted(StageData); err != nil {
		return err
	}
	_, isTLS := ss.conn.TLSConnectionState()
	ss.s.mu.Lock()
	ss.s.messages = append(ss.s.messages, Message{From: ss.from, To: ss.to, Data: b, User: ss.user, TLS: isTLS, At: time.Now()})
	ss.s.mu.Unlock()
	return nil
}

func (ss *session) Reset() { ss.from, ss.to = "", nil }

func (ss *session) Logout() error { return nil }

// WriteCA writes the self-signed certificate as PEM to dir/smtpfake-ca.pem
// and returns the path (for a config's tls_ca_file).
func WriteCA(dir string) (string, error) {
	pem, err := CertPEM()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "smtpfake-ca.pem")
	if err := os.WriteFile(path, pem, 0o644); err != nil {
		return "", fmt.Errorf("smtpfake: %w", err)
	}
	return path, nil
}

// CertPool is a pool holding only the self-signed certificate.
func CertPool() (*x509.CertPool, error) {
	pem, err := CertPEM()
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(pem)
	return p, nil
}
