// Package nomadapi is how the plugin reaches the Nomad HTTP API: the
// address (NOMAD_ADDR or the local agent), TLS (CA, client certificate and
// key, server name), the ACL token that can be rotated while calls are in
// flight (Token), and the per-call observer that feeds the API metrics
// (CallObserver, Operation). The plugin blocks' attributes that say all this
// (address, token_file, ca_file, cert_file, key_file, tls_server_name) are
// one schema, struct and validation here (Block), shared by the driver and
// the device plugin. The pool core, the task driver, the device
// plugin and the status command make their clients here; what each does
// with a client (deadlines, retries, ACL hints) is its own.
package nomadapi

import (
	"errors"
	"fmt"
	"os"

	"github.com/hashicorp/nomad/api"
)

// DefaultAddress is the Nomad API address used when neither Config.Address
// nor NOMAD_ADDR is set: the local agent.
const DefaultAddress = "http://127.0.0.1:4646"

// Config is how to reach the Nomad API; a plugin block's Block.Config
// makes one, the status command another from its flags and NOMAD_*.
type Config struct {
	Address       string // default NOMAD_ADDR, else DefaultAddress
	Token         string // the token itself (Block.Config reads token_file); default NOMAD_TOKEN
	CAFile        string
	CertFile      string
	KeyFile       string
	TLSServerName string
	// Calls, when set, is told of every request the client sends, for
	// metrics. Such a client cannot exec into allocations (the API client's
	// websockets need its own transport): make those with one without.
	Calls CallObserver
}

// EffectiveAddress is the address a client of c calls: Address, else
// NOMAD_ADDR, else DefaultAddress.
func (c Config) EffectiveAddress() string {
	if c.Address != "" {
		return c.Address
	}
	if a := os.Getenv("NOMAD_ADDR"); a != "" {
		return a
	}
	return DefaultAddress
}

// NewClient returns a Nomad API client for c. Empty fields fall back to the
// usual NOMAD_* environment variables.
func NewClient(c Config) (*api.Client, error) {
	cfg := api.DefaultConfig() // reads NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, ...
	cfg.Address = c.EffectiveAddress()
	if c.Token != "" {
		cfg.SecretID = c.Token
	}
	if cfg.TLSConfig == nil {
		cfg.TLSConfig = &api.TLSConfig{}
	}
	if c.CAFile != "" {
		cfg.TLSConfig.CACert = c.CAFile
	}
	if c.CertFile != "" {
		cfg.TLSConfig.ClientCert = c.CertFile
	}
	if c.KeyFile != "" {
		cfg.TLSConfig.ClientKey = c.KeyFile
	}
	if c.TLSServerName != "" {
		cfg.TLSConfig.TLSServerName = c.TLSServerName
	}
	if (cfg.TLSConfig.ClientCert == "") != (cfg.TLSConfig.ClientKey == "") {
		return nil, errors.New("create nomad api client: cert_file and key_file must be set together")
	}
	if c.Calls != nil {
		hc, err := meteredHTTPClient(cfg, c.Calls)
		if err != nil {
			return nil, fmt.Errorf("create nomad api client for %q: %w", cfg.Address, err)
		}
		cfg.HttpClient = hc
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		// The error never carries the token: api.NewClient only reports
		// address and TLS problems.
		return nil, fmt.Errorf("create nomad api client for %q: %w", cfg.Address, err)
	}
	return client, nil
}

// StatusCode returns the HTTP status of a Nomad API error, or 0.
func StatusCode(err error) int {
	var ure api.UnexpectedResponseError
	if errors.As(err, &ure) && ure.HasStatusCode() {
		return ure.StatusCode()
	}
	return 0
}
