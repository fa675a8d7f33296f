package twilio

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// transportError classifies a send that got no answer. Before the request
// was written Twilio cannot have acted: transient. After it, it may have
// queued the message: ambiguous, which the pipeline does not retry for a
// sink without an idempotency key. The underlying error is dropped because
// its text names the URL.
func transportError(err error, wrote bool, timeout time.Duration) *connectors.Error {
	e := &connectors.Error{Class: connectors.Transient, Provider: provider}
	reason := transportReason(err, timeout)
	if wrote {
		e.Class = connectors.Ambiguous
		e.Msg = "no answer after the request was sent (Twilio may have queued the message): " + reason
	} else {
		e.Msg = "request not sent: " + reason
	}
	return e
}

func transportReason(err error, timeout time.Duration) string {
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
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out (timeout " + timeout.String() + " or the caller's deadline)"
	case errors.As(err, &dnsErr):
		return "DNS lookup failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the remote"
	case errors.As(err, &certErr), errors.As(err, &unkAuth), errors.As(err, &host):
		return "TLS certificate verification failed"
	case errors.As(err, &alert), errors.As(err, &recHdr):
		return "TLS handshake failed"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timed out"
	case isDialError(err):
		return "could not connect"
	default:
		return "transport error"
	}
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
