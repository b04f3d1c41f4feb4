package nomadapi

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/nomad/api"
)

// CallObserver is told of every request a Nomad API client sends, for
// metrics (Config.Calls). Calls come from any goroutine making requests:
// they must return quickly.
type CallObserver interface {
	// APICall: one HTTP request of operation op (see Operation) ended
	// with result (CallOK, Call4xx, Call5xx or CallError) after took. A
	// retried call is one request per attempt.
	APICall(op, result string, took time.Duration)
}

// Results of a Nomad API request (CallObserver).
const (
	CallOK    = "ok"    // answered below 400
	Call4xx   = "4xx"   // answered 400-499: refused (ACL, not found, CAS conflict)
	Call5xx   = "5xx"   // answered 500 or above
	CallError = "error" // no answer: connection refused or reset, timeout, cancelled
)

// CallResult is the result class of a Nomad API call that returned err, for
// calls made outside a metered client (the exec websockets).
func CallResult(err error) string {
	var cas api.ErrCASConflict
	switch code := StatusCode(err); {
	case err == nil:
		return CallOK
	case code >= 500:
		return Call5xx
	case code >= 400, errors.Is(err, api.ErrVariablePathNotFound), errors.As(err, &cas):
		return Call4xx
	}
	return CallError
}

func statusResult(code int) string {
	switch {
	case code >= 500:
		return Call5xx
	case code >= 400:
		return Call4xx
	}
	return CallOK
}

// meteredTransport tells calls of every request next sends.
type meteredTransport struct {
	next  http.RoundTripper
	calls CallObserver
}

func (t meteredTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	began := time.Now()
	resp, err := t.next.RoundTrip(req)
	result := CallError
	if err == nil {
		result = statusResult(resp.StatusCode)
	}
	t.calls.APICall(Operation(req.Method, req.URL), result, time.Since(began))
	return resp, err
}

// meteredHTTPClient is the HTTP client api.NewClient would make for cfg (the
// same pooled transport, TLS and unix socket handling), with every request
// told to calls. cfg.Address is rewritten for a unix socket, as the API
// client does.
func meteredHTTPClient(cfg *api.Config, calls CallObserver) (*http.Client, error) {
	tr := cleanhttp.DefaultPooledTransport()
	tr.TLSHandshakeTimeout = 10 * time.Second
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	tr.ForceAttemptHTTP2 = false // as the API client: its exec websockets need HTTP/1
	if u, err := url.Parse(cfg.Address); err == nil && u.Scheme == "unix" {
		socket := u.EscapedPath()
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}
		cfg.Address = "http://127.0.0.1"
	}
	hc := &http.Client{Transport: tr}
	if err := api.ConfigureTLS(hc, cfg.TLSConfig); err != nil {
		return nil, err
	}
	hc.Transport = meteredTransport{next: tr, calls: calls}
	return hc, nil
}

// Operation names the Nomad API operation of a request by its method and
// path: a short stable name such as "jobs.dispatch", "variables.create" or
// "allocations.list", never an ID, so metrics keep few series. A blocking
// query (a watch: ?index= set) is named apart, as "<resource>.watch" for a
// list, since its latency is mostly the wait for a change. Paths the plugin
// does not use are "other".
func Operation(method string, u *url.URL) string {
	rest, ok := strings.CutPrefix(u.EscapedPath(), "/v1/")
	if !ok {
		return "other"
	}
	seg := strings.Split(rest, "/") // IDs are escaped: a child job's "/" is %2F
	q := u.Query()
	op := ""
	switch seg[0] {
	case "jobs":
		switch {
		case len(seg) == 2 && seg[1] == "parse":
			op = "jobs.parse"
		case len(seg) == 1 && method == http.MethodGet:
			op = "jobs.list"
		case len(seg) == 1:
			op = "jobs.register"
		}
	case "job":
		switch {
		case len(seg) == 2 && method == http.MethodGet:
			op = "jobs.info"
		case len(seg) == 2 && method == http.MethodDelete:
			op = "jobs.deregister"
		case len(seg) == 2:
			op = "jobs.register"
		case len(seg) == 3 && jobSubOps[seg[2]]:
			op = "jobs." + seg[2]
		}
	case "allocations", "nodes": // /v1/<resource>s lists them
		op = seg[0] + ".list"
	case "allocation", "node": // /v1/<resource>/<id> reads one
		if len(seg) == 2 {
			op = seg[0] + "s.info"
		}
	case "client":
		if len(seg) == 4 && seg[1] == "allocation" && (seg[3] == "stats" || seg[3] == "exec" || seg[3] == "checks") {
			op = "alloc." + seg[3]
		}
	case "vars":
		op = "variables.list"
	case "var":
		switch {
		case method == http.MethodGet:
			op = "variables.read"
		case method == http.MethodDelete:
			op = "variables.delete"
		case q.Get("cas") == "0":
			op = "variables.create"
		default:
			op = "variables.update"
		}
	case "agent":
		if len(seg) == 2 && seg[1] == "self" {
			op = "agent.self"
		}
	}
	if op == "" {
		return "other"
	}
	if method == http.MethodGet && q.Get("index") != "" && q.Get("index") != "0" {
		if res, ok := strings.CutSuffix(op, ".list"); ok {
			return res + ".watch"
		}
		return op + ".watch"
	}
	return op
}

// jobSubOps are the /v1/job/<id>/<op> endpoints named by their own op.
var jobSubOps = map[string]bool{"dispatch": true, "allocations": true, "evaluations": true, "evaluate": true}
