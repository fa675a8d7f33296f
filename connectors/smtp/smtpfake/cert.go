package smtpfake

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"sync"
	"time"
)

type generated struct {
	cert tls.Certificate
	pem  []byte
}

// selfSigned is made once per process: a P-256 key and a certificate for
// 127.0.0.1, ::1 and localhost that is its own CA.
var selfSigned = sync.OnceValues(func() (generated, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return generated{}, fmt.Errorf("smtpfake: generating a key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return generated{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "smtpfake self-signed", Organization: []string{"clinicbridge tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return generated{}, fmt.Errorf("smtpfake: creating the certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return generated{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return generated{}, err
	}
	return generated{cert: cert, pem: certPEM}, nil
})

// Certificate is the fake's self-signed server certificate (the same for
// every Server in the process).
func Certificate() (tls.Certificate, error) {
	g, err := selfSigned()
	return g.cert, err
}

// CertPEM is the self-signed certificate in PEM: trust it as a CA
// (tls_ca_file) to talk to the fake over TLS.
func CertPEM() ([]byte, error) {
	g, err := selfSigned()
	return append([]byte(nil), g.pem...), err
}
