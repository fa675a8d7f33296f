package xerofake_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/clinicbridge/clinicbridge/connectors/xero/xerofake"
)

const tenant = "6b9a1a3e-6d0e-4d0b-9a43-0f6d2c5e8a11"

func listen127(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func setup(t *testing.T, opts ...xerofake.Option) (*xerofake.Server, string, *oauth2.Config) {
	t.Helper()
	f := xerofake.New(append([]xerofake.Option{xerofake.WithClient("cid", "csecret"), xerofake.WithTenant(tenant, "Clinic")}, opts...)...)
	srv := listen127(t, f)
	cfg := &oauth2.Config{ClientID: "cid", ClientSecret: "csecret", Endpoint: oauth2.Endpoint{
		TokenURL: srv.URL + xerofake.TokenPath, AuthURL: srv.URL + xerofake.AuthorizePath, AuthStyle: oauth2.AuthStyleInHeader}}
	return f, srv.URL, cfg
}

// testClient has its own connection pool: httptest.Server.Close closes
// http.DefaultTransport's idle connections under parallel tests.
var testClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}

var bg = context.WithValue(context.Background(), oauth2.HTTPClient, testClient)

func refresh(cfg *oauth2.Config, rt string) (*oauth2.Token, error) {
	return cfg.TokenSource(bg, &oauth2.Token{RefreshToken: rt}).Token()
}

func grantErr(t *testing.T, err error) string {
	t.Helper()
	var re *oauth2.RetrieveError
	require.True(t, errors.As(err, &re), "%v", err)
	return re.ErrorCode
}

func TestRefreshRotation(t *testing.T) {
	t.Parallel()
	f, _, cfg := setup(t)
	rt := f.IssueRefreshToken()
	tok, err := refresh(cfg, rt)
	require.NoError(t, err)
	require.NotEqual(t, rt, tok.RefreshToken)
	require.WithinDuration(t, time.Now().Add(30*time.Minute), tok.Expiry, time.Minute)

	_, err = refresh(cfg, rt)
	require.Equal(t, "invalid_grant", grantErr(t, err), "a spent refresh token")
	tok2, err := refresh(cfg, tok.RefreshToken)
	require.NoError(t, err)

	f.Revoke()
	_, err = refresh(cfg, tok2.RefreshToken)
	require.Equal(t, "invalid_grant", grantErr(t, err), "a revoked grant")
	_, err = refresh(cfg, "never-issued")
	require.Equal(t, "invalid_grant", grantErr(t, err))

	bad := *cfg
	bad.ClientSecret = "wrong"
	_, err = refresh(&bad, f.IssueRefreshToken())
	require.Equal(t, "invalid_client", grantErr(t, err))
	require.Equal(t, 2, f.Refreshes())
}

func TestAuthorizationCodeWithPKCE(t *testing.T) {
	t.Parallel()
	f, _, cfg := setup(t)
	cb := listen127(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	cfg.RedirectURL = cb.URL + "/callback"
	cfg.Scopes = []string{"offline_access", "accounting.transactions"}
	verifier := oauth2.GenerateVerifier()
	client := &http.Client{Transport: testClient.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(cfg.AuthCodeURL("st4te", oauth2.S256ChallengeOption(verifier)))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusFound, resp.StatusCode)
	loc, err := url.Parse(resp.Header.Get("Location"))
	require.NoError(t, err)
	require.Equal(t, "st4te", loc.Query().Get("state"))
	code := loc.Query().Get("code")

	_, err = cfg.Exchange(bg, code, oauth2.VerifierOption("not-the-verifier-"+verifier))
	require.Equal(t, "invalid_grant", grantErr(t, err))
	_, err = cfg.Exchange(bg, code, oauth2.VerifierOption(verifier))
	require.Equal(t, "invalid_grant", grantErr(t, err), "a code is single use")

	resp, err = client.Get(cfg.AuthCodeURL("s2", oauth2.S256ChallengeOption(verifier)))
	require.NoError(t, err)
	resp.Body.Close()
	loc, _ = url.Parse(resp.Header.Get("Location"))
	tok, err := cfg.Exchange(bg, loc.Query().Get("code"), oauth2.VerifierOption(verifier))
	require.NoError(t, err)
	require.NotEmpty(t, tok.RefreshToken)

	f.Deny(true)
	resp, err = client.Get(cfg.AuthCodeURL("s3"))
	require.NoError(t, err)
	resp.Body.Close()
	loc, _ = url.Parse(resp.Header.Get("Location"))
	require.Equal(t, "access_denied", loc.Query().Get("error"))
}

type api struct {
	t      *testing.T
	base   string
	access string
}

func (a api) do(method, path, key, body string, hdr ...string) (int, http.Header, map[string]any) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+xerofake.APIPrefix+path, strings.NewReader(body))
	require.NoError(a.t, err)
	req.Header.Set("Authorization", "Bearer "+a.access)
	req.Header.Set("xero-tenant-id", tenant)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := testClient.Do(req)
	require.NoError(a.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, resp.Header, out
}

func connected(t *testing.T, opts ...xerofake.Option) (*xerofake.Server, api) {
	t.Helper()
	f, base, cfg := setup(t, opts...)
	tok, err := refresh(cfg, f.IssueRefreshToken())
	require.NoError(t, err)
	return f, api{t: t, base: base, access: tok.AccessToken}
}

func TestPaymentsAndIdempotency(t *testing.T) {
	t.Parallel()
	f, a := connected(t)
	inv := f.SeedInvoice(tenant, "Jane Example", 100)
	pay := func(amount string) string {
		return `{"Payments":[{"Invoice":{"InvoiceID":"` + inv + `"},"Account":{"Code":"090"},"Amount":` + amount + `,"Date":"2026-11-02"}]}`
	}
	body := pay("60")
	status, h, out := a.do(http.MethodPut, "/Payments", "k1", body)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "OK", out["Status"])
	require.Equal(t, "59", h.Get("X-MinLimit-Remaining"))
	id := out["Payments"].([]any)[0].(map[string]any)["PaymentID"]

	status, _, out = a.do(http.MethodPut, "/Payments", "k1", body)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, id, out["Payments"].([]any)[0].(map[string]any)["PaymentID"], "replayed")
	require.Len(t, f.Payments(tenant), 1)

	status, _, _ = a.do(http.MethodPut, "/Payments", "k1", pay("61"))
	require.Equal(t, http.StatusBadRequest, status, "same key, different request")

	// Over the amount due: Xero's validation shape, element echoed.
	status, _, out = a.do(http.MethodPut, "/Payments", "k2", pay("50"))
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "ValidationException", out["Type"])
	el := out["Elements"].([]any)[0].(map[string]any)
	require.Equal(t, 50.0, el["Amount"])
	require.Equal(t, "Payment amount exceeds the amount outstanding on this document", el["ValidationErrors"].([]any)[0].(map[string]any)["Message"])

	// summarizeErrors=false: 200 with per-element errors.
	status, _, out = a.do(http.MethodPut, "/Payments?summarizeErrors=false", "", `{"Payments":[{"Invoice":{"InvoiceID":"`+inv+`"},"Account":{"Code":"090"},"Amount":40},{"Amount":-1}]}`)
	require.Equal(t, http.StatusOK, status)
	pays := out["Payments"].([]any)
	require.Equal(t, "OK", pays[0].(map[string]any)["StatusAttributeString"])
	require.Equal(t, true, pays[1].(map[string]any)["HasValidationErrors"])
	require.Equal(t, "PAID", f.Invoices(tenant)[0]["Status"])
}

func TestAuthAndLimits(t *testing.T) {
	t.Parallel()
	f, a := connected(t, xerofake.WithRateLimit(2, time.Minute), xerofake.WithDayLimit(3))
	status, _, out := a.do(http.MethodGet, "/Accounts", "", "", "xero-tenant-id", "someone-else")
	require.Equal(t, http.StatusForbidden, status)
	require.Equal(t, "AuthorizationUnsuccessful", out["Detail"])
	bad := a
	bad.access = "nope"
	status, _, _ = bad.do(http.MethodGet, "/Accounts", "", "")
	require.Equal(t, http.StatusUnauthorized, status)

	for i := 0; i < 2; i++ {
		status, _, _ = a.do(http.MethodGet, "/Accounts", "", "")
		require.Equal(t, http.StatusOK, status)
	}
	status, h, _ := a.do(http.MethodGet, "/Accounts", "", "")
	require.Equal(t, http.StatusTooManyRequests, status)
	require.Equal(t, "minute", h.Get("X-Rate-Limit-Problem"))
	require.Equal(t, "60", h.Get("Retry-After"))
	require.Equal(t, 2, f.MaxCallsInWindow(tenant))
	require.Equal(t, 1, f.RateLimited(tenant))

	status, _, _ = a.do(http.MethodGet, "/Nope", "", "")
	require.Equal(t, http.StatusTooManyRequests, status)
}

func TestAccessTokenExpires(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	_, a := connected(t, xerofake.WithClock(clock), xerofake.WithAccessTokenTTL(time.Minute))
	status, _, _ := a.do(http.MethodGet, "/Contacts", "", "")
	require.Equal(t, http.StatusOK, status)
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	status, _, out := a.do(http.MethodGet, "/Contacts", "", "")
	require.Equal(t, http.StatusUnauthorized, status)
	require.Contains(t, out["Detail"], "TokenExpired")
}
