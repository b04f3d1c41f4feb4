package plugin_test

import (
	"encoding/hex"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

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
// task's config with its codec handle, which writes structs as maps).

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

type logging struct {
	Level string `codec:"level"`
}

type taskConfig struct {
	Command string            `codec:"command"`
	Args    []string          `codec:"args"`
	Ratio   float64           `codec:"ratio"`
	Big     int64             `codec:"big"`
	Extra   any               `codec:"extra"`
	Opt     []string          `codec:"opt"`
	Labels  map[string]string `codec:"labels"`
	Mount   []mount           `codec:"mount"`
	Logging *logging          `codec:"logging"`
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
		Ratio:   0.5,
		Big:     300,
		Extra:   map[string]any{"k": int64(1)},
		Opt:     []string{},
		Labels:  map[string]string{"x": "y"},
		Mount:   []mount{{Src: "/a"}, {Src: "/b"}},
		Logging: nil,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config = %#v, want %#v", cfg, want)
	}
}

type numbers struct {
	I   int           `codec:"i"`
	I8  int8          `codec:"i8"`
	I64 int64         `codec:"i64"`
	U   uint          `codec:"u"`
	U16 uint16        `codec:"u16"`
	U64 uint64        `codec:"u64"`
	F32 float32       `codec:"f32"`
	F64 float64       `codec:"f64"`
	D   time.Duration `codec:"d"`
}

func TestDecodeNumberForms(t *testing.T) {
	cases := []struct {
		name string
		hex  string // msgpack of the value stored under key
		key  string
		want any
	}{
		{"positive fixint", "05", "i", 5},
		{"negative fixint", "fb", "i8", int8(-5)},
		{"uint8", "cc80", "i", 128},
		{"uint32", "ce00011170", "u", uint(70000)},
		{"uint64 max", "cfffffffffffffffff", "u64", uint64(math.MaxUint64)},
		{"int8", "d080", "i64", int64(-128)},
		{"int64", "d3ffffffffffff8000", "i", -32768},
		{"integral float64 into int", "cb4059000000000000", "i", 100},
		{"float32", "ca3fc00000", "f64", 1.5},
		{"float32 into float32", "ca3fc00000", "f32", float32(1.5)},
		{"float64", "cb3fb999999999999a", "f64", 0.1},
		{"huge number string into float", "a431653330", "f64", 1e30},
		{"decimal string into uint64", "b43138343436373434303733373039353531363135", "u64", uint64(math.MaxUint64)},
		{"nil zeroes", "c0", "i", 0},
		{"duration string", "a3333073", "d", 30 * time.Second},
		{"duration number", "05", "d", time.Duration(5)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := numbers{I: 99}
			if err := plugin.DecodeConfig(entry(t, tc.key, tc.hex), &n); err != nil {
				t.Fatal(err)
			}
			got := fieldByTag(t, &n, tc.key)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("%s = %#v, want %#v", tc.key, got, tc.want)
			}
		})
	}
}

// entry encodes the one-entry map {key: value} with value given as msgpack hex.
func entry(t *testing.T, key, valueHex string) []byte {
	data := append([]byte{0x81, byte(0xa0 | len(key))}, key...)
	return append(data, mustHex(t, valueHex)...)
}

func fieldByTag(t *testing.T, n *numbers, tag string) any {
	v := reflect.ValueOf(n).Elem()
	for i := 0; i < v.NumField(); i++ {
		if v.Type().Field(i).Tag.Get("codec") == tag {
			return v.Field(i).Interface()
		}
	}
	t.Fatalf("no field tagged %q", tag)
	return nil
}

func TestDecodeNumberErrors(t *testing.T) {
	cases := []struct {
		name, key, hex, msg string
	}{
		{"non-integral into int", "i", "cb3ff8000000000000", "i: cannot decode non-integral number 1.5 as int"},
		{"overflow int8", "i8", "cd012c", "i8: number 300 overflows int8"},
		{"negative into uint", "u", "ff", "u: number -1 overflows uint"},
		{"huge string into int64", "i64", "a431653330", `i64: string "1e30" overflows int64`},
		{"word into int", "i", "a178", `i: cannot decode string "x" as int`},
		{"bool into float", "f64", "c3", "f64: cannot decode bool true as float64"},
		{"bad duration", "d", "a4736f6f6e", `d: cannot decode string "soon" as a duration`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var n numbers
			err := plugin.DecodeConfig(entry(t, tc.key, tc.hex), &n)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %q", err, tc.msg)
			}
		})
	}
}

type poolConfig struct {
	Size int    `codec:"size"`
	Job  string `codec:"jobspec"`
}

type pluginConfig struct {
	Address string                `codec:"address"`
	Pools   map[string]poolConfig `codec:"pool"`
}

func TestDecodeBlockMapAndErrorPath(t *testing.T) {
	var cfg pluginConfig
	// {"address": "http://x", "pool": {"python": {"jobspec": "p.hcl", "size": 3}}}
	good := "82a761646472657373a8687474703a2f2f78a4706f6f6c81a6707974686f6e82a76a6f6273706563a5702e68636ca473697a6503"
	if err := plugin.DecodeConfig(mustHex(t, good), &cfg); err != nil {
		t.Fatal(err)
	}
	want := pluginConfig{Address: "http://x", Pools: map[string]poolConfig{"python": {Size: 3, Job: "p.hcl"}}}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config = %+v, want %+v", cfg, want)
	}

	// Same with size = "x".
	bad := strings.Replace(good, "a473697a6503", "a473697a65a178", 1)
	err := plugin.DecodeConfig(mustHex(t, bad), &cfg)
	if err == nil || err.Error() != `pool.python.size: cannot decode string "x" as int` {
		t.Fatalf("err = %v", err)
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
	if err := plugin.DecodeConfig(mustHex(t, "8081"), &cfg); err == nil {
		t.Fatal("trailing bytes accepted")
	}
	if err := plugin.DecodeConfig(mustHex(t, "a178"), &cfg); err == nil || !strings.Contains(err.Error(), "config: cannot decode") {
		t.Fatalf("string into struct: %v", err)
	}
	var m map[string]any
	if err := plugin.DecodeConfig(mustHex(t, "82a161cb3ff8000000000000a16292c3c0"), &m); err != nil {
		t.Fatal(err)
	}
	if want := map[string]any{"a": 1.5, "b": []any{true, nil}}; !reflect.DeepEqual(m, want) {
		t.Fatalf("generic map = %#v, want %#v", m, want)
	}
}
