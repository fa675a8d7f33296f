package fhir

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// ClientAssertionType is the client_assertion_type of a JWT client assertion (RFC 7523).
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionLifetime is how long a client assertion is valid; SMART allows
// at most five minutes.
const assertionLifetime = 4 * time.Minute

// tokenSkew is how long before its expiry a cached access token is renewed.
const tokenSkew = 60 * time.Second

// authorizer sets the Authorization header on requests to the FHIR server.
type authorizer interface {
	// header returns the Authorization value ("" for none).
	header(ctx context.Context) (string, error)
	// invalidate drops a cached token the server refused.
	invalidate(tok string)
}

type noAuth struct{}

func (noAuth) header(context.Context) (string, error) { return "", nil }
func (noAuth) invalidate(string)                      {}

type bearerAuth string

func (b bearerAuth) header(context.Context) (string, error) { return "Bearer " + string(b), nil }
func (bearerAuth) invalidate(string)                        {}

// Signer signs SMART client assertions with a private key.
type Signer struct {
	alg string // RS384 | ES384
	kid string
	key crypto.Signer
}

// NewSigner returns a signer for key: RS384 for an RSA key of at least 2048
// bits, ES384 for a P-384 EC key. An empty kid means the key's RFC 7638
// JWK thumbprint.
func NewSigner(key crypto.Signer, kid string) (*Signer, error) {
	s := &Signer{key: key, kid: kid}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, errors.New("the RSA key is shorter than 2048 bits")
		}
		s.alg = "RS384"
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P384() {
			return nil, errors.New("the EC key is not on curve P-384 (SMART allows ES384 only)")
		}
		s.alg = "ES384"
	default:
		return nil, errors.New("the key is neither RSA nor EC")
	}
	if s.kid == "" {
		s.kid = Thumbprint(key.Public())
	}
	return s, nil
}

// Alg is the JWS algorithm: RS384 or ES384.
func (s *Signer) Alg() string { return s.alg }

// KeyID is the kid the signer puts in the JWT header.
func (s *Signer) KeyID() string { return s.kid }

// LoadSigner reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
func LoadSigner(path, kid string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the private key file failed: %w", err)
	}
	key, err := ParsePrivateKey(b)
	if err != nil {
		return nil, err
	}
	return NewSigner(key, kid)
}

// ParsePrivateKey decodes the first private key PEM block in b.
func ParsePrivateKey(b []byte) (crypto.Signer, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM private key found")
		}
		var (
			k   any
			err error
		)
		switch blk.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, errors.New("the PEM private key could not be parsed")
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("unsupported private key type")
		}
		return s, nil
	}
}

// Thumbprint is the RFC 7638 JWK SHA-256 thumbprint of an RSA or EC public key.
func Thumbprint(pub crypto.PublicKey) string {
	b64 := base64.RawURLEncoding.EncodeToString
	var canon string
	switch k := pub.(type) {
	case *rsa.PublicKey:
		canon = fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`, b64(big.NewInt(int64(k.E)).Bytes()), b64(k.N.Bytes()))
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		canon = fmt.Sprintf(`{"crv":"%s","kty":"EC","x":"%s","y":"%s"}`, k.Curve.Params().Name,
			b64(k.X.FillBytes(make([]byte, size))), b64(k.Y.FillBytes(make([]byte, size))))
	default:
		return ""
	}
	sum := sha256.Sum256([]byte(canon))
	return b64(sum[:])
}

// Assertion builds and signs a client assertion JWT: iss = sub = clientID,
// aud = tokenURL, exp = now + 4 min, a random jti.
func (s *Signer) Assertion(clientID, tokenURL string, now time.Time) (string, error) {
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	hdr, _ := json.Marshal(map[string]string{"alg": s.alg, "kid": s.kid, "typ": "JWT"})
	claims, _ := json.Marshal(map[string]any{
		"iss": clientID, "sub": clientID, "aud": tokenURL,
		"exp": now.Add(assertionLifetime).Unix(), "iat": now.Unix(), "jti": hex.EncodeToString(jti),
	})
	b64 := base64.RawURLEncoding.EncodeToString
	input := b64(hdr) + "." + b64(claims)
	sum := sha512.Sum384([]byte(input))
	var sig []byte
	var err error
	switch k := s.key.(type) {
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA384, sum[:])
	case *ecdsa.PrivateKey:
		var r, ss *big.Int
		r, ss, err = ecdsa.Sign(rand.Reader, k, sum[:])
		if err == nil {
			sig = make([]byte, 96) // JWS ES384: r || s, 48 bytes each
			r.FillBytes(sig[:48])
			ss.FillBytes(sig[48:])
		}
	}
	if err != nil {
		return "", fmt.Errorf("signing the client assertion failed: %w", err)
	}
	return input + "." + b64(sig), nil
}

// smartAuth fetches and caches access tokens with client_credentials and a
// JWT client assertion (SMART Backend Services).
type smartAuth struct {
	tokenURL, clientID, scope string
	signer                    *Signer
	client                    *http.Client
	now                       func() time.Time

	mu      sync.Mutex
	token   string
	expires time.Time
}

func (a *smartAuth) header(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token != "" && a.now().Before(a.expires) {
		return "Bearer " + a.token, nil
	}
	tok, ttl, err := a.fetch(ctx)
	if err != nil {
		return "", err
	}
	a.token = tok
	// Renew a minute early, or half-way through a token shorter than two minutes.
	a.expires = a.now().Add(ttl - min(tokenSkew, ttl/2))
	return "Bearer " + tok, nil
}

func (a *smartAuth) invalidate(tok string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if "Bearer "+a.token == tok {
		a.token = ""
	}
}

// fetch asks the token endpoint for a token. Errors are classified
// *connectors.Error values that carry the OAuth error code, never the
// assertion or a token.
func (a *smartAuth) fetch(ctx context.Context) (string, time.Duration, error) {
	assertion, err := a.signer.Assertion(a.clientID, a.tokenURL, a.now())
	if err != nil {
		return "", 0, &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: err.Error()}
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"scope":                 {a.scope},
		"client_assertion_type": {ClientAssertionType},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: "token_url is not valid"}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		// No token was issued, so nothing was acted on: transient.
		return "", 0, &connectors.Error{Class: connectors.Transient, Provider: provider, Msg: "token request failed: " + connectors.TransportReason(err)}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var body struct {
		AccessToken string          `json:"access_token"`
		TokenType   string          `json:"token_type"`
		ExpiresIn   json.Number     `json:"expires_in"`
		Error       string          `json:"error"`
		Description json.RawMessage `json:"error_description"`
	}
	_ = json.Unmarshal(b, &body)
	if resp.StatusCode != http.StatusOK || body.AccessToken == "" {
		e := connectors.HTTPError(provider, resp, oauthCode(body.Error), "token request refused")
		switch {
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		case resp.StatusCode == http.StatusOK:
			e.Class, e.Msg = connectors.Transient, "token response without access_token"
		default:
			// invalid_client, invalid_grant, invalid_scope, unauthorized_client:
			// the registration or the key is wrong; retrying will not help.
			e.Class = connectors.Auth
		}
		return "", 0, e
	}
	if body.TokenType != "" && !strings.EqualFold(body.TokenType, "bearer") {
		return "", 0, &connectors.Error{Class: connectors.Auth, Provider: provider, Msg: "token endpoint issued a non-bearer token"}
	}
	ttl := 5 * time.Minute // SMART's recommended lifetime, when expires_in is absent
	if n, err := body.ExpiresIn.Int64(); err == nil && n > 0 {
		ttl = time.Duration(n) * time.Second
	}
	return body.AccessToken, ttl, nil
}

// oauthCode keeps a well-formed OAuth error code (RFC 6749 error codes are
// short ASCII words) and drops anything else.
func oauthCode(s string) string {
	if len(s) > 40 {
		return ""
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return ""
		}
	}
	return s
}

func newAuthorizer(a *Auth, dir string, client *http.Client, now func() time.Time) (authorizer, error) {
	switch {
	case a == nil:
		return noAuth{}, nil
	case a.Bearer != "":
		return bearerAuth(a.Bearer), nil
	default:
		cc := a.ClientCredentials
		path := cc.PrivateKeyFile
		if !filepath.IsAbs(path) && dir != "" {
			path = filepath.Join(dir, path)
		}
		s, err := LoadSigner(path, cc.KeyID)
		if err != nil {
			return nil, fmt.Errorf("auth.client_credentials.private_key_file: %w", err)
		}
		scope := cc.Scope
		if scope == "" {
			scope = DefaultScope
		}
		return &smartAuth{tokenURL: cc.TokenURL, clientID: cc.ClientID, scope: scope, signer: s, client: client, now: now}, nil
	}
}
