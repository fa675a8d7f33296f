package smtp_test

import (
	"context"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/smtp"
	"github.com/clinicbridge/clinicbridge/connectors/smtp/smtpfake"
)

const (
	user     = "reminders@north.example"
	password = "pw-9f8e7d6c"
	patient  = "jane.example@patient.example"
	subject  = "Your physio appointment tomorrow"
	body     = "Dear Jane Example,\nsee you at 10:30 at North Clinic.\n.\nReply to reschedule."
)

var fixedNow = time.Date(2026, 11, 2, 9, 30, 0, 0, time.UTC)

func sampleDelivery() connectors.Delivery {
	return connectors.Delivery{
		Action:         smtp.ActionSendEmail,
		Document:       map[string]any{"to": "Jane Example <" + patient + ">", "subject": subject, "text": body},
		IdempotencyKey: "evt_1:reminder-email",
		DeliveryID:     "dlv_abc234",
		EventID:        "evt_1",
		Route:          "reminder-email",
	}
}

type bundle struct {
	fake *smtpfake.Server
	sink *smtp.Sink
}

// setup starts a fake with opts and builds the sink from YAML (through
// config.Check and Type.Build, as the loader does). cfg may use %HOST%,
// %PORT% and %CA% (the fake's certificate written to a file).
func setup(t *testing.T, cfg string, opts ...smtpfake.Option) bundle {
	t.Helper()
	fake, err := smtpfake.Start(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = fake.Close() })
	return bundle{fake: fake, sink: build(t, cfg, fake.Host(), fake.Port())}
}

func build(t *testing.T, cfg, host string, port int) *smtp.Sink {
	t.Helper()
	dir := t.TempDir()
	ca, err := smtpfake.WriteCA(dir)
	require.NoError(t, err)
	cfg = strings.NewReplacer("%HOST%", host, "%PORT%", fmt.Sprint(port), "%CA%", filepath.Base(ca)).Replace(cfg)
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
	require.Empty(t, config.Check("c.yaml", doc.Content[0], smtp.Type().Fields, "connectors.mail"))
	s, err := smtp.Type().Build(doc.Content[0], connectors.Env{Name: "mail", Dir: dir, Now: func() time.Time { return fixedNow }})
	require.NoError(t, err)
	return s.(*smtp.Sink)
}

const (
	startTLSCfg = "{host: %HOST%, port: %PORT%, from: 'North Clinic <" + user + ">', username: " + user + ", password: " + password + ", tls_ca_file: %CA%}"
	plainCfg    = "{host: %HOST%, port: %PORT%, from: " + user + ", tls: none}"
)

func authOpts() []smtpfake.Option { return []smtpfake.Option{smtpfake.WithAuth(user, password)} }

var forbidden = []string{password, patient, "Jane", "physio", "North Clinic.", "user unknown"}

func do(t *testing.T, s *smtp.Sink, d connectors.Delivery) (connectors.Receipt, error) {
	t.Helper()
	rc, err := s.Do(context.Background(), d)
	if err != nil {
		connectortest.NoLeak(t, err, forbidden...)
	}
	return rc, err
}

func TestContract(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		cfg  string
		opts []smtpfake.Option
	}{
		"starttls with auth": {startTLSCfg, authOpts()},
		"implicit tls": {"{host: %HOST%, port: %PORT%, from: " + user + ", tls: implicit, tls_ca_file: %CA%, username: " + user + ", password: " + password + "}",
			append(authOpts(), smtpfake.WithTLS(smtpfake.Implicit))},
		"plain local relay": {plainCfg, []smtpfake.Option{smtpfake.WithTLS(smtpfake.NoTLS)}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tc.cfg, tc.opts...)
			connectortest.RunSink(t, connectortest.SinkHarness{
				Sink:          b.sink,
				Delivery:      sampleDelivery(),
				ExternalID:    true,
				Secrets:       []string{password},
				PayloadValues: []string{patient},
			})
			require.NotEmpty(t, b.fake.Messages())
		})
	}
}

func TestMessageShape(t *testing.T) {
	t.Parallel()
	b := setup(t, startTLSCfg, authOpts()...)
	d := sampleDelivery()
	d.Document["reply_to"] = "Front Desk <desk@north.example>"
	d.Document["subject"] = "Rendez-vous demain — à 10:30\r\nBcc: evil@attacker.example"
	rc, err := do(t, b.sink, d)
	require.NoError(t, err)
	require.Equal(t, connectors.Receipt{ExternalID: "<dlv_abc234@clinicbridge>", Status: "accepted"}, rc)

	msgs := b.fake.Messages()
	require.Len(t, msgs, 1)
	m := msgs[0]
	require.Equal(t, user, m.From)
	require.Equal(t, []string{patient}, m.To)
	require.Equal(t, user, m.User)
	require.True(t, m.TLS)

	p, err := m.Parsed()
	require.NoError(t, err)
	require.Equal(t, `"North Clinic" <`+user+`>`, p.Header.Get("From"))
	require.Equal(t, `"Jane Example" <`+patient+`>`, p.Header.Get("To"))
	require.Equal(t, `"Front Desk" <desk@north.example>`, p.Header.Get("Reply-To"))
	require.Equal(t, "<dlv_abc234@clinicbridge>", p.Header.Get("Message-ID"))
	require.Equal(t, "1.0", p.Header.Get("MIME-Version"))
	require.Equal(t, "auto-generated", p.Header.Get("Auto-Submitted"))
	require.Empty(t, p.Header.Get("Bcc"), "no header injection through the subject")
	date, err := p.Header.Date()
	require.NoError(t, err)
	require.True(t, fixedNow.Equal(date))
	subj, err := new(mime.WordDecoder).DecodeHeader(p.Header.Get("Subject"))
	require.NoError(t, err)
	require.Equal(t, "Rendez-vous demain — à 10:30  Bcc: evil@attacker.example", subj)

	mt, params, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
	require.NoError(t, err)
	require.Equal(t, "text/plain", mt)
	require.Equal(t, "utf-8", params["charset"])
	require.Equal(t, "quoted-printable", p.Header.Get("Content-Transfer-Encoding"))
	text, err := io.ReadAll(quotedprintable.NewReader(p.Body))
	require.NoError(t, err)
	require.Equal(t, strings.ReplaceAll(body, "\n", "\r\n")+"\r\n", string(text), "a line holding only a dot survives")
}

func TestMultipartAlternative(t *testing.T) {
	t.Parallel()
	b := setup(t, plainCfg, smtpfake.WithTLS(smtpfake.NoTLS))
	d := sampleDelivery()
	d.Document["html"] = "<p>Dear Jane Example, see you at <b>10:30</b>.</p>"
	d.Document["to"] = []any{patient, "Guardian <guardian@patient.example>"}
	_, err := do(t, b.sink, d)
	require.NoError(t, err)
	m := b.fake.Messages()[0]
	require.Equal(t, []string{patient, "guardian@patient.example"}, m.To)
	p, err := m.Parsed()
	require.NoError(t, err)
	mt, params, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
	require.NoError(t, err)
	require.Equal(t, "multipart/alternative", mt)
	mr := multipart.NewReader(p.Body, params["boundary"])
	var types, bodies []string
	for {
		part, err := mr.NextPart() // decodes quoted-printable
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		b, err := io.ReadAll(part)
		require.NoError(t, err)
		types = append(types, part.Header.Get("Content-Type"))
		bodies = append(bodies, string(b))
	}
	require.Equal(t, []string{"text/plain; charset=utf-8", "text/html; charset=utf-8"}, types)
	require.Contains(t, bodies[0], "see you at 10:30")
	require.Equal(t, "<p>Dear Jane Example, see you at <b>10:30</b>.</p>\r\n", bodies[1])
}

func TestMessageIDIsDeterministic(t *testing.T) {
	t.Parallel()
	b := setup(t, plainCfg, smtpfake.WithTLS(smtpfake.NoTLS))
	d := sampleDelivery()
	d.Document["html"] = "<p>hi</p>"
	b.fake.Reply(smtpfake.StageData, smtpfake.Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Text: "try again later"})
	_, err := do(t, b.sink, d)
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
	first, err := do(t, b.sink, d)
	require.NoError(t, err)
	second, err := do(t, b.sink, d)
	require.NoError(t, err)
	require.Equal(t, first.ExternalID, second.ExternalID)
	msgs := b.fake.Messages()
	require.Len(t, msgs, 2)
	require.Equal(t, msgs[0].Data, msgs[1].Data, "a retry sends the same bytes, Message-ID and boundary included")

	require.Equal(t, "<dlv_abc234@clinicbridge>", smtp.MessageID(d))
	other := d
	other.DeliveryID = "dlv_other"
	require.NotEqual(t, smtp.MessageID(d), smtp.MessageID(other))
	odd := d
	odd.DeliveryID = "a b<c>@d"
	require.Regexp(t, `^<h[0-9a-f]{32}@clinicbridge>$`, smtp.MessageID(odd))
	require.Equal(t, smtp.MessageID(odd), smtp.MessageID(odd))
}

func TestReplyCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		stage string
		reply smtpfake.Reply
		class connectors.Class
		want  string
	}{
		{smtpfake.StageData, smtpfake.Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Text: "Jane Example <" + patient + "> greylisted"}, connectors.Transient, "smtp code 451: end of data refused (4.3.0): local error in processing"},
		{smtpfake.StageRcpt, smtpfake.Reply{Code: 450, Enhanced: [3]int{4, 2, 1}, Text: patient + " mailbox busy"}, connectors.Transient, "code 450: RCPT TO refused (4.2.1)"},
		{smtpfake.StageMail, smtpfake.Reply{Code: 421, Text: "too busy"}, connectors.Transient, "code 421: MAIL FROM refused"},
		{smtpfake.StageRcpt, smtpfake.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Text: "<" + patient + ">: user unknown"}, connectors.Permanent, "smtp code 550: RCPT TO refused (5.1.1): mailbox unavailable"},
		{smtpfake.StageData, smtpfake.Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "spam: Dear Jane Example"}, connectors.Permanent, "code 554: end of data refused (5.7.1)"},
		{smtpfake.StageMail, smtpfake.Reply{Code: 553, Enhanced: [3]int{5, 1, 8}, Text: "sender rejected"}, connectors.Permanent, "code 553"},
	} {
		b := setup(t, startTLSCfg, authOpts()...)
		b.fake.Reply(tc.stage, tc.reply)
		_, err := do(t, b.sink, sampleDelivery())
		require.Error(t, err)
		require.Equal(t, tc.class, connectors.ClassOf(err), "%v", err)
		require.Contains(t, err.Error(), tc.want)
		connectortest.NoLeak(t, err, tc.reply.Text, "greylisted", "mailbox busy")
		require.Empty(t, b.fake.Messages())

		// 4xx: the same delivery goes through on the next attempt.
		if tc.class == connectors.Transient {
			_, err = do(t, b.sink, sampleDelivery())
			require.NoError(t, err)
			require.Len(t, b.fake.Messages(), 1)
		}
	}
}

func TestOneRejectedRecipientSendsNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, plainCfg, smtpfake.WithTLS(smtpfake.NoTLS))
	b.fake.RejectRecipient("gone@patient.example", smtpfake.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Text: "gone@patient.example user unknown"})
	d := sampleDelivery()
	d.Document["to"] = patient + ", gone@patient.example"
	_, err := do(t, b.sink, d)
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	connectortest.NoLeak(t, err, "gone@patient.example")
	require.Empty(t, b.fake.Messages())
}

func TestAuth(t *testing.T) {
	t.Parallel()
	fake, err := smtpfake.Start(authOpts()...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = fake.Close() })

	wrong := build(t, "{host: %HOST%, port: %PORT%, from: "+user+", username: "+user+", password: wrong-pw-123, tls_ca_file: %CA%}", fake.Host(), fake.Port())
	_, err = do(t, wrong, sampleDelivery())
	require.Equal(t, connectors.Auth, connectors.ClassOf(err))
	require.Contains(t, err.Error(), "code 535: AUTH refused (5.7.8): authentication credentials invalid")
	connectortest.NoLeak(t, err, "wrong-pw-123")

	none := build(t, "{host: %HOST%, port: %PORT%, from: "+user+", tls_ca_file: %CA%}", fake.Host(), fake.Port())
	_, err = do(t, none, sampleDelivery())
	require.Equal(t, connectors.Auth, connectors.ClassOf(err), "530 authentication required")
	require.Empty(t, fake.Messages())

	// A loopback relay without TLS may take credentials.
	relay, err := smtpfake.Start(append(authOpts(), smtpfake.WithTLS(smtpfake.NoTLS), smtpfake.AllowInsecureAuth())...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = relay.Close() })
	s := build(t, "{host: %HOST%, port: %PORT%, from: "+user+", tls: none, username: "+user+", password: "+password+"}", relay.Host(), relay.Port())
	_, err = do(t, s, sampleDelivery())
	require.NoError(t, err)
	require.Equal(t, user, relay.Messages()[0].User)
	require.False(t, relay.Messages()[0].TLS)

	// A server without AUTH on offer gets no credentials.
	bare, err := smtpfake.Start()
	require.NoError(t, err)
	t.Cleanup(func() { _ = bare.Close() })
	s = build(t, startTLSCfg, bare.Host(), bare.Port())
	_, err = do(t, s, sampleDelivery())
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	require.Contains(t, err.Error(), "AUTH PLAIN")
}

func TestTLSIsRequiredAndVerified(t *testing.T) {
	t.Parallel()
	// A server that offers no STARTTLS never gets the message.
	plain, err := smtpfake.Start(smtpfake.WithTLS(smtpfake.NoTLS))
	require.NoError(t, err)
	t.Cleanup(func() { _ = plain.Close() })
	s := build(t, "{host: %HOST%, port: %PORT%, from: "+user+"}", plain.Host(), plain.Port())
	_, err = do(t, s, sampleDelivery())
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
	require.Contains(t, err.Error(), "does not offer STARTTLS")
	require.Empty(t, plain.Messages())

	// Without tls_ca_file the self-signed certificate is not trusted.
	for _, mode := range []smtpfake.TLSMode{smtpfake.STARTTLS, smtpfake.Implicit} {
		fake, err := smtpfake.Start(smtpfake.WithTLS(mode))
		require.NoError(t, err)
		t.Cleanup(func() { _ = fake.Close() })
		cfg := "{host: %HOST%, port: %PORT%, from: " + user + "}"
		if mode == smtpfake.Implicit {
			cfg = "{host: %HOST%, port: %PORT%, from: " + user + ", tls: implicit}"
		}
		s := build(t, cfg, fake.Host(), fake.Port())
		_, err = do(t, s, sampleDelivery())
		require.Equal(t, connectors.Transient, connectors.ClassOf(err))
		require.Contains(t, err.Error(), "TLS certificate verification failed")
		require.Empty(t, fake.Messages())
	}
}

func TestTimeouts(t *testing.T) {
	t.Parallel()
	// After the final dot: the server may have the message.
	b := setup(t, "{host: %HOST%, port: %PORT%, from: "+user+", tls: none, timeout: 300ms}", smtpfake.WithTLS(smtpfake.NoTLS))
	b.fake.HoldData()
	_, err := do(t, b.sink, sampleDelivery())
	require.Equal(t, connectors.Ambiguous, connectors.ClassOf(err), "%v", err)
	require.Contains(t, err.Error(), "end of data: no reply after the message was sent")

	// A server that accepts the connection and never greets: nothing was sent.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	host, port, _ := net.SplitHostPort(l.Addr().String())
	s := build(t, "{host: "+host+", port: "+port+", from: "+user+", tls: none, timeout: 200ms}", host, 0)
	_, err = do(t, s, sampleDelivery())
	require.Equal(t, connectors.Transient, connectors.ClassOf(err), "%v", err)
	require.Contains(t, err.Error(), "timed out")
}

func TestConnectionRefusedIsTransient(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	host, port, _ := net.SplitHostPort(l.Addr().String())
	require.NoError(t, l.Close())
	s := build(t, "{host: "+host+", port: "+port+", from: "+user+", tls: none}", host, 0)
	_, err = do(t, s, sampleDelivery())
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
	require.Contains(t, err.Error(), "connect: message not sent: connection refused")
}

func TestDocumentErrors(t *testing.T) {
	t.Parallel()
	b := setup(t, plainCfg, smtpfake.WithTLS(smtpfake.NoTLS))
	for _, change := range []map[string]any{
		{"to": nil},
		{"to": ""},
		{"to": "not an address"},
		{"to": []any{patient, 7}},
		{"to": 7},
		{"subject": ""},
		{"subject": 5},
		{"text": nil},
		{"html": []any{"x"}},
		{"reply_to": "@@"},
	} {
		d := sampleDelivery()
		d.Document = map[string]any{"to": patient, "subject": subject, "text": body}
		for k, v := range change {
			d.Document[k] = v
		}
		_, err := do(t, b.sink, d)
		require.Equal(t, connectors.Permanent, connectors.ClassOf(err), "%v", change)
		connectortest.NoLeak(t, err, "not an address")
	}
	d := sampleDelivery()
	d.Action = "send_sms"
	_, err := do(t, b.sink, d)
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	require.Zero(t, b.fake.Sessions(), "nothing reached the server")
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	for cfg, want := range map[string]string{
		"{from: a@b.example}":                                                                  "host: required",
		"{host: smtp.example, from: 'not an address'}":                                         "from:",
		"{host: smtp.example}":                                                                 "from: required",
		"{host: smtp.example, from: a@b.example, tls: ssl}":                                    "tls:",
		"{host: 'smtp.example:587', from: a@b.example}":                                        "host:",
		"{host: smtp.example, from: a@b.example, port: 70000}":                                 "port:",
		"{host: smtp.example, from: a@b.example, username: u}":                                 "password: required",
		"{host: smtp.example, from: a@b.example, password: s3cr3t-pw}":                         "username: required",
		"{host: smtp.example, from: a@b.example, tls: none, username: u, password: s3cr3t-pw}": "unencrypted",
		"{host: smtp.example, from: a@b.example, tls: none, tls_ca_file: x.pem}":               "tls_ca_file",
		"{host: smtp.example, from: a@b.example, tls_ca_file: missing.pem}":                    "tls_ca_file",
		"{host: smtp.example, from: a@b.example, timeout: 0s}":                                 "timeout",
	} {
		var doc yaml.Node
		require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
		_, err := smtp.Type().Build(doc.Content[0], connectors.Env{Name: "mail", Dir: t.TempDir()})
		require.ErrorContains(t, err, want, cfg)
		connectortest.NoLeak(t, err, "s3cr3t-pw")
	}
	// Credentials without TLS are fine to a loopback relay.
	for _, host := range []string{"127.0.0.1", "localhost", "::1"} {
		var doc yaml.Node
		require.NoError(t, yaml.Unmarshal([]byte("{host: '"+host+"', from: a@b.example, tls: none, username: u, password: p}"), &doc))
		_, err := smtp.Type().Build(doc.Content[0], connectors.Env{Name: "mail"})
		require.NoError(t, err, host)
	}
	// A CA file that holds no certificate is refused.
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bad.pem"), []byte("not pem"), 0o600))
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte("{host: smtp.example, from: a@b.example, tls_ca_file: bad.pem}"), &doc))
	_, err := smtp.Type().Build(doc.Content[0], connectors.Env{Name: "mail", Dir: dir})
	require.ErrorContains(t, err, "no PEM certificate")
}
