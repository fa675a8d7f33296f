package smtpfake_test

import (
	"crypto/tls"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors/smtp/smtpfake"
)

const msg = "From: a@x.example\r\nTo: b@y.example\r\nSubject: hi\r\n\r\nhello\r\n.leading dot\r\n"

func start(t *testing.T, opts ...smtpfake.Option) *smtpfake.Server {
	t.Helper()
	s, err := smtpfake.Start(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	require.Equal(t, "127.0.0.1", s.Host())
	return s
}

func tlsConfig(t *testing.T) *tls.Config {
	pool, err := smtpfake.CertPool()
	require.NoError(t, err)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

func TestSTARTTLSAndAuth(t *testing.T) {
	t.Parallel()
	s := start(t, smtpfake.WithAuth("u", "p"))
	c, err := gosmtp.DialStartTLS(s.Addr(), tlsConfig(t))
	require.NoError(t, err)
	defer c.Close()
	var se *gosmtp.SMTPError
	require.ErrorAs(t, c.Mail("a@x.example", nil), &se)
	require.Equal(t, 530, se.Code, "AUTH first")
	require.ErrorAs(t, c.Auth(sasl.NewPlainClient("", "u", "wrong")), &se)
	require.Equal(t, 535, se.Code)
	require.NoError(t, c.Auth(sasl.NewPlainClient("", "u", "p")))
	require.NoError(t, c.SendMail("a@x.example", []string{"b@y.example"}, strings.NewReader(msg)))
	require.NoError(t, c.Quit())

	got := s.Messages()
	require.Len(t, got, 1)
	require.Equal(t, "a@x.example", got[0].From)
	require.Equal(t, []string{"b@y.example"}, got[0].To)
	require.Equal(t, "u", got[0].User)
	require.True(t, got[0].TLS)
	require.Equal(t, msg, string(got[0].Data))
	p, err := got[0].Parsed()
	require.NoError(t, err)
	require.Equal(t, "hi", p.Header.Get("Subject"))
}

func TestImplicitTLSAndUntrustedCert(t *testing.T) {
	t.Parallel()
	s := start(t, smtpfake.WithTLS(smtpfake.Implicit))
	c, err := gosmtp.DialTLS(s.Addr(), tlsConfig(t))
	require.NoError(t, err)
	require.NoError(t, c.SendMail("a@x.example", []string{"b@y.example"}, strings.NewReader(msg)))
	c.Close()
	require.True(t, s.Messages()[0].TLS)

	// Without the fake's certificate in the pool the handshake fails.
	_, err = gosmtp.DialTLS(s.Addr(), &tls.Config{ServerName: "127.0.0.1"})
	var certErr *tls.CertificateVerificationError
	require.ErrorAs(t, err, &certErr)
}

func TestScriptedReplies(t *testing.T) {
	t.Parallel()
	s := start(t, smtpfake.WithTLS(smtpfake.NoTLS))
	s.Reply(smtpfake.StageData, smtpfake.Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Text: "later"})
	s.RejectRecipient("Gone@Y.example", smtpfake.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Text: "gone@y.example unknown"})
	send := func(to ...string) error {
		c, err := gosmtp.Dial(s.Addr())
		require.NoError(t, err)
		defer c.Close()
		return c.SendMail("a@x.example", to, strings.NewReader(msg))
	}
	var se *gosmtp.SMTPError
	require.ErrorAs(t, send("b@y.example"), &se)
	require.Equal(t, 451, se.Code)
	require.Equal(t, gosmtp.EnhancedCode{4, 3, 0}, se.EnhancedCode)
	require.NoError(t, send("b@y.example"), "once only")
	for range 2 {
		require.ErrorAs(t, send("gone@y.example"), &se)
		require.Equal(t, 550, se.Code)
	}
	require.Len(t, s.Messages(), 1)
	require.GreaterOrEqual(t, s.Sessions(), 4)
}

func TestHoldDataUntilClose(t *testing.T) {
	t.Parallel()
	s := start(t, smtpfake.WithTLS(smtpfake.NoTLS))
	s.HoldData()
	c, err := gosmtp.Dial(s.Addr())
	require.NoError(t, err)
	defer c.Close()
	c.SubmissionTimeout = 100 * time.Millisecond
	err = c.SendMail("a@x.example", []string{"b@y.example"}, strings.NewReader(msg))
	require.Error(t, err)
	var se *gosmtp.SMTPError
	require.False(t, errors.As(err, &se), "no reply at all, only a timeout")
	require.NoError(t, s.Close())
	require.Empty(t, s.Messages())
}

func TestWriteCA(t *testing.T) {
	t.Parallel()
	path, err := smtpfake.WriteCA(t.TempDir())
	require.NoError(t, err)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(b), "BEGIN CERTIFICATE")
	pem, err := smtpfake.CertPEM()
	require.NoError(t, err)
	require.Equal(t, pem, b)
}
