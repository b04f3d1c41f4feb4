package pool

import "sync/atomic"

// Token is the ACL token sent with every Nomad API call the pool core makes.
// It is a value read by each call, not part of the client: Set swaps it for
// every call that starts afterwards, so a rotated token needs no new client,
// Manager or connection. (api.Client.SetSecretID is not safe while calls are
// in flight.) A nil *Token, or an empty one, sends the client's own SecretID
// (NOMAD_TOKEN).
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
