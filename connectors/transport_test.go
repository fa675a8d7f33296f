package connectors_test

import (
	"context"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
)

func TestTransportErrorHasNoAddress(t *testing.T) {
	t.Parallel()
	err := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "jane-example.invalid"}}
	e := connectors.TransportError("http", err, false)
	require.Equal(t, "http: request not sent: DNS lookup failed", e.Error())
	require.Equal(t, connectors.Transient, e.Class)
	e = connectors.TransportError("twilio", context.DeadlineExceeded, true)
	require.Equal(t, connectors.Ambiguous, e.Class, "after sending, the remote may have acted")
	require.Contains(t, e.Error(), "timed out")
	require.True(t, connectors.IsDialError(err))
}
