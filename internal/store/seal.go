package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Keyring seals payloads and connector state at rest with AES-256-GCM. The
// first key seals; every key opens, so keys can rotate: add the new key in
// front, run `clinicbridge rekey`, then drop the old one. The associated data
// binds each value to its row, so a sealed payload copied onto another row
// does not open.
type Keyring struct {
	keys []sealKey // newest first
}

type sealKey struct {
	id   [4]byte // first bytes of SHA-256(key): finds the key, reveals nothing useful
	aead cipher.AEAD
}

// sealed values start with these two bytes; JSON never does, so rows written
// before a key was configured stay readable.
var sealMagic = []byte{0xCB, 0x01}

const sealHeader = 2 + 4 + 12 // magic, key id, nonce

// NewKeyring parses base64 keys of 32 bytes each, newest first.
func NewKeyring(b64 []string) (*Keyring, error) {
	k := &Keyring{}
	for i, s := range b64 {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("store.encryption_key[%d]: want 32 bytes in base64 (openssl rand -base64 32)", i)
		}
		block, _ := aes.NewCipher(raw)
		aead, _ := cipher.NewGCM(block)
		sum := sha256.Sum256(raw)
		var id [4]byte
		copy(id[:], sum[:4])
		k.keys = append(k.keys, sealKey{id: id, aead: aead})
	}
	if len(k.keys) == 0 {
		return nil, nil
	}
	return k, nil
}

// Seal encrypts plain under the newest key, bound to ad. A nil keyring
// returns plain as it is.
func (k *Keyring) Seal(plain, ad []byte) []byte {
	if k == nil {
		return plain
	}
	key := k.keys[0]
	out := make([]byte, sealHeader, sealHeader+len(plain)+key.aead.Overhead())
	copy(out, sealMagic)
	copy(out[2:], key.id[:])
	_, _ = rand.Read(out[6:sealHeader])
	return key.aead.Seal(out, out[6:sealHeader], plain, ad)
}

// ErrSealed is returned for a sealed value when no configured key opens it.
var ErrSealed = errors.New("value is encrypted with a key that is not configured (store.encryption_key)")

// ErrTampered is returned when a sealed value fails authentication.
var ErrTampered = errors.New("decrypting a stored value failed (tampered, or moved to another row)")

// Open decrypts a sealed value; an unsealed one is returned as it is.
func (k *Keyring) Open(data, ad []byte) ([]byte, error) {
	if !IsSealed(data) {
		return data, nil
	}
	if k != nil && len(data) >= sealHeader {
		for _, key := range k.keys {
			if bytes.Equal(key.id[:], data[2:6]) {
				plain, err := key.aead.Open(nil, data[6:sealHeader], data[sealHeader:], ad)
				if err != nil {
					return nil, ErrTampered
				}
				return plain, nil
			}
		}
	}
	return nil, ErrSealed
}

// Current reports whether data is sealed with the newest key (rekey skips it).
func (k *Keyring) Current(data []byte) bool {
	if k == nil {
		return !IsSealed(data)
	}
	return IsSealed(data) && len(data) >= sealHeader && bytes.Equal(data[2:6], k.keys[0].id[:])
}

// IsSealed reports whether data was written sealed.
func IsSealed(data []byte) bool { return bytes.HasPrefix(data, sealMagic) }

func eventAD(source, id string) []byte { return []byte("cb_events\x00" + source + "\x00" + id) }

func kvAD(scope, key string) []byte { return []byte("cb_kv\x00" + scope + "\x00" + key) }
