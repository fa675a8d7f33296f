package xero

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"golang.org/x/oauth2"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// TokenStateKey is the connector-state key holding the newest OAuth token
// (access + refresh + expiry) as JSON. The sink and `xero connect` share it.
const TokenStateKey = "oauth2_token"

// reconnectMsg is what an operator reads when the grant is gone.
const reconnectMsg = "Xero refused the refresh token: reconnect Xero with `clinicbridge xero connect -c CONFIG --connector NAME`"

// refreshMargin: an access token this close to its expiry is refreshed first.
const refreshMargin = time.Minute

type storedToken struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	TokenType    string    `json:"token_type,omitempty"`
	Expiry       time.Time `json:"expiry,omitempty"`
}

// StoreToken saves tok as the connector's newest token, replacing whatever
// was stored: the sink reads it on its next refresh or after it paused on
// invalid_grant. tok must carry a refresh token (scope offline_access).
func StoreToken(ctx context.Context, state connectors.State, tok *oauth2.Token) error {
	if state == nil {
		return errors.New("xero: no connector state to store the token in")
	}
	if tok == nil || tok.RefreshToken == "" {
		return errors.New("xero: the token has no refresh token (was offline_access granted?)")
	}
	b, err := json.Marshal(storedToken{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: tok.TokenType, Expiry: tok.Expiry})
	if err != nil {
		return err
	}
	return state.Put(ctx, TokenStateKey, b)
}

func loadToken(ctx context.Context, state connectors.State) (*oauth2.Token, error) {
	b, ok, err := state.Get(ctx, TokenStateKey)
	if err != nil || !ok {
		return nil, err
	}
	var st storedToken
	if err := json.Unmarshal(b, &st); err != nil || st.RefreshToken == "" {
		return nil, errors.New("the stored token is not valid JSON with a refresh token")
	}
	return &oauth2.Token{AccessToken: st.AccessToken, RefreshToken: st.RefreshToken, TokenType: st.TokenType, Expiry: st.Expiry}, nil
}

// tokens hands out access tokens, refreshing (and rotating the refresh
// token) when needed. One refresh runs at a time. A rotated token is saved
// to State before its access token is used: Xero invalidates the old
// refresh token as it issues the new one, so a token that is used but not
// saved would be lost with the process.
type tokens struct {
	cfg    *oauth2.Config
	state  connectors.State
	seed   string
	client *http.Client
	now    func() time.Time

	lock    chan struct{} // held across a refresh
	cur     *oauth2.Token // newest known; nil until first use
	unsaved bool          // cur was rotated but saving it failed
	dead    string        // a refresh token the endpoint refused (invalid_grant)
}

func newTokens(cfg *oauth2.Config, state connectors.State, seed string, client *http.Client, now func() time.Time) *tokens {
	return &tokens{cfg: cfg, state: state, seed: seed, client: client, now: now, lock: make(chan struct{}, 1)}
}

func (t *tokens) usable(tok *oauth2.Token) bool {
	return tok != nil && tok.AccessToken != "" && (tok.Expiry.IsZero() || t.now().Add(refreshMargin).Before(tok.Expiry))
}

// access returns an access token to call the API with.
func (t *tokens) access(ctx context.Context) (string, error) {
	select {
	case t.lock <- struct{}{}:
	case <-ctx.Done():
		return "", &connectors.Error{Class: connectors.Transient, Provider: provider, Msg: "cancelled while another call refreshed the token", Err: ctx.Err()}
	}
	defer func() { <-t.lock }()
	if t.state == nil {
		return "", &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: "the connector has no state store for its OAuth token"}
	}
	if t.unsaved {
		if err := t.save(ctx, t.cur); err != nil {
			return "", err
		}
		t.unsaved = false
	}
	if t.usable(t.cur) {
		return t.cur.AccessToken, nil
	}
	for attempt := 0; ; attempt++ {
		// The store may hold a newer token than this process knows: one
		// `xero connect` wrote, or another instance rotated.
		stored, err := loadToken(ctx, t.state)
		if err != nil {
			return "", &connectors.Error{Class: connectors.Transient, Provider: provider, Msg: "reading the stored token failed: " + err.Error()}
		}
		if stored != nil && (t.cur == nil || stored.RefreshToken != t.cur.RefreshToken) {
			t.cur = stored
		}
		if t.cur == nil {
			if t.seed == "" {
				return "", &connectors.Error{Class: connectors.Paused, Provider: provider, Code: "no_token",
					Msg: "no Xero token yet: connect Xero with `clinicbridge xero connect -c CONFIG --connector NAME` (or set refresh_token)"}
			}
			t.cur = &oauth2.Token{RefreshToken: t.seed}
		}
		if t.usable(t.cur) {
			return t.cur.AccessToken, nil
		}
		rt := t.cur.RefreshToken
		if rt == t.dead {
			return "", pausedErr()
		}
		tok, err := t.cfg.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, t.client), &oauth2.Token{RefreshToken: rt}).Token()
		if err != nil {
			var re *oauth2.RetrieveError
			if errors.As(err, &re) && re.ErrorCode == "invalid_grant" {
				if attempt == 0 {
					// Someone may have rotated it under us: look again once.
					if again, lerr := loadToken(ctx, t.state); lerr == nil && again != nil && again.RefreshToken != rt {
						continue
					}
				}
				t.dead = rt
				return "", pausedErr()
			}
			return "", refreshError(err)
		}
		if tok.ExpiresIn > 0 {
			// Expiry by the connector's clock (oauth2 uses the wall clock).
			tok.Expiry = t.now().Add(time.Duration(tok.ExpiresIn) * time.Second)
		}
		t.cur = tok
		if err := t.save(ctx, tok); err != nil {
			t.unsaved = true
			return "", err
		}
		return tok.AccessToken, nil
	}
}

// expire forgets access after the API refused it, so the next call refreshes.
func (t *tokens) expire(ctx context.Context, access string) {
	select {
	case t.lock <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-t.lock }()
	if t.cur != nil && t.cur.AccessToken == access {
		c := *t.cur
		c.AccessToken, c.Expiry = "", time.Time{}
		t.cur = &c
	}
}

func (t *tokens) save(ctx context.Context, tok *oauth2.Token) error {
	if err := StoreToken(ctx, t.state, tok); err != nil {
		return &connectors.Error{Class: connectors.Transient, Provider: provider,
			Msg: "saving the rotated token failed; it is kept in memory and saved before it is used: " + err.Error()}
	}
	return nil
}

func pausedErr() error {
	return &connectors.Error{Class: connectors.Paused, Provider: provider, Code: "invalid_grant", Msg: reconnectMsg}
}

// refreshError classifies a failed refresh other than invalid_grant. The
// token endpoint's body is left out: it may echo what was sent.
func refreshError(err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return &connectors.Error{Class: connectors.Transient, Provider: provider, Msg: "refreshing the token failed: could not reach the token endpoint"}
	}
	e := &connectors.Error{Provider: provider, Code: re.ErrorCode, Msg: "refreshing the token failed"}
	if re.Response != nil {
		e.HTTPStatus = re.Response.StatusCode
		e.RetryAfter = connectors.ParseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now())
	}
	switch {
	case e.HTTPStatus == http.StatusTooManyRequests:
		e.Class = connectors.RateLimited
	case e.HTTPStatus >= 500 || e.HTTPStatus == 0:
		e.Class = connectors.Transient
	default:
		// invalid_client, unauthorized_client: the app's credentials are wrong.
		e.Class = connectors.Auth
		e.Msg += ": check client_id and client_secret"
	}
	return e
}
