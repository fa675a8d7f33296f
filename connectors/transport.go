package connectors

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"syscall"
)

// TransportError classifies a call that got no answer. Before the request
// was written the remote cannot have acted: transient. After it, it may
// have: ambiguous, which the pipeline retries only where the remote dedupes by
// idempotency key. The underlying error is dropped because its text names the
// URL, which can carry identifiers.
func TransportError(provider string, err error, wrote bool) *Error {
	e := &Error{Class: Transient, Provider: provider}
	reason := TransportReason(err)
	if wrote {
		e.Class = Ambiguous
		e.Msg = "no answer after the request was sent (the remote may have acted): " + reason
	} else {
		e.Msg = "request not sent: " + reason
	}
	return e
}

// TransportReason names a failure without an answer by its kind only.
func TransportReason(err error) string {
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
		return "timed out"
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
	case IsDialError(err):
		return "could not connect"
	default:
		return "transport error"
	}
}

// IsDialError reports a failure to connect: the request was certainly not sent.
func IsDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
