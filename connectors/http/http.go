// Package http is the generic HTTP sink: it sends each mapped document as
// the JSON body of one request to a configured URL, with an idempotency key
// header, and classifies the outcome for the pipeline.
package http

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	stdhttp "net/http"
	"net/http/httptrace"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/http/httpfake"
)

const provider = "http"

// ActionRequest is the sink's one action.
const ActionRequest = "request"

// maxResponse bounds how much of a 2xx answer is read for its id.
const maxResponse = 1 << 20

// Type declares the `http` connector type.
func Type() connectors.Type {
	return connectors.Define(connectors.Type{
		Name: "http",
		Doc: "Sends each mapped document as the JSON body of an HTTP request to a configured URL, with an " +
			"idempotency key header. Any 2xx is success; other statuses are classified for retry.",
		Fields: fields,
		Actions: []connectors.Action{{
			Name: ActionRequest,
			Doc: "Send the mapped document as the JSON body of one request. The receipt's external id is the " +
				"answer's JSON `id` field, else its Location header.",
		}},
		Fake: func(w io.Writer) stdhttp.Handler { return httpfake.New(httpfake.WithLog(w)) },
	}, func(c *Config, env connectors.Env) (any, error) {
		return New(c, env)
	})
}

// Sink sends documents to one configured endpoint.
type Sink struct {
	method     string
	url        *urlTemplate
	header     stdhttp.Header // static headers, auth included
	idemHeader string
	timeout    time.Duration
	client     *retryablehttp.Client
}

// New builds a sink from a config. It does not touch the network.
func New(c *Config, env connectors.Env) (*Sink, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	tmpl, err := parseURLTemplate(c.URL)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	s := &Sink{
		method:     c.method(),
		url:        tmpl,
		header:     stdhttp.Header{},
		idemHeader: c.idempotencyHeader(),
		timeout:    c.timeout(),
	}
	s.header.Set("Content-Type", "application/json")
	s.header.Set("Accept", "application/json")
	s.header.Set("User-Agent", "clinicbridge")
	for k, v := range c.Headers {
		s.header.Set(k, v)
	}
	c.Auth.Apply(s.header)
	s.client = newClient(s.timeout)
	return s, nil
}

// newClient is retryablehttp kept short: at most two quick retries, and only
// of dial failures, where the request certainly never reached the server.
// Answers and failures after sending go straight back to the pipeline, which
// owns the long retries. It never logs (URLs may carry document values) and
// never follows redirects (a POST must not silently become a GET).
func newClient(timeout time.Duration) *retryablehttp.Client {
	tr := stdhttp.DefaultTransport.(*stdhttp.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: min(timeout, 10*time.Second), KeepAlive: 30 * time.Second}).DialContext
	// Deliveries to one sink run in parallel; the default of 2 idle
	// connections per host made nearly every delivery open a new one.
	tr.MaxIdleConnsPerHost = 256
	tr.MaxIdleConns = 1024
	c := retryablehttp.NewClient()
	c.HTTPClient = &stdhttp.Client{
		Transport:     tr,
		CheckRedirect: func(*stdhttp.Request, []*stdhttp.Request) error { return stdhttp.ErrUseLastResponse },
	}
	c.Logger = nil
	c.RetryMax = 2
	c.RetryWaitMin = 100 * time.Millisecond
	c.RetryWaitMax = 1 * time.Second
	c.CheckRetry = retryDialErrors
	c.ErrorHandler = retryablehttp.PassthroughErrorHandler // its default wraps the error with the URL
	return c
}

func retryDialErrors(ctx context.Context, resp *stdhttp.Response, err error) (bool, error) {
	if ctx.Err() != nil || resp != nil || err == nil {
		return false, nil
	}
	return connectors.IsDialError(err), nil
}

// Do sends d.Document. The error, if any, is a *connectors.Error whose
// message holds the status and a short reason: never the document, the
// answer's body, the URL (placeholders carry document values) or a header value.
func (s *Sink) Do(ctx context.Context, d connectors.Delivery) (connectors.Receipt, error) {
	if d.Action != "" && d.Action != ActionRequest {
		return connectors.Receipt{}, &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: fmt.Sprintf("unknown action %q", d.Action)}
	}
	body, err := json.Marshal(d.Document)
	if err != nil {
		return connectors.Receipt{}, &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: "the document is not JSON-encodable"}
	}
	u, err := s.url.render(d.Document)
	if err != nil {
		return connectors.Receipt{}, &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: err.Error()}
	}

	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				wrote.Store(true)
			}
		},
	})
	req, err := retryablehttp.NewRequestWithContext(ctx, s.method, u, body)
	if err != nil {
		return connectors.Receipt{}, &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: "the rendered url is not valid"}
	}
	for k, vs := range s.header {
		req.Header[k] = vs
	}
	if d.IdempotencyKey != "" {
		req.Header.Set(s.idemHeader, d.IdempotencyKey)
	}

	resp, err := s.client.Do(req)
	if err != nil {
		return connectors.Receipt{}, connectors.TransportError(provider, err, wrote.Load())
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return receipt(resp), nil
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
		return connectors.Receipt{}, &connectors.Error{
			Class: connectors.Permanent, Provider: provider, HTTPStatus: resp.StatusCode,
			Msg: "redirects are not followed; set url to the final address",
		}
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
		// The answer's body is left out on purpose: APIs echo the values they reject.
		return connectors.Receipt{}, connectors.HTTPError(provider, resp, "", stdhttp.StatusText(resp.StatusCode))
	}
}

// receipt reads the external id from a 2xx answer: its JSON `id` (string or
// number), else the Location header. A body that cannot be read or is not
// JSON does not undo the success.
func receipt(resp *stdhttp.Response) connectors.Receipt {
	rc := connectors.Receipt{Status: strconv.Itoa(resp.StatusCode)}
	var b []byte
	if resp.ContentLength != 0 { // most answers to a delivery are empty: skip ReadAll's buffer
		b, _ = io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	}
	if len(b) > 0 {
		var body struct {
			ID any `json:"id"`
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if dec.Decode(&body) == nil {
			switch id := body.ID.(type) {
			case string:
				rc.ExternalID = id
			case json.Number:
				rc.ExternalID = id.String()
			}
		}
	}
	if rc.ExternalID == "" {
		rc.ExternalID = resp.Header.Get("Location")
	}
	return rc
}

var (
	_ connectors.Sink   = (*Sink)(nil)
	_ connectors.Closer = (*Sink)(nil)
)

// Close releases idle connections.
func (s *Sink) Close() error {
	s.client.HTTPClient.CloseIdleConnections()
	return nil
}
