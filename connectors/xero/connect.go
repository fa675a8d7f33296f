package xero

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// CallbackPath is where Connect serves the OAuth redirect: register
// http://<listen>/callback as a redirect URI of the Xero app.
const CallbackPath = "/callback"

// Connect runs the OAuth 2.0 authorization-code flow (with PKCE) for the
// connector configured by node: it prints the authorization URL to out,
// serves the redirect on listen (a loopback address such as
// 127.0.0.1:8765 or localhost:8765), checks the state parameter, exchanges
// the code at token_url and stores the token in state under the key the
// sink reads, so a paused connector resumes on its next delivery. It
// returns when the token is stored, the user refuses, or ctx ends.
func Connect(ctx context.Context, node *yaml.Node, state connectors.State, listen string, out io.Writer) error {
	var c Config
	if node != nil {
		if err := node.Decode(&c); err != nil {
			return fmt.Errorf("xero connect: %w", err)
		}
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("xero connect: %w", err)
	}
	if state == nil {
		return errors.New("xero connect: no connector state to store the token in")
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("xero connect: listen address %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("xero connect: listen address %q is not loopback (use 127.0.0.1, [::1] or localhost)", listen)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("xero connect: %w", err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	redirect := "http://" + net.JoinHostPort(host, port) + CallbackPath

	cfg := oauthConfig(&c, redirect)
	stateParam := randomHex(16)
	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL(stateParam, oauth2.S256ChallengeOption(verifier))
	fmt.Fprintf(out, "Open this URL in a browser, sign in to Xero and allow access for the organisation %s:\n\n  %s\n\nWaiting for Xero to redirect to %s ...\n", c.TenantID, authURL, redirect)

	client := &http.Client{Timeout: callTimeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	xctx := context.WithValue(ctx, oauth2.HTTPClient, client)
	done := make(chan error, 1)
	var once sync.Once
	finish := func(err error) { once.Do(func() { done <- err }) }

	mux := http.NewServeMux()
	mux.HandleFunc(CallbackPath, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(stateParam)) != 1 {
			// Not our redirect (a stale tab, or forged): keep waiting.
			page(w, http.StatusBadRequest, "This link does not belong to the running `clinicbridge xero connect`; start again from the URL it printed.")
			return
		}
		if e := q.Get("error"); e != "" {
			page(w, http.StatusForbidden, "Xero did not grant access ("+e+"). Nothing was stored.")
			finish(fmt.Errorf("xero connect: Xero answered %s: nothing stored", e))
			return
		}
		code := q.Get("code")
		if code == "" {
			page(w, http.StatusBadRequest, "The redirect carries no code.")
			return
		}
		tok, err := cfg.Exchange(xctx, code, oauth2.VerifierOption(verifier))
		if err != nil {
			page(w, http.StatusBadGateway, "Exchanging the code failed; see the terminal.")
			finish(fmt.Errorf("xero connect: exchanging the code failed: %s", exchangeReason(err)))
			return
		}
		if err := StoreToken(ctx, state, tok); err != nil {
			page(w, http.StatusInternalServerError, "Storing the token failed; see the terminal.")
			finish(fmt.Errorf("xero connect: storing the token failed: %w", err))
			return
		}
		page(w, http.StatusOK, "Xero is connected. You can close this window.")
		reportTenants(xctx, client, c, tok, out)
		finish(nil)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	select {
	case err := <-done:
		if err == nil {
			fmt.Fprintln(out, "Token stored. The connector uses it from its next delivery.")
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("xero connect: gave up waiting for the redirect: %w", ctx.Err())
	}
}

// reportTenants prints the organisations the grant covers and warns when
// tenant_id is not one of them. Failing to list them is only a warning.
func reportTenants(ctx context.Context, client *http.Client, c Config, tok *oauth2.Token, out io.Writer) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.baseURL()+"/connections", nil)
	if err != nil {
		return
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(out, "warning: could not list the connected organisations")
		return
	}
	defer resp.Body.Close()
	var conns []struct {
		TenantID   string `json:"tenantId"`
		TenantName string `json:"tenantName"`
		TenantType string `json:"tenantType"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&conns) != nil {
		fmt.Fprintf(out, "warning: could not list the connected organisations (%d)\n", resp.StatusCode)
		return
	}
	found := false
	fmt.Fprintln(out, "Organisations this grant covers:")
	for _, t := range conns {
		mark := " "
		if t.TenantID == c.TenantID {
			mark, found = "*", true
		}
		fmt.Fprintf(out, " %s %s  %s (%s)\n", mark, t.TenantID, t.TenantName, t.TenantType)
	}
	if !found {
		fmt.Fprintf(out, "warning: tenant_id %s is not among them: set tenant_id to one of the ids above, or connect again and pick that organisation\n", c.TenantID)
	}
}

func exchangeReason(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.ErrorCode != "" {
			return re.ErrorCode
		}
		if re.Response != nil {
			return re.Response.Status
		}
	}
	return "could not reach the token endpoint"
}

func page(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html><title>clinicbridge: Xero</title><p>%s</p>\n", html.EscapeString(msg))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
