package plugin_test

import (
	"encoding/hex"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/agentkernel/agentkernel-pool/plugin"
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Golden vectors produced by Nomad's msgpack encoder (the client encodes a
// config's HCL value with go-cty, which writes objects as maps with sorted keys).

type healthConfig struct {
	Enabled  bool   `codec:"enabled"`
	Interval string `codec:"interval"`
}

func TestDecodeGoldenDefaultsApplied(t *testing.T) {
	cfg := healthConfig{Interval: "preset"}
	if err := plugin.DecodeConfig(mustHex(t, "82a7656e61626c6564c3a8696e74657276616cc0"), &cfg); err != nil {
		t.Fatal(err)
	}
	// enabled comes from the Literal default; a null interval zeroes the field.
	if want := (healthConfig{Enabled: true, Interval: ""}); cfg != want {
		t.Fatalf("config = %+v, want %+v", cfg, want)
	}
}

func TestDecodeGoldenValuesGiven(t *testing.T) {
	var cfg healthConfig
	if err := plugin.DecodeConfig(mustHex(t, "82a7656e61626c6564c2a8696e74657276616ca23573"), &cfg); err != nil {
		t.Fatal(err)
	}
	if want := (healthConfig{Enabled: false, Interval: "5s"}); cfg != want {
		t.Fatalf("config = %+v, want %+v", cfg, want)
	}
}

type mount struct {
	Src string `codec:"src"`
}

// taskConfig takes the golden task configs' strings, lists and blocks; their
// numbers, `any` and a nil block land on keys without a field, which are skipped.
type taskConfig struct {
	Command string            `codec:"command"`
	Args    []string          `codec:"args"`
	Opt     []string          `codec:"opt"`
	Labels  map[string]string `codec:"labels"`
	Mount   []mount           `codec:"mount"`
}

func TestDecodeGoldenMinimal(t *testing.T) {
	var cfg taskConfig
	data := "89a461726773c0a3626967c0a7636f6d6d616e64a178a56578747261c0a66c6162656c73c0a76c6f6767696e67c0a56d6f756e7490a36f707490a5726174696fc0"
	if err := plugin.DecodeConfig(mustHex(t, data), &cfg); err != nil {
		t.Fatal(err)
	}
	want := taskConfig{Command: "x", Opt: []string{}, Mount: []mount{}}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config = %#v, want %#v", cfg, want)
	}
}

func TestDecodeGoldenFull(t *testing.T) {
	var cfg taskConfig
	data := "89a46172677392a161a162a3626967cd012ca7636f6d6d616e64a92f62696e2f6563686fa5657874726181a16b01a66c6162656c7381a178a179a76c6f6767696e67c0a56d6f756e749281a3737263a22f6181a3737263a22f62a36f707490a5726174696fcb3fe0000000000000"
	if err := plugin.DecodeConfig(mustHex(t, data), &cfg); err != nil {
		t.Fatal(err)
	}
	want := taskConfig{
		Command: "/bin/echo",
		Args:    []string{"a", "b"},
		Opt:     []string{},
		Labels:  map[string]string{"x": "y"},
		Mount:   []mount{{Src: "/a"}, {Src: "/b"}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config = %#v, want %#v", cfg, want)
	}
}

type poolConfig struct {
	Size       string   `codec:"size"`
	Job        string   `codec:"jobspec"`
	Namespaces []string `codec:"namespaces"`
}

type pluginConfig struct {
	Address string                `codec:"address"`
	Pools   map[string]poolConfig `codec:"pool"`
}

// A value of the wrong shape fails naming its field, down to the pool.
func TestDecodeBlockMapAndErrorPath(t *testing.T) {
	var cfg pluginConfig
	// {"address": "http://x", "pool": {"python": {"jobspec": "p.hcl", "size": "3"}}}
	good := "82a761646472657373a8687474703a2f2f78a4706f6f6c81a6707974686f6e82a76a6f6273706563a5702e68636ca473697a65a133"
	if err := plugin.DecodeConfig(mustHex(t, good), &cfg); err != nil {
		t.Fatal(err)
	}
	want := pluginConfig{Address: "http://x", Pools: map[string]poolConfig{"python": {Size: "3", Job: "p.hcl"}}}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config = %+v, want %+v", cfg, want)
	}

	for value, msg := range map[string]string{
		"03":                 "pool.python.size: cannot decode number 3 as string",
		"cb3ff8000000000000": "pool.python.size: cannot decode number 1.5 as string",
		"9103":               "pool.python.size: cannot decode list as string", // size = [3]
		"81a161c3":           "pool.python.size: cannot decode map as string",
		"c3":                 "pool.python.size: cannot decode bool true as string",
		"c401ff":             "pool.python.size: cannot decode bytes as string",
		"d40100":             "pool.python.size: cannot decode extension as string",
	} {
		bad := strings.Replace(good, "a473697a65a133", "a473697a65"+value, 1)
		err := plugin.DecodeConfig(mustHex(t, bad), &cfg)
		if err == nil || err.Error() != msg {
			t.Errorf("size %s: err = %v, want %q", value, err, msg)
		}
	}
	// namespaces = "agents" instead of a list; then a list with a number in it.
	for value, msg := range map[string]string{
		"a66167656e7473": `pool.python.namespaces: cannot decode string "agents" as list`,
		"92a16101":       "pool.python.namespaces[1]: cannot decode number 1 as string",
	} {
		bad := strings.Replace(good, "a473697a65a133", "aa6e616d65737061636573"+value, 1)
		err := plugin.DecodeConfig(mustHex(t, bad), &cfg)
		if err == nil || err.Error() != msg {
			t.Errorf("namespaces %s: err = %v, want %q", value, err, msg)
		}
	}
}

func TestDecodeEdgeCases(t *testing.T) {
	cfg := healthConfig{Interval: "keep"}
	if err := plugin.DecodeConfig(nil, &cfg); err != nil || cfg.Interval != "keep" {
		t.Fatalf("empty data: %+v, %v", cfg, err)
	}
	if err := plugin.DecodeConfig(mustHex(t, "c0"), &cfg); err != nil || cfg.Interval != "keep" {
		t.Fatalf("top-level nil: %+v, %v", cfg, err)
	}
	if err := plugin.DecodeConfig(mustHex(t, "80"), cfg); err == nil {
		t.Fatal("non-pointer out accepted")
	}
	if err := plugin.DecodeConfig(mustHex(t, "8081"), &cfg); err == nil || !strings.Contains(err.Error(), "trailing bytes") {
		t.Fatalf("trailing bytes: %v", err)
	}
	if err := plugin.DecodeConfig(mustHex(t, "a178"), &cfg); err == nil || err.Error() != `config: cannot decode string "x" as map` {
		t.Fatalf("string into struct: %v", err)
	}
	if err := plugin.DecodeConfig(mustHex(t, "8101c3"), &cfg); err == nil || err.Error() != "config: cannot decode number 1 as a key" {
		t.Fatalf("number key: %v", err)
	}
	// A key named "-" does not reach a field tagged `codec:"-"`.
	var skip struct {
		Hidden string `codec:"-"`
	}
	if err := plugin.DecodeConfig(mustHex(t, "81a12da178"), &skip); err != nil || skip.Hidden != "" {
		t.Fatalf(`key "-": %+v, %v`, skip, err)
	}
}

// A field type the decoder does not fill is a mistake in the driver: it is
// named as soon as data for it arrives, null or not.
func TestDecodeUnsupportedFieldType(t *testing.T) {
	var cfg struct {
		Size int `codec:"size"`
	}
	for _, data := range []string{"81a473697a6503", "81a473697a65c0"} {
		err := plugin.DecodeConfig(mustHex(t, data), &cfg)
		if err == nil || err.Error() != "size: unsupported field type int" {
			t.Errorf("%s: err = %v", data, err)
		}
	}
	var m map[int]string
	if err := plugin.DecodeConfig(mustHex(t, "80"), &m); err == nil || !strings.Contains(err.Error(), "unsupported field type map[int]string") {
		t.Errorf("int-keyed map: err = %v", err)
	}
}

// Conn stands for a group of attributes two plugin blocks share, embedded
// in each block's struct.
type Conn struct {
	Address string `codec:"address"`
	Token   string `codec:"token_file"`
}

type embeddingConfig struct {
	Conn
	Namespace string `codec:"namespace"`
	Nested    Conn   `codec:"nested"`
}

// An untagged embedded struct's keys sit beside the outer struct's in the
// block; keys neither knows are skipped as before, and a tagged struct
// field is still a nested map.
func TestDecodeEmbeddedStruct(t *testing.T) {
	data, err := msgpack.Marshal(map[string]any{
		"address":    "http://x",
		"token_file": "/t",
		"namespace":  "agents",
		"Conn":       "not a field: the embedded struct has no key of its own",
		"unknown":    []any{1, "x"},
		"nested":     map[string]any{"address": "http://y"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var cfg embeddingConfig
	if err := plugin.DecodeConfig(data, &cfg); err != nil {
		t.Fatal(err)
	}
	want := embeddingConfig{Conn: Conn{Address: "http://x", Token: "/t"}, Namespace: "agents", Nested: Conn{Address: "http://y"}}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config = %+v, want %+v", cfg, want)
	}

	// An error in an embedded field is named by its key alone.
	data, err = msgpack.Marshal(map[string]any{"token_file": 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := plugin.DecodeConfig(data, &cfg); err == nil || err.Error() != "token_file: cannot decode number 3 as string" {
		t.Fatalf("err = %v, want token_file named", err)
	}
}

// The outer struct's own field wins over an embedded one of the same key.
func TestDecodeOuterFieldShadowsEmbedded(t *testing.T) {
	var cfg struct {
		Conn
		Address string `codec:"address"`
	}
	data, err := msgpack.Marshal(map[string]any{"address": "http://outer", "token_file": "/t"})
	if err != nil {
		t.Fatal(err)
	}
	if err := plugin.DecodeConfig(data, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Address != "http://outer" || cfg.Conn.Address != "" || cfg.Conn.Token != "/t" {
		t.Fatalf("config = %+v: want address outside, token_file inside", cfg)
	}
}
