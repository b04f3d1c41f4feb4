package nomadapi

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
)

// Token is the ACL token sent with Nomad API calls, set by each call as its
// auth token. It is a value read by each call, not part of the client: Set
// swaps it for every call that starts afterwards, so a rotated token needs
// no new client, pool Manager or connection. (api.Client.SetSecretID is not
// safe while calls are in flight.) A nil *Token, or an empty one, sends the
// client's own SecretID (NOMAD_TOKEN).
type Token struct{ v atomic.Pointer[string] }

// NewToken returns a Token holding secret.
func NewToken(secret string) *Token {
	t := &Token{}
	t.Set(secret)
	return t
}

// Set makes secret the token of every call that starts from now on.
func (t *Token) Set(secret string) { t.v.Store(&secret) }

// Secret is the token to send now; "" means the client's own.
func (t *Token) Secret() string {
	if t == nil {
		return ""
	}
	if s := t.v.Load(); s != nil {
		return *s
	}
	return ""
}

const maxTokenFile = 4096

// ReadTokenFile reads a token file (token_file); the token itself never
// reaches an error or a log.
func ReadTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// A token is a few dozen bytes; a bound keeps a wrong path such as /dev/zero
	// from hanging the plugin.
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxTokenFile {
		return "", fmt.Errorf("%s is larger than %d bytes: not a token file", path, maxTokenFile)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return tok, nil
}
