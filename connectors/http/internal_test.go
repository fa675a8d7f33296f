package http

import (
	"context"
	"errors"
	"net"
	stdhttp "net/http"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRetryOnlyDialErrors(t *testing.T) {
	t.Parallel()
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	read := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name  string
		ctx   context.Context
		resp  *stdhttp.Response
		err   error
		retry bool
	}{
		{"dial error", context.Background(), nil, dial, true},
		{"dns error", context.Background(), nil, &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "h"}}, true},
		{"read error", context.Background(), nil, read, false},
		{"any response", context.Background(), &stdhttp.Response{StatusCode: 503}, nil, false},
		{"429", context.Background(), &stdhttp.Response{StatusCode: 429}, nil, false},
		{"deadline", context.Background(), nil, context.DeadlineExceeded, false},
		{"context done", cancelled, nil, dial, false},
		{"other", context.Background(), nil, errors.New("x"), false},
	} {
		retry, err := retryDialErrors(tc.ctx, tc.resp, tc.err)
		require.NoError(t, err)
		require.Equal(t, tc.retry, retry, tc.name)
	}
}
