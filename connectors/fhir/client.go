package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// ContentType is what the connector sends and accepts.
const ContentType = "application/fhir+json"

// maxBody bounds how much of an answer is read.
const maxBody = 32 << 20

// response is a FHIR server's answer, read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

// call sends one request to the FHIR server with auth. A 401 with a cached
// SMART token drops the token and tries once more with a fresh one. The
// returned error is a classified *connectors.Error for failures without an
// answer; answers of any status come back as a response.
func (c *Connector) call(ctx context.Context, method, u string, body []byte, hdr http.Header) (*response, error) {
	for attempt := 0; ; attempt++ {
		resp, auth, err := c.send(ctx, method, u, body, hdr)
		if err != nil {
			return nil, err
		}
		if resp.status == http.StatusUnauthorized && attempt == 0 && auth != "" {
			if _, ok := c.auth.(*smartAuth); ok {
				c.auth.invalidate(auth)
				continue
			}
		}
		return resp, nil
	}
}

func (c *Connector) send(ctx context.Context, method, u string, body []byte, hdr http.Header) (*response, string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	auth, err := c.auth.header(ctx)
	if err != nil {
		return nil, "", err
	}
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				wrote.Store(true)
			}
		},
	})
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, "", &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: "the request URL is not valid"}
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", ContentType)
	if body != nil {
		req.Header.Set("Content-Type", ContentType)
	}
	req.Header.Set("User-Agent", "clinicbridge")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, "", connectors.TransportError(provider, err, wrote.Load() && method != http.MethodGet)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			// The server acted but its answer was cut short.
			return nil, "", connectors.TransportError(provider, err, method != http.MethodGet)
		}
		b = nil
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}, auth, nil
}

// operationOutcome is a decoded OperationOutcome.
type operationOutcome struct {
	ResourceType string  `json:"resourceType"`
	Issue        []issue `json:"issue"`
}

// issue is one OperationOutcome.issue.
type issue struct {
	Severity    string   `json:"severity"`
	Code        string   `json:"code"`
	Diagnostics string   `json:"diagnostics"`
	Expression  []string `json:"expression"`
	Location    []string `json:"location"`
	Details     struct {
		Coding []struct {
			Code string `json:"code"`
		} `json:"coding"`
		Text string `json:"text"`
	} `json:"details"`
}

func parseOutcome(b []byte) (operationOutcome, bool) {
	var o operationOutcome
	if json.Unmarshal(b, &o) != nil || o.ResourceType != "OperationOutcome" {
		return operationOutcome{}, false
	}
	return o, true
}

// errorIssues are the issues with severity error or fatal (a failure's
// cause); warnings and information do not decide anything.
func (o operationOutcome) errorIssues() []issue {
	var out []issue
	for _, is := range o.Issue {
		if is.Severity == "error" || is.Severity == "fatal" {
			out = append(out, is)
		}
	}
	return out
}

// Issue codes that say the request may succeed later. They are the
// `transient` branch of the IssueType hierarchy, less `exception` (a server
// bug that comes with a 5xx, which is transient by status anyway):
// http://hl7.org/fhir/R4/valueset-issue-type.html
var transientCodes = map[string]bool{
	"transient":  true,
	"lock-error": true,
	"no-store":   true,
	"timeout":    true,
	"incomplete": true,
}

// classify turns a non-2xx answer into a *connectors.Error. The status sets
// the class (connectors.ClassifyStatus), refined by the OperationOutcome:
// `throttled` is RateLimited and the transient codes are Transient, except
// on 412, which always means a precondition (If-Match, a conditional
// operation's match count) failed. With withDiagnostics the issues'
// diagnostics are kept, truncated: only for requests that carry no
// resource (searches, reads), since servers echo the values they reject.
func classify(r *response, withDiagnostics bool) *connectors.Error {
	e := &connectors.Error{
		Class:      connectors.ClassifyStatus(r.status),
		Provider:   provider,
		HTTPStatus: r.status,
		RetryAfter: connectors.ParseRetryAfter(r.header.Get("Retry-After"), time.Now()),
	}
	o, ok := parseOutcome(r.body)
	issues := o.errorIssues()
	if ok && len(issues) > 0 {
		e.Code = issues[0].Code
		if r.status != http.StatusPreconditionFailed {
			for _, is := range issues {
				if is.Code == "throttled" && e.Class != connectors.Auth {
					e.Class = connectors.RateLimited
					break
				}
				if transientCodes[is.Code] && e.Class != connectors.Auth {
					e.Class = connectors.Transient
				}
			}
		}
		e.Msg = describeIssues(issues, withDiagnostics)
	} else {
		e.Msg = http.StatusText(r.status)
	}
	if r.status == http.StatusPreconditionFailed {
		e.Msg = "precondition failed (version mismatch on If-Match, or a conditional operation matched more than one resource): " + e.Msg
	}
	return e
}

// safeToken matches what may be copied from an issue without echoing a
// value: codes and FHIRPath expressions (element names, indexes).
var safeToken = regexp.MustCompile(`^[A-Za-z0-9_.\-\[\]()]{1,120}$`)

// describeIssues summarises issues as "severity code at Expression
// [details-code]"; diagnostics only when asked for.
func describeIssues(issues []issue, withDiagnostics bool) string {
	var parts []string
	for i, is := range issues {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(issues)-5))
			break
		}
		s := clean(is.Severity) + " " + clean(is.Code)
		var where []string
		for _, x := range append(append([]string{}, is.Expression...), is.Location...) {
			if safeToken.MatchString(x) {
				where = append(where, x)
			}
		}
		sort.Strings(where)
		if len(where) > 0 {
			s += " at " + strings.Join(compact(where), ", ")
		}
		for _, c := range is.Details.Coding {
			if safeToken.MatchString(c.Code) {
				s += " [" + c.Code + "]"
				break
			}
		}
		if withDiagnostics {
			d := is.Diagnostics
			if d == "" {
				d = is.Details.Text
			}
			if d != "" {
				s += ": " + truncate(d, 200)
			}
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func compact(s []string) []string {
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func clean(s string) string {
	if safeToken.MatchString(s) {
		return s
	}
	return "?"
}

func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8Start(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }
