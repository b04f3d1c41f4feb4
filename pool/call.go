package pool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
)

// How the pool core calls the Nomad API (its clients come from package
// nomadapi): a deadline for every call, retries of what is safe to repeat,
// and what a refusal means.

// Timeouts and retry pacing for Nomad API calls. Every call gets its own
// deadline even when the caller's context has none.
const (
	callTimeout    = 10 * time.Second
	retryAttempts  = 4
	retryBaseDelay = 50 * time.Millisecond
	retryMaxDelay  = 2 * time.Second
)

// denied adds to a 403 answer which ACL capability the call needs, so the
// operator sees what the plugin's token lacks; other errors pass unchanged.
// The token itself is never part of the message.
func denied(err error, need string) error {
	if err == nil || nomadapi.StatusCode(err) != http.StatusForbidden {
		return err
	}
	return fmt.Errorf("%w: permission denied: the plugin's ACL token needs %s (see example/acl.hcl), or it is missing or unknown (token_file)", err, need)
}

// isNotFound reports whether err is Nomad's 404.
func isNotFound(err error) bool {
	return nomadapi.StatusCode(err) == http.StatusNotFound || errors.Is(err, api.ErrVariablePathNotFound)
}

// retryable reports whether a failed call may be repeated: transport errors,
// timeouts of a single attempt, 5xx and 429. 4xx answers are final.
func retryable(err error) bool {
	if err == nil {
		return false
	}
	switch code := nomadapi.StatusCode(err); {
	case code == http.StatusTooManyRequests, code >= 500:
		return true
	case code != 0:
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true // a per-attempt deadline; the caller's is checked separately
	}
	var nerr net.Error // *url.Error from the HTTP client: refused, reset, EOF
	return errors.As(err, &nerr)
}

// backoff returns the jittered delay before retry attempt n (0-based):
// exponential from base, capped, with "equal jitter" so concurrent callers
// spread out without ever retrying immediately.
func backoff(n int, base, limit time.Duration) time.Duration {
	d := base << min(n, 20)
	if d <= 0 || d > limit {
		d = limit
	}
	half := d / 2
	return half + rand.N(half+1)
}

// call runs one Nomad API call with a per-attempt deadline, retrying what is
// safe to retry until attempts run out or ctx ends. Only idempotent calls
// (reads, purges, deletes, token-guarded dispatches, CAS writes with a nonce)
// go through it with retries; others pass attempts 1.
func call(ctx context.Context, attempts int, fn func(ctx context.Context) error) error {
	var err error
	for n := 0; n < attempts; n++ {
		if n > 0 {
			t := time.NewTimer(backoff(n-1, retryBaseDelay, retryMaxDelay))
			select {
			case <-ctx.Done():
				t.Stop()
				return errors.Join(err, ctx.Err())
			case <-t.C:
			}
		}
		actx, cancel := context.WithTimeout(ctx, callTimeout)
		err = fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		if !retryable(err) {
			return err
		}
	}
	return err
}

// queryOpts returns read options bound to ctx in namespace ns.
func queryOpts(ctx context.Context, ns string) *api.QueryOptions {
	return (&api.QueryOptions{Namespace: ns}).WithContext(ctx)
}

// writeOpts returns write options bound to ctx in namespace ns.
func writeOpts(ctx context.Context, ns string) *api.WriteOptions {
	return (&api.WriteOptions{Namespace: ns}).WithContext(ctx)
}

// queryOpts returns the Manager's read options: bound to ctx, in namespace ns,
// with the token as it is now (see Token).
func (m *Manager) queryOpts(ctx context.Context, ns string) *api.QueryOptions {
	q := queryOpts(ctx, ns)
	q.AuthToken = m.token.Secret()
	return q
}

// writeOpts returns the Manager's write options, as queryOpts.
func (m *Manager) writeOpts(ctx context.Context, ns string) *api.WriteOptions {
	w := writeOpts(ctx, ns)
	w.AuthToken = m.token.Secret()
	return w
}
