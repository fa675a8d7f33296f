// Package smtp is the email sink: it sends each mapped document as one
// message through an SMTP submission server (STARTTLS or implicit TLS, AUTH
// PLAIN), with a deterministic Message-ID per delivery, and classifies the
// server's reply codes for the pipeline.
package smtp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/clinicbridge/clinicbridge/connectors"
)

const provider = "smtp"

// ActionSendEmail is the sink's one action.
const ActionSendEmail = "send_email"

// Type declares the `smtp` connector type.
func Type() connectors.Type {
	return connectors.Define(connectors.Type{
		Name: "smtp",
		Doc: "Sends email through an SMTP submission server (STARTTLS or implicit TLS, AUTH PLAIN), one message " +
			"per delivery with a deterministic Message-ID. 4xx replies are retried, 5xx are final.",
		Fields: fields,
		Actions: []connectors.Action{{
			Name: ActionSendEmail,
			Doc: "Send one message to `to` (an address, a comma-separated list or a list) with `subject` and the " +
				"plain-text `text`; `html` adds an HTML alternative, `reply_to` a Reply-To. The receipt's external " +
				"id is the Message-ID, <delivery-id@clinicbridge>.",
			Required:   []string{"to", "subject", "text"},
			Optional:   []string{"html", "reply_to"},
			Idempotent: false, // SMTP has no idempotency key; the Message-ID only lets a retry be recognised
		}},
	}, func(c *Config, env connectors.Env) (any, error) {
		return New(c, env)
	})
}

// Sink sends email through one SMTP server.
type Sink struct {
	host     string
	addr     string
	mode     string
	username string
	password string
	from     *mail.Address
	tls      *tls.Config
	timeout  time.Duration
	now      func() time.Time
}

// New builds a sink from a config. It reads tls_ca_file but does not touch
// the network.
func New(c *Config, env connectors.Env) (*Sink, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	from, _ := mail.ParseAddress(c.From) // checked by Validate
	s := &Sink{
		host:     c.Host,
		addr:     net.JoinHostPort(c.Host, strconv.Itoa(c.port())),
		mode:     c.tlsMode(),
		username: c.Username,
		password: c.Password,
		from:     from,
		timeout:  c.timeout(),
		now:      env.Clock(),
		tls:      &tls.Config{ServerName: c.Host, MinVersion: tls.VersionTLS12},
	}
	if c.TLSCAFile != "" {
		path := c.TLSCAFile
		if !filepath.IsAbs(path) && env.Dir != "" {
			path = filepath.Join(env.Dir, path)
		}
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("tls_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("tls_ca_file: no PEM certificate found in the file")
		}
		s.tls.RootCAs = pool
	}
	return s, nil
}

// Do sends one message. Errors are *connectors.Error carrying the stage, the
// server's reply code and enhanced code, and a fixed description of the
// code: never an address, the subject or body, or the server's text, which
// often quotes the recipient.
func (s *Sink) Do(ctx context.Context, d connectors.Delivery) (connectors.Receipt, error) {
	if d.Action != "" && d.Action != ActionSendEmail {
		return connectors.Receipt{}, permanent(fmt.Sprintf("unknown action %q", d.Action))
	}
	e, err := s.compose(d)
	if err != nil {
		return connectors.Receipt{}, err
	}
	if err := s.send(ctx, e); err != nil {
		return connectors.Receipt{}, err
	}
	return connectors.Receipt{ExternalID: e.id, Status: "accepted"}, nil
}

// Stages of one SMTP transaction, named in errors.
const (
	stageConnect  = "connect"
	stageGreeting = "greeting"
	stageStartTLS = "EHLO/STARTTLS"
	stageAuth     = "AUTH"
	stageMail     = "MAIL FROM"
	stageRcpt     = "RCPT TO"
	stageData     = "DATA"
	stageEnd      = "end of data"
)

func (s *Sink) send(ctx context.Context, e email) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()

	dialer := &net.Dialer{Deadline: deadline}
	conn, err := dialer.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return netError(ctx, stageConnect, err, false)
	}
	// Cancelling ctx (or its deadline) unblocks whatever the client is doing.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()

	stage := stageGreeting
	var c *gosmtp.Client
	switch s.mode {
	case TLSImplicit:
		tc := tls.Client(conn, s.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return netError(ctx, stageConnect, err, false)
		}
		c = gosmtp.NewClient(tc)
	case TLSStartTLS:
		c, err = gosmtp.NewClientStartTLS(conn, s.tls)
		if err != nil {
			if err.Error() == "smtp: server doesn't support STARTTLS" {
				return &connectors.Error{Class: connectors.Transient, Provider: provider,
					Msg: "STARTTLS: the server does not offer STARTTLS, and tls: starttls never sends mail unencrypted"}
			}
			return s.fail(ctx, stageStartTLS, err, false)
		}
	default:
		c = gosmtp.NewClient(conn)
	}
	c.CommandTimeout, c.SubmissionTimeout = s.timeout, s.timeout
	defer c.Close()

	if err := c.Hello("localhost"); err != nil {
		return s.fail(ctx, stage, err, false)
	}
	if s.username != "" {
		stage = stageAuth
		if ok, _ := c.Extension("AUTH"); !ok || !c.SupportsAuth(sasl.Plain) {
			return permanent("AUTH: the server does not offer AUTH PLAIN; remove username and password, or use another server")
		}
		if err := c.Auth(sasl.NewPlainClient("", s.username, s.password)); err != nil {
			return s.fail(ctx, stage, err, false)
		}
	}
	var opts *gosmtp.MailOptions
	if !ascii(e.from.Address) || !allASCII(e.to) {
		opts = &gosmtp.MailOptions{UTF8: true}
	}
	if err := c.Mail(e.from.Address, opts); err != nil {
		return s.fail(ctx, stageMail, err, false)
	}
	for _, rcpt := range e.to {
		if err := c.Rcpt(rcpt.Address, nil); err != nil {
			_ = c.Reset() // nothing is sent unless every recipient is accepted
			return s.fail(ctx, stageRcpt, err, false)
		}
	}
	w, err := c.Data()
	if err != nil {
		return s.fail(ctx, stageData, err, false)
	}
	if _, err := w.Write(e.bytes()); err != nil {
		// The final dot was not sent: the server discards a partial message.
		return s.fail(ctx, stageData, err, false)
	}
	if err := w.Close(); err != nil {
		// The message may be complete on the server: only a reply is definite.
		return s.fail(ctx, stageEnd, err, true)
	}
	_ = c.Quit()
	return nil
}

// fail classifies an error at stage. A reply from the server is definite
// whatever the stage; a lost connection or timeout is ambiguous only once
// the whole message was handed over (afterData).
func (s *Sink) fail(ctx context.Context, stage string, err error, afterData bool) *connectors.Error {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return replyError(stage, se)
	}
	return netError(ctx, stage, err, afterData)
}

func netError(ctx context.Context, stage string, err error, afterData bool) *connectors.Error {
	e := &connectors.Error{Class: connectors.Transient, Provider: provider}
	reason := transportReason(ctx, err)
	if afterData {
		e.Class = connectors.Ambiguous
		e.Msg = stage + ": no reply after the message was sent (the server may have accepted it): " + reason
	} else {
		e.Msg = stage + ": message not sent: " + reason
	}
	return e
}

func transportReason(ctx context.Context, err error) string {
	var (
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		unkAuth x509.UnknownAuthorityError
		host    x509.HostnameError
		alert   tls.AlertError
		recHdr  tls.RecordHeaderError
		netErr  net.Error
	)
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.Is(ctx.Err(), context.Canceled):
		return "cancelled"
	case errors.As(err, &dnsErr):
		return "DNS lookup failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, &certErr), errors.As(err, &unkAuth), errors.As(err, &host):
		return "TLS certificate verification failed"
	case errors.As(err, &alert), errors.As(err, &recHdr):
		return "TLS handshake failed"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timed out"
	case errors.Is(err, net.ErrClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection closed by the server"
	default:
		return "connection error"
	}
}

// replyError turns an SMTP reply into an error: 4xx transient, 5xx
// permanent, the authentication codes auth. Only the codes and a fixed
// description are kept.
func replyError(stage string, se *gosmtp.SMTPError) *connectors.Error {
	e := &connectors.Error{Provider: provider, Code: strconv.Itoa(se.Code)}
	switch {
	case se.Code == 530 || se.Code == 534 || se.Code == 535 || se.Code == 538 || (stage == stageAuth && se.Code >= 500):
		e.Class = connectors.Auth
	case se.Code >= 400 && se.Code < 500:
		e.Class = connectors.Transient
	default:
		e.Class = connectors.Permanent
	}
	enh := ""
	if c := se.EnhancedCode; c != gosmtp.NoEnhancedCode && c != gosmtp.EnhancedCodeNotSet && c[0] > 0 {
		enh = fmt.Sprintf(" (%d.%d.%d)", c[0], c[1], c[2])
	}
	e.Msg = fmt.Sprintf("%s refused%s: %s", stage, enh, replyText(se.Code))
	return e
}

// replyText is a fixed description of a reply code (RFC 5321, 4954, 3207).
func replyText(code int) string {
	switch code {
	case 421:
		return "service not available, closing the connection"
	case 450:
		return "mailbox unavailable (busy or temporarily blocked)"
	case 451:
		return "local error in processing"
	case 452:
		return "insufficient system storage"
	case 454:
		return "temporary authentication or TLS failure"
	case 500, 501, 502, 503, 504:
		return "command or parameter not accepted"
	case 521, 556:
		return "the domain does not accept mail"
	case 523:
		return "the server requires TLS"
	case 530:
		return "authentication required"
	case 534:
		return "authentication mechanism too weak"
	case 535:
		return "authentication credentials invalid"
	case 538:
		return "encryption required for this authentication"
	case 550:
		return "mailbox unavailable or message refused by policy"
	case 551:
		return "user not local"
	case 552:
		return "exceeded storage allocation or message too large"
	case 553:
		return "mailbox name not allowed"
	case 554:
		return "transaction failed"
	case 555:
		return "MAIL FROM / RCPT TO parameters not recognized"
	}
	switch code / 100 {
	case 4:
		return "temporary failure"
	case 5:
		return "permanent failure"
	default:
		return "unexpected reply"
	}
}

// compose builds the message from the document. Document errors are
// permanent and name the field only.
func (s *Sink) compose(d connectors.Delivery) (email, error) {
	doc := d.Document
	to, err := addresses(doc, "to")
	if err != nil {
		return email{}, err
	}
	if len(to) == 0 {
		return email{}, permanent("the document has no `to` address")
	}
	replyTo, err := addresses(doc, "reply_to")
	if err != nil {
		return email{}, err
	}
	subject, err := text(doc, "subject")
	if err != nil {
		return email{}, err
	}
	body, err := text(doc, "text")
	if err != nil {
		return email{}, err
	}
	html, err := text(doc, "html")
	if err != nil {
		return email{}, err
	}
	if strings.TrimSpace(subject) == "" {
		return email{}, permanent("the document has an empty `subject`")
	}
	if strings.TrimSpace(body) == "" {
		return email{}, permanent("the document has an empty `text`")
	}
	return email{
		from: s.from, to: to, replyTo: replyTo, subject: subject, text: body, html: html,
		id: MessageID(d), date: s.now(),
	}, nil
}

func text(doc map[string]any, key string) (string, error) {
	switch v := doc[key].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	}
	return "", permanent(fmt.Sprintf("the document's `%s` must be a string", key))
}

// addresses reads an address, a comma-separated list or a list of them.
func addresses(doc map[string]any, key string) ([]*mail.Address, error) {
	var parts []string
	switch v := doc[key].(type) {
	case nil:
		return nil, nil
	case string:
		if strings.TrimSpace(v) == "" {
			return nil, nil
		}
		parts = []string{v}
	case []string:
		parts = v
	case []any:
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, permanent(fmt.Sprintf("the document's `%s` must be an address or a list of addresses", key))
			}
			parts = append(parts, s)
		}
	default:
		return nil, permanent(fmt.Sprintf("the document's `%s` must be an address or a list of addresses", key))
	}
	var out []*mail.Address
	for _, p := range parts {
		as, err := mail.ParseAddressList(p)
		if err != nil {
			return nil, permanent(fmt.Sprintf("the document's `%s` is not a valid address list", key))
		}
		out = append(out, as...)
	}
	return out, nil
}

func permanent(msg string) *connectors.Error {
	return &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: msg}
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func allASCII(as []*mail.Address) bool {
	for _, a := range as {
		if !ascii(a.Address) {
			return false
		}
	}
	return true
}

var _ connectors.Sink = (*Sink)(nil)
