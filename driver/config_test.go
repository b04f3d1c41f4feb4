package driver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/hclspec/hclspectest"
	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
)

func TestConfigValidationNamesPoolAndField(t *testing.T) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "warm.nomad.hcl")
	if err := os.WriteFile(spec, []byte(`job "w" {}`), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.token")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		raw  rawConfig
		want []string // every one must appear; none means valid
	}{
		{"defaults", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec}}}, nil},
		{"numeric strings and seconds", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, Size: "3", Max: "9", ClaimTimeout: "45"}}}, nil},
		{"no pools", rawConfig{}, []string{"no pool configured"}},
		{"size over max", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, Size: "5", Max: "2"}}}, []string{`pool "py": size (5) must not exceed max (2)`}},
		{"missing jobspec", rawConfig{Pools: map[string]rawPool{"py": {}}}, []string{`pool "py": jobspec: missing`}},
		{"unreadable jobspec", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: filepath.Join(dir, "nope.hcl")}}}, []string{`pool "py": jobspec: open`, "no such file"}},
		{"fractional size", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, Size: "1.5"}}}, []string{`pool "py": size: 1.5: want a whole number`}},
		{"negative max", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, Max: "-1"}}}, []string{`pool "py": max: -1`}},
		{"huge size as string", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, Size: "1e30"}}}, []string{`pool "py": size: 1e+30: want a whole number`}},
		{"word size", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, Size: "three"}}}, []string{`pool "py": size: "three" is not a number`}},
		{"bad duration", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, ClaimTimeout: "soon"}}}, []string{`pool "py": claim_timeout: "soon": want a duration`}},
		{"zero duration", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, ClaimTimeout: "0s"}}}, []string{`pool "py": claim_timeout: 0s: must be positive`}},
		{"bad name", rawConfig{Pools: map[string]rawPool{"Py.3": {Jobspec: spec}}}, []string{`pool "Py.3": name`}},
		{"bad address", rawConfig{Block: nomadapi.Block{Address: "127.0.0.1:4646"}, Pools: map[string]rawPool{"py": {Jobspec: spec}}}, []string{`address "127.0.0.1:4646"`}},
		{"empty token file", rawConfig{Block: nomadapi.Block{TokenFile: empty}, Pools: map[string]rawPool{"py": {Jobspec: spec}}}, []string{"token_file: ", "is empty"}},
		{"endless token file", rawConfig{Block: nomadapi.Block{TokenFile: "/dev/zero"}, Pools: map[string]rawPool{"py": {Jobspec: spec}}}, []string{"token_file: /dev/zero is larger than"}},
		{"cert without key", rawConfig{Block: nomadapi.Block{CertFile: spec}, Pools: map[string]rawPool{"py": {Jobspec: spec}}}, []string{"cert_file and key_file: set both or neither"}},
		{"missing ca", rawConfig{Block: nomadapi.Block{CAFile: filepath.Join(dir, "ca.pem")}, Pools: map[string]rawPool{"py": {Jobspec: spec}}}, []string{"ca_file: ", "no such file"}},
		{"namespaces", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, Namespaces: []string{"team-a", "default"}}}}, nil},
		{"bad namespace", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, Namespaces: []string{"team a", ""}}}}, []string{`pool "py": namespaces: "team a" is not a Nomad namespace name`, `namespaces: "" is not`}},
		{"namespace twice", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, Namespaces: []string{"a", "a"}}}}, []string{`pool "py": namespaces: "a" is listed twice`}},
		{"metrics address", rawConfig{MetricsAddr: "127.0.0.1:9464", Pools: map[string]rawPool{"py": {Jobspec: spec}}}, nil},
		{"bad metrics address", rawConfig{MetricsAddr: "9464", Pools: map[string]rawPool{"py": {Jobspec: spec}}}, []string{`metrics_address "9464": want host:port`}},
		{"demand-driven", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, Size: "2", MaxWarm: "12", ScaleDown: "90s"}}}, nil},
		{"max_warm below size", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, Size: "3", MaxWarm: "2"}}}, []string{`pool "py": max_warm (2) must be at least size (3)`}},
		{"max_warm over max", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, MaxWarm: "6", Max: "5"}}}, []string{`pool "py": max_warm (6) must not exceed max (5)`}},
		{"bad max_warm", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, MaxWarm: "lots"}}}, []string{`pool "py": max_warm: `}},
		{"bad scale_down_after", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, ScaleDown: "later"}}}, []string{`pool "py": scale_down_after: "later": want a duration`}},
		{"bad ready_timeout", rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec, ReadyTimeout: "-1m"}}}, []string{`pool "py": ready_timeout: -1m0s: must be positive`}},
		{"two problems at once", rawConfig{Pools: map[string]rawPool{"a": {}, "b": {Jobspec: spec, Size: "9", Max: "3"}}}, []string{`pool "a": jobspec`, `pool "b": size (9)`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(&tc.raw)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("valid config rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("invalid config accepted; want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "warm.nomad.hcl")
	_ = os.WriteFile(spec, []byte(`job "w" {}`), 0o644)
	c, err := parseConfig(&rawConfig{Pools: map[string]rawPool{"py": {Jobspec: spec}, "big": {Jobspec: spec, Size: "3", ClaimTimeout: "2m"},
		"burst": {Jobspec: spec, Size: "2", MaxWarm: "10"}}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespace != DefaultNamespace {
		t.Errorf("namespace %q", c.Namespace)
	}
	py, _ := c.Pool("py")
	if py.Size != DefaultPoolSize || py.Max != minDefaultMax || py.ClaimTimeout != DefaultClaimTimeout ||
		py.MaxWarm != py.Size || py.ScaleDownAfter != 5*time.Minute {
		t.Errorf("defaults: %+v", py)
	}
	// A demand-driven pool's default max leaves room for its ceiling.
	if burst, _ := c.Pool("burst"); burst.MaxWarm != 10 || burst.Max != 40 {
		t.Errorf("burst: %+v, want max_warm 10 and max 40 (4 × max_warm)", burst)
	}
	big, _ := c.Pool("big")
	if big.Size != 3 || big.Max != 12 || big.ClaimTimeout != 2*time.Minute {
		t.Errorf("big: %+v", big)
	}
	if got := strings.Join(c.PoolNames(), ","); got != "big,burst,py" {
		t.Errorf("pool names %q", got)
	}
}

func TestTokenNeverInErrors(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "tok")
	_ = os.WriteFile(tok, []byte("s3cr3t-token-value\n"), 0o600)
	c, err := parseConfig(&rawConfig{Block: nomadapi.Block{TokenFile: tok, Address: "bad"}, Pools: map[string]rawPool{"py": {}}})
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("error %v", err)
	}
	if c.API.Token != "s3cr3t-token-value" {
		t.Errorf("token not read from token_file")
	}
}

// TestSchemasAreValid: Nomad rejecting (or panicking on) a schema stops the agent
// or fails every task, so both schemas must pass hclspectest.Validate.
func TestSchemasAreValid(t *testing.T) {
	if err := hclspectest.Validate(configSpec); err != nil {
		t.Errorf("plugin config schema: %v", err)
	}
	if err := hclspectest.Validate(taskSpec); err != nil {
		t.Errorf("task config schema: %v", err)
	}
}
