package fhir_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/fhir"
	"github.com/clinicbridge/clinicbridge/connectors/fhir/fhirfake"
)

// writeKey writes key as PKCS#8 PEM into dir and returns the file name.
func writeKey(t *testing.T, dir string, key crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	name := "client.pem"
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	return name
}

func smartConfig(base, tokenURL, keyFile, extra string) string {
	return fmt.Sprintf(`{base_url: "%s", auth: {client_credentials: {token_url: "%s", client_id: clinicbridge-test, private_key_file: %s%s}}, resources: [Patient]}`,
		base, tokenURL, keyFile, extra)
}

// The SMART backend services token is fetched once, reused while valid, and
// refetched after the server revokes it; the assertion carries the claims
// SMART requires.
func TestSMARTClientCredentials(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	for _, tc := range []struct {
		key crypto.Signer
		alg string
	}{{rsaKey, "RS384"}, {ecKey, "ES384"}} {
		t.Run(tc.alg, func(t *testing.T) {
			t.Parallel()
			fake := fhirfake.New()
			base := serve(t, fake)
			fake.SetBaseURL(base)
			fake.RegisterClient(fhirfake.Client{ID: "clinicbridge-test", Key: tc.key.Public()})
			dir := t.TempDir()
			file := writeKey(t, dir, tc.key)
			c := build(t, smartConfig(base, fake.TokenURL(), file, ""), connectors.Env{Dir: dir})

			start := time.Now()
			for i := range 3 {
				_, err := do(t, c, fhir.ActionCreate, asDoc(t, patient(fmt.Sprint("MRN-", i), "Smart")))
				require.NoError(t, err)
			}
			_, events := listAll(t, c, connectors.ListParams{})
			require.Len(t, events, 3)
			require.Equal(t, 1, fake.TokensIssued(), "one token for every call while it is valid")

			as := fake.Assertions()[0]
			require.Equal(t, tc.alg, as.Header["alg"])
			require.Equal(t, "JWT", as.Header["typ"])
			require.Equal(t, fhir.Thumbprint(tc.key.Public()), as.Header["kid"], "kid defaults to the JWK thumbprint")
			require.Equal(t, "clinicbridge-test", as.Claims["iss"])
			require.Equal(t, "clinicbridge-test", as.Claims["sub"])
			require.Equal(t, fake.TokenURL(), as.Claims["aud"])
			require.NotEmpty(t, as.Claims["jti"])
			exp := time.Unix(int64(as.Claims["exp"].(float64)), 0)
			require.True(t, exp.After(start), "exp in the future")
			require.True(t, !exp.After(time.Now().Add(5*time.Minute)), "exp at most five minutes ahead")

			var tokenReq fhirfake.Recorded
			for _, r := range fake.Requests() {
				if r.Path == fhirfake.TokenPath {
					tokenReq = r
				}
			}
			require.Contains(t, string(tokenReq.Body), "grant_type=client_credentials")
			require.Contains(t, string(tokenReq.Body), "scope=system%2F%2A.%2A")

			// A revoked token: the 401 drops it, a new one is fetched and the
			// call succeeds, with a fresh jti.
			fake.RevokeTokens()
			_, err := do(t, c, fhir.ActionCreate, asDoc(t, patient("MRN-after", "Smart")))
			require.NoError(t, err)
			require.Equal(t, 2, fake.TokensIssued())
			require.NotEqual(t, as.Claims["jti"], fake.Assertions()[1].Claims["jti"])
		})
	}
}

// A token that expires is renewed before use.
func TestSMARTTokenExpiry(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	now := time.Now()
	clock := func() time.Time { return now }
	fake := fhirfake.New(fhirfake.WithTokenTTL(10*time.Minute), fhirfake.WithClock(func() time.Time { return clock() }))
	base := serve(t, fake)
	fake.SetBaseURL(base)
	fake.RegisterClient(fhirfake.Client{ID: "clinicbridge-test", Key: key.Public(), KeyID: "k-2026"})
	dir := t.TempDir()
	c := build(t, smartConfig(base, fake.TokenURL(), writeKey(t, dir, key), ", key_id: k-2026, scope: system/Patient.cruds"),
		connectors.Env{Dir: dir, Now: func() time.Time { return clock() }})
	_, err = do(t, c, fhir.ActionCreate, asDoc(t, patient("MRN-1", "Exp")))
	require.NoError(t, err)
	now = now.Add(8 * time.Minute)
	_, err = do(t, c, fhir.ActionCreate, asDoc(t, patient("MRN-2", "Exp")))
	require.NoError(t, err)
	require.Equal(t, 1, fake.TokensIssued(), "still valid with a minute to spare")
	now = now.Add(90 * time.Second)
	_, err = do(t, c, fhir.ActionCreate, asDoc(t, patient("MRN-3", "Exp")))
	require.NoError(t, err)
	require.Equal(t, 2, fake.TokensIssued(), "renewed within a minute of expiry")
	require.Equal(t, "k-2026", fake.Assertions()[1].Header["kid"])
}

// A key the server does not know is an Auth failure; a token endpoint that
// is down is transient.
func TestSMARTFailures(t *testing.T) {
	t.Parallel()
	registered, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	other, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	fake := fhirfake.New()
	base := serve(t, fake)
	fake.SetBaseURL(base)
	fake.RegisterClient(fhirfake.Client{ID: "clinicbridge-test", Key: registered.Public()})
	dir := t.TempDir()
	c := build(t, smartConfig(base, fake.TokenURL(), writeKey(t, dir, other), ""), connectors.Env{Dir: dir})
	_, err = do(t, c, fhir.ActionCreate, asDoc(t, patient("MRN-1", "Key")))
	require.Equal(t, connectors.Auth, connectors.ClassOf(err))
	var ce *connectors.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "invalid_client", ce.Code)
	require.Zero(t, fake.Count("Patient"))

	fake.Fail(fhirfake.Failure{Path: fhirfake.TokenPath, Status: http.StatusServiceUnavailable})
	_, err = do(t, c, fhir.ActionCreate, asDoc(t, patient("MRN-1", "Key")))
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
	connectortest.NoLeak(t, err, "BEGIN")
}

func TestKeyFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	for name, key := range map[string]crypto.Signer{"small.pem": small, "p256.pem": p256} {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	}
	// PKCS#1 and SEC1 encodings load too.
	ec384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	sec1, err := x509.MarshalECPrivateKey(ec384)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sec1.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), 0o600))
	s, err := fhir.LoadSigner(filepath.Join(dir, "sec1.pem"), "")
	require.NoError(t, err)
	require.Equal(t, "ES384", s.Alg())

	for _, f := range []string{"small.pem", "p256.pem", "missing.pem"} {
		var doc = yamlNode(t, smartConfig("http://127.0.0.1:1", "http://127.0.0.1:1/token", f, ""))
		_, err := fhir.Type().Build(doc, connectors.Env{Dir: dir})
		require.ErrorContains(t, err, "private_key_file", f)
	}
}
