package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// TLSFiles names the webhook listener's certificate, key and, for mutual
// TLS, the CA that client certificates must chain to.
type TLSFiles struct {
	CertFile, KeyFile, ClientCAFile string
}

// TLSConfig returns a config for the webhook listener: TLS 1.2 at least,
// the certificate re-read when its files change (renewals apply without a
// restart), and client certificates required when a client CA is given.
func TLSConfig(f TLSFiles) (*tls.Config, error) {
	r := &certReloader{cert: f.CertFile, key: f.KeyFile}
	if _, err := r.get(nil); err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.get}
	if f.ClientCAFile != "" {
		pem, err := os.ReadFile(f.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("server.tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("server.tls.client_ca_file: no PEM certificate in it")
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// certReloader serves the certificate from disk, checking the files'
// modification times at most once a second.
type certReloader struct {
	cert, key string

	mu      sync.Mutex
	current *tls.Certificate
	mtime   time.Time
	checked time.Time
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.current != nil && time.Since(r.checked) < time.Second {
		return r.current, nil
	}
	r.checked = time.Now()
	mtime := latestMtime(r.cert, r.key)
	if r.current != nil && !mtime.After(r.mtime) {
		return r.current, nil
	}
	c, err := tls.LoadX509KeyPair(r.cert, r.key)
	if err != nil {
		if r.current != nil {
			// A half-written renewal: keep serving the old pair until both files are whole.
			return r.current, nil
		}
		return nil, fmt.Errorf("server.tls: %w", err)
	}
	r.current, r.mtime = &c, mtime
	return r.current, nil
}

func latestMtime(paths ...string) time.Time {
	var t time.Time
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.ModTime().After(t) {
			t = fi.ModTime()
		}
	}
	return t
}
