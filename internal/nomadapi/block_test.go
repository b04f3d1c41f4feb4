package nomadapi

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/agentkernel/agentkernel-pool/hclspec"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

// Every attribute the schema lets an operator write reaches a field of
// Block: none is accepted by Nomad and then silently ignored.
func TestBlockDecodesEverySchemaAttribute(t *testing.T) {
	spec := BlockSpec(nil)
	block := map[string]any{}
	for name := range spec {
		block[name] = "value of " + name
	}
	data, err := msgpack.Marshal(block)
	if err != nil {
		t.Fatal(err)
	}
	var b Block
	if err := plugin.DecodeConfig(data, &b); err != nil {
		t.Fatal(err)
	}
	v := reflect.ValueOf(b)
	for i := range v.NumField() {
		if v.Field(i).String() == "" {
			t.Errorf("field %s is not in the schema", v.Type().Field(i).Name)
		}
	}
	if len(spec) != v.NumField() {
		t.Errorf("schema has %d attributes, Block %d fields", len(spec), v.NumField())
	}
}

// A plugin's own attributes join the connection ones; one that takes a
// connection attribute's name is refused when the schema is built.
func TestBlockSpecMerges(t *testing.T) {
	spec := BlockSpec(map[string]*hclspec.Spec{"namespace": hclspec.NewAttr("namespace", "string", false)})
	if spec["namespace"] == nil || spec["address"] == nil || len(spec) != 7 {
		t.Fatalf("merged schema has %d attributes: %v", len(spec), slices.Sorted(maps.Keys(spec)))
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a second address attribute was accepted")
		}
	}()
	BlockSpec(map[string]*hclspec.Spec{"address": hclspec.NewAttr("address", "list(string)", false)})
}

func TestBlockConfig(t *testing.T) {
	dir := t.TempDir()
	tok, ca := filepath.Join(dir, "tok"), filepath.Join(dir, "ca.pem")
	for _, f := range []string{tok, ca} {
		if err := os.WriteFile(f, []byte("s3cr3t\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := Block{Address: " https://nomad:4646\n", TokenFile: tok, CAFile: ca, CertFile: ca, KeyFile: ca, TLSServerName: "client.global.nomad"}.Config()
	want := Config{Address: "https://nomad:4646", Token: "s3cr3t", CAFile: ca, CertFile: ca, KeyFile: ca, TLSServerName: "client.global.nomad"}
	if err != nil || c != want {
		t.Fatalf("Config() = %+v, %v; want %+v", c, err, want)
	}

	// Every problem at once, each naming its attribute; the token that
	// could be read is there all the same, and never in the error.
	missing := filepath.Join(dir, "missing.pem")
	c, err = Block{Address: "127.0.0.1:4646", TokenFile: tok, CAFile: missing, KeyFile: missing}.Config()
	if c.Token != "s3cr3t" {
		t.Errorf("token not read alongside the problems: %q", c.Token)
	}
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("err = %v", err)
	}
	lines := strings.Split(err.Error(), "\n")
	for i, prefix := range []string{`address "127.0.0.1:4646": want a URL`, "ca_file: stat " + missing, "key_file: stat " + missing, "cert_file and key_file: set both or neither"} {
		if i >= len(lines) || !strings.HasPrefix(lines[i], prefix) {
			t.Errorf("problem %d: want %q..., got:\n%v", i, prefix, err)
		}
	}
	if _, err := (Block{TokenFile: missing}).Config(); err == nil || !strings.HasPrefix(err.Error(), "token_file: open "+missing) {
		t.Errorf("missing token_file: %v", err)
	}
}
