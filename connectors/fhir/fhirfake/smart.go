package fhirfake

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// TokenPath is where the SMART token endpoint is served.
const TokenPath = "/auth/token"

// clientAssertionType is RFC 7523's JWT bearer client assertion type.
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Client is a SMART Backend Services client registered with the token
// endpoint: its id and public key (RSA for RS384, P-384 EC for ES384).
type Client struct {
	ID  string
	Key crypto.PublicKey
	// KeyID, when set, must equal the assertion's kid.
	KeyID string
}

// Assertion is a client assertion the token endpoint accepted.
type Assertion struct {
	Header map[string]any
	Claims map[string]any
}

// RegisterClient registers a backend services client. From then on the
// FHIR API requires a bearer token (one issued here, or a WithBearer one).
func (s *Server) RegisterClient(c Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[c.ID] = c
}

// TokenURL is the token endpoint ([base]/auth/token).
func (s *Server) TokenURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.baseOrDefault() + TokenPath
}

// Assertions returns the accepted client assertions, one per token issued.
func (s *Server) Assertions() []Assertion {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Assertion(nil), s.assertions...)
}

// TokensIssued is the number of access tokens issued.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.assertions)
}

// RevokeTokens forgets every issued token, as a server restart or
// revocation would; the next API call with one gets 401.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.issued = map[string]time.Time{}
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	b, _ := json.Marshal(map[string]string{"error": code, "error_description": desc})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// token is the SMART Backend Services token endpoint: client_credentials
// with a JWT client assertion, checked as the SMART specification says
// (alg RS384/ES384, kid, iss = sub = client id, aud = this endpoint, exp at
// most five minutes ahead, jti not reused, signature by the registered key).
// Called with mu held.
func (s *Server) token(w http.ResponseWriter, r *http.Request, body []byte, base string) {
	if r.Method != http.MethodPost {
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "POST only")
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the body is not form-encoded")
		return
	}
	switch {
	case form.Get("grant_type") != "client_credentials":
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be client_credentials")
		return
	case form.Get("client_assertion_type") != clientAssertionType:
		oauthError(w, http.StatusBadRequest, "invalid_request", "client_assertion_type must be "+clientAssertionType)
		return
	case form.Get("scope") == "":
		oauthError(w, http.StatusBadRequest, "invalid_scope", "scope is required")
		return
	}
	hdr, claims, ok := s.checkAssertion(w, form.Get("client_assertion"), base+TokenPath)
	if !ok {
		return
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	s.issued[tok] = s.now().Add(s.tokenTTL)
	s.assertions = append(s.assertions, Assertion{Header: hdr, Claims: claims})
	out, _ := json.Marshal(map[string]any{
		"access_token": tok, "token_type": "bearer",
		"expires_in": int(s.tokenTTL / time.Second), "scope": form.Get("scope"),
	})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

func (s *Server) checkAssertion(w http.ResponseWriter, jwt, aud string) (map[string]any, map[string]any, bool) {
	bad := func(desc string) (map[string]any, map[string]any, bool) {
		oauthError(w, http.StatusBadRequest, "invalid_client", desc)
		return nil, nil, false
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return bad("client_assertion is not a JWS")
	}
	var hdr, claims map[string]any
	for i, dst := range []*map[string]any{&hdr, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(raw, dst) != nil {
			return bad("client_assertion is not a JWS")
		}
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return bad("client_assertion signature is not base64url")
	}
	alg, _ := hdr["alg"].(string)
	kid, _ := hdr["kid"].(string)
	typ, _ := hdr["typ"].(string)
	iss, _ := claims["iss"].(string)
	sub, _ := claims["sub"].(string)
	jti, _ := claims["jti"].(string)
	exp, okExp := claims["exp"].(float64)
	client, known := s.clients[iss]
	now := s.now()
	switch {
	case alg != "RS384" && alg != "ES384":
		return bad("alg must be RS384 or ES384")
	case kid == "":
		return bad("kid is required")
	case typ != "JWT":
		return bad("typ must be JWT")
	case !known:
		return bad("unknown client")
	case client.KeyID != "" && client.KeyID != kid:
		return bad("unknown kid")
	case sub != iss:
		return bad("sub must equal iss")
	case !audIs(claims["aud"], aud):
		return bad("aud must be the token endpoint URL")
	case !okExp || time.Unix(int64(exp), 0).Before(now):
		return bad("the assertion has expired")
	case time.Unix(int64(exp), 0).After(now.Add(5*time.Minute + 10*time.Second)):
		return bad("exp is more than five minutes ahead")
	case jti == "":
		return bad("jti is required")
	case s.jtis[jti]:
		return bad("jti was used before")
	}
	sum := sha512.Sum384([]byte(parts[0] + "." + parts[1]))
	valid := false
	switch k := client.Key.(type) {
	case *rsa.PublicKey:
		valid = alg == "RS384" && rsa.VerifyPKCS1v15(k, crypto.SHA384, sum[:], sig) == nil
	case *ecdsa.PublicKey:
		if alg == "ES384" && len(sig) == 96 {
			r, ss := new(big.Int).SetBytes(sig[:48]), new(big.Int).SetBytes(sig[48:])
			valid = ecdsa.Verify(k, sum[:], r, ss)
		}
	}
	if !valid {
		return bad("signature verification failed")
	}
	s.jtis[jti] = true
	return hdr, claims, true
}

func audIs(v any, want string) bool {
	switch a := v.(type) {
	case string:
		return a == want
	case []any:
		for _, x := range a {
			if x == want {
				return true
			}
		}
	}
	return false
}
