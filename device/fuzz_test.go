package device

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/agentkernel/agentkernel-pool/plugin"
)

// fieldRE matches how every problem of the device plugin's block starts:
// the field it is about, or the decoder's "decode config".
var fieldRE = regexp.MustCompile(`^(decode config|config|address|token_file|ca_file|cert_file|key_file|tls_server_name)[ :.\[]`)

// FuzzDeviceConfig drives SetConfig's path, msgpack bytes → DecodeConfig →
// parseConfig, on arbitrary bytes: it never panics, every problem names its
// field, and an accepted block has a usable address.
func FuzzDeviceConfig(f *testing.F) {
	tok := filepath.Join(f.TempDir(), "tok")
	if err := os.WriteFile(tok, []byte("secret\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	for _, v := range []any{
		map[string]any{},
		map[string]any{"address": "http://127.0.0.1:4646", "token_file": tok},
		map[string]any{"address": "::", "token_file": "/nonexistent", "cert_file": "/x"},
		map[string]any{"address": 7, "ca_file": []any{1}},
		nil,
	} {
		b, err := msgpack.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseConfig(data)
		if err != nil {
			errs := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			for _, e := range errs {
				if !fieldRE.MatchString(e.Error()) {
					t.Fatalf("problem names no field: %q", e.Error())
				}
			}
			return
		}
		if c == nil {
			t.Fatal("no error and no config")
		}
	})
}

// FuzzDeviceState reads arbitrary bytes as the driver's state file: it never
// panics, and whatever it accepts becomes device groups the Nomad client
// accepts (a set it refused would drop the plugin until the agent restarts).
func FuzzDeviceState(f *testing.F) {
	for _, s := range []string{
		`{"node_id":"n","pools":[{"name":"py","warm":["a1","a2"],"cold":["cold.py.0"]}]}`,
		`{"pools":[{"name":"a"},{"name":"b","warm":["x"]}]}`,
		`{"pools":[{"name":"a","warm":["cold.a.0"]}]}`,
		`{"pools":null}`, `[]`, `{}`, ``,
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, stateFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := ReadState(dir)
		if err != nil {
			return
		}
		if err := plugin.ValidateDeviceGroups(Groups(st)); err != nil {
			t.Fatalf("state %q accepted, but its groups would get the plugin dropped: %v", data, err)
		}
	})
}
