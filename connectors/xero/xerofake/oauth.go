package xerofake

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"time"
)

func oauthError(w http.ResponseWriter, code string) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": code})
}

// authorize is the consent screen, always approved (or denied after
// Deny(true)): it redirects straight back with a code.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme == "" || redirect.Host == "" {
		http.Error(w, "Invalid redirect_uri", http.StatusBadRequest)
		return
	}
	if s.clientID != "" && q.Get("client_id") != s.clientID {
		http.Error(w, "unauthorized_client", http.StatusBadRequest)
		return
	}
	back := redirect.Query()
	back.Set("state", q.Get("state"))
	switch {
	case s.deny:
		back.Set("error", "access_denied")
	case q.Get("response_type") != "code":
		back.Set("error", "unsupported_response_type")
	case !hasScope(q.Get("scope"), "offline_access"):
		back.Set("error", "invalid_scope")
	default:
		if m := q.Get("code_challenge_method"); q.Get("code_challenge") != "" && m != "S256" {
			back.Set("error", "invalid_request")
			break
		}
		code := randomToken()
		s.codes[code] = &authCode{redirect: q.Get("redirect_uri"), challenge: q.Get("code_challenge"), expires: s.now().Add(5 * time.Minute)}
		back.Set("code", code)
		back.Set("scope", q.Get("scope"))
		back.Set("session_state", randomToken())
	}
	redirect.RawQuery = back.Encode()
	s.logf("GET %s -> 302", AuthorizePath)
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

func hasScope(scopes, want string) bool {
	for _, sc := range strings.Fields(scopes) {
		if sc == want {
			return true
		}
	}
	return false
}

// token is the token endpoint: authorization_code and refresh_token grants,
// client authentication by HTTP Basic or form fields. Each refresh rotates:
// the refresh token used is spent (reuse -> invalid_grant) and the grant's
// older access tokens stop working.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		oauthError(w, "invalid_request")
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, "invalid_request")
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	grantType := r.PostForm.Get("grant_type")
	status := "ok"
	defer func() { s.logf("POST %s grant_type=%s -> %s", TokenPath, grantType, status) }()
	if id == "" || (s.clientID != "" && (id != s.clientID || secret != s.clientSecret)) {
		status = "invalid_client"
		oauthError(w, "invalid_client")
		return
	}
	var g *grant
	switch grantType {
	case "authorization_code":
		c := s.codes[r.PostForm.Get("code")]
		switch {
		case c == nil || c.used || s.now().After(c.expires):
			status = "invalid_grant"
		case c.redirect != r.PostForm.Get("redirect_uri"):
			status = "invalid_grant"
		case c.challenge != "" && pkceS256(r.PostForm.Get("code_verifier")) != c.challenge:
			status = "invalid_grant"
		}
		if c != nil {
			c.used = true
		}
		if status != "ok" {
			oauthError(w, status)
			return
		}
		g = &grant{all: s.openTenants, tenants: map[string]bool{}}
		for id := range s.orgs {
			g.tenants[id] = true
		}
		s.grants = append(s.grants, g)
	case "refresh_token":
		rt := r.PostForm.Get("refresh_token")
		old := s.refresh[rt]
		if old == nil && s.anyRefresh && rt != "" {
			old = &refreshToken{g: &grant{all: true}}
			s.grants = append(s.grants, old.g)
			s.refresh[rt] = old
		}
		if old == nil || old.used || old.g.revoked {
			status = "invalid_grant"
			oauthError(w, status)
			return
		}
		old.used = true
		g = old.g
		for _, a := range s.access {
			if a.g == g {
				a.stale = true
			}
		}
		s.refreshN++
	default:
		status = "unsupported_grant_type"
		oauthError(w, status)
		return
	}
	at, rt := randomToken(), randomToken()
	s.access[at] = &accessToken{g: g, expires: s.now().Add(s.accessTTL)}
	s.refresh[rt] = &refreshToken{g: g}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token":  at,
		"expires_in":    int(s.accessTTL / time.Second),
		"token_type":    "Bearer",
		"refresh_token": rt,
		"scope":         "offline_access accounting.transactions accounting.contacts",
	})
}

func pkceS256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// connections lists the organisations the access token's grant covers.
func (s *Server) connections(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	auth := s.bearerCheck(r)
	if auth.status != 0 {
		s.logf("GET %s -> %d", ConnectionsPath, auth.status)
		writeJSON(w, auth.status, auth.body)
		return
	}
	g := auth.grant
	out := []map[string]any{}
	for _, id := range s.orgOrder {
		if g.all || g.tenants[id] {
			out = append(out, map[string]any{
				"id": newID(), "authEventId": newID(), "tenantId": id, "tenantType": "ORGANISATION",
				"tenantName": s.orgs[id].name, "createdDateUtc": s.now().UTC().Format(time.RFC3339), "updatedDateUtc": s.now().UTC().Format(time.RFC3339),
			})
		}
	}
	s.logf("GET %s -> 200", ConnectionsPath)
	writeJSON(w, http.StatusOK, out)
}
