package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client talks to a running agent's admin API (the admin CLI verbs).
type Client struct {
	Base  string // http://127.0.0.1:8081
	Token string
	HTTP  *http.Client
}

// NewClient returns a client for the admin listener at addr.
func NewClient(addr, token string) *Client {
	host, port, ok := strings.Cut(addr, ":")
	if ok && (host == "" || host == "0.0.0.0" || host == "::" || host == "[::]") {
		addr = "127.0.0.1:" + port
	}
	return &Client{Base: "http://" + addr, Token: token, HTTP: &http.Client{Timeout: 2 * time.Minute}}
}

// Do calls method path with an optional JSON body and decodes the JSON answer into out.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	u := c.Base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the agent's admin API at %s (is `clinicbridge run` running?): %w", c.Base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return fmt.Errorf("admin API: %s", e.Error)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}
