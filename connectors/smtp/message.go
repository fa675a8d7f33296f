package smtp

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// MessageIDDomain is the right-hand side of every Message-ID the connector writes.
const MessageIDDomain = "clinicbridge"

// MessageID is the Message-ID header value for a delivery:
// <delivery-id@clinicbridge>. It is the same on every attempt and replay of
// one delivery, so a recipient system (or a person) can tell a retry from a
// second message. A delivery id that is not a valid dot-atom is hashed.
func MessageID(d connectors.Delivery) string {
	id := d.DeliveryID
	switch {
	case id != "" && dotAtom(id):
	case id != "":
		id = "h" + hashHex(id)
	case d.IdempotencyKey != "":
		id = "k" + hashHex(d.IdempotencyKey)
	default:
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		id = "r" + hex.EncodeToString(b)
	}
	return "<" + id + "@" + MessageIDDomain + ">"
}

func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// dotAtom reports whether s is an RFC 5322 dot-atom-text (the left of a msg-id).
func dotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") || len(s) > 200 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-/=?^_`{|}~.", r)) {
			return false
		}
	}
	return true
}

// email is one composed message.
type email struct {
	from    *mail.Address
	to      []*mail.Address
	replyTo []*mail.Address
	subject string
	text    string
	html    string
	id      string
	date    time.Time
}

// bytes renders the message with CRLF line endings: headers From, To,
// Reply-To, Subject, Date, Message-ID, MIME-Version, Auto-Submitted, then a
// text/plain body, or multipart/alternative (text, then HTML) when html is
// set. Bodies are quoted-printable UTF-8. The same email renders to the same
// bytes (the boundary comes from the Message-ID).
func (e email) bytes() []byte {
	var b bytes.Buffer
	h := func(name, value string) { fmt.Fprintf(&b, "%s: %s\r\n", name, value) }
	h("From", e.from.String())
	h("To", addressList(e.to))
	if len(e.replyTo) > 0 {
		h("Reply-To", addressList(e.replyTo))
	}
	h("Subject", mime.QEncoding.Encode("utf-8", oneLine(e.subject)))
	h("Date", e.date.Format(time.RFC1123Z))
	h("Message-ID", e.id)
	h("MIME-Version", "1.0")
	// RFC 3834: an automated message; vacation responders stay quiet.
	h("Auto-Submitted", "auto-generated")

	if e.html == "" {
		h("Content-Type", "text/plain; charset=utf-8")
		h("Content-Transfer-Encoding", "quoted-printable")
		b.WriteString("\r\n")
		writeQP(&b, e.text)
		return b.Bytes()
	}
	mw := multipart.NewWriter(&b)
	sum := sha256.Sum256([]byte(e.id))
	_ = mw.SetBoundary("cb-alt-" + hex.EncodeToString(sum[:12]))
	h("Content-Type", "multipart/alternative; boundary="+mw.Boundary())
	b.WriteString("\r\n")
	for _, part := range []struct{ typ, body string }{{"text/plain", e.text}, {"text/html", e.html}} {
		ph := textproto.MIMEHeader{}
		ph.Set("Content-Type", part.typ+"; charset=utf-8")
		ph.Set("Content-Transfer-Encoding", "quoted-printable")
		w, _ := mw.CreatePart(ph)
		var pb bytes.Buffer
		writeQP(&pb, part.body)
		_, _ = w.Write(pb.Bytes())
	}
	_ = mw.Close()
	return b.Bytes()
}

// writeQP writes s quoted-printable with CRLF line breaks and a final CRLF.
func writeQP(b *bytes.Buffer, s string) {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	w := quotedprintable.NewWriter(b)
	_, _ = w.Write([]byte(s))
	_ = w.Close()
	if !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
		b.WriteString("\r\n")
	}
}

// oneLine folds a header value's line breaks into spaces (no header injection).
func oneLine(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s))
}

func addressList(as []*mail.Address) string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return strings.Join(out, ", ")
}
