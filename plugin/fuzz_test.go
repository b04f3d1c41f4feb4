package plugin_test

import (
	"bytes"
	"encoding/hex"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/agentkernel/agentkernel-pool/plugin"
)

// Shapes for the fuzzer: one like the driver's plugin block, one like its task
// config, the spec's golden task config with every kind of field, and `any`.

type fuzzPool struct {
	Jobspec      string `codec:"jobspec"`
	Size         any    `codec:"size"`
	Max          any    `codec:"max"`
	ClaimTimeout any    `codec:"claim_timeout"`
}

type fuzzPluginConfig struct {
	Address   string              `codec:"address"`
	TokenFile string              `codec:"token_file"`
	Namespace string              `codec:"namespace"`
	Pools     map[string]fuzzPool `codec:"pool"`
}

type fuzzTaskConfig struct {
	Pool    string   `codec:"pool"`
	Command string   `codec:"command"`
	Args    []string `codec:"args"`
}

type fuzzNumbers struct {
	I8  int8          `codec:"i8"`
	U16 uint16        `codec:"u16"`
	I   int           `codec:"i"`
	U64 uint64        `codec:"u64"`
	F32 float32       `codec:"f32"`
	D   time.Duration `codec:"d"`
	B   []byte        `codec:"b"`
	P   *int32        `codec:"p"`
}

// decodeSeeds are the spec's golden vectors (plugin/decode_test.go) and real
// encodings of the driver's configs.
var decodeSeeds = []string{
	"82a7656e61626c6564c3a8696e74657276616cc0",
	"82a7656e61626c6564c2a8696e74657276616ca23573",
	"89a461726773c0a3626967c0a7636f6d6d616e64a178a56578747261c0a66c6162656c73c0a76c6f6767696e67c0a56d6f756e7490a36f707490a5726174696fc0",
	"89a46172677392a161a162a3626967cd012ca7636f6d6d616e64a92f62696e2f6563686fa5657874726181a16b01a66c6162656c7381a178a179a76c6f6767696e67c0a56d6f756e749281a3737263a22f6181a3737263a22f62a36f707490a5726174696fcb3fe0000000000000",
	"82a161cb3ff8000000000000a16292c3c0",
	"c0", "80", "a178", "8081",
}

func fuzzSeedEncodings(f *testing.F) {
	for _, s := range decodeSeeds {
		b, err := hex.DecodeString(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, v := range []any{
		map[string]any{"address": nil, "token_file": nil, "namespace": "default", "pool": map[string]any{
			"python": map[string]any{"jobspec": "/etc/warm.nomad.hcl", "size": "3", "max": "10", "claim_timeout": "30s"}}},
		map[string]any{"pool": map[string]any{"dev": map[string]any{"size": 2, "max": uint64(math.MaxUint64), "claim_timeout": 1.5}}},
		map[string]any{"pool": "python", "command": "/bin/sh", "args": []string{"-c", "echo hi"}},
		map[string]any{"pool": "python", "command": nil, "args": nil},
		map[string]any{"i8": -128, "u16": "65535", "i": "1e3", "u64": uint64(math.MaxUint64), "f32": 0.5, "d": "1m30s", "b": []byte{1, 2}, "p": int8(-1)},
		map[string]any{"i": "1e999999999", "d": "9223372036854775807"},
	} {
		b, err := msgpack.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzDecodeConfig: DecodeConfig never panics on any bytes, its errors are
// non-empty and name where they happened, and what decodes re-encodes to the
// same value.
func FuzzDecodeConfig(f *testing.F) {
	fuzzSeedEncodings(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var a any
		if err := plugin.DecodeConfig(data, &a); err != nil {
			checkErr(t, err)
		} else if a != nil && !hasNaN(a) {
			roundTrip(t, a, func() any { var x any; return &x })
		}
		targets := []func() any{
			func() any { return new(fuzzPluginConfig) },
			func() any { return new(fuzzTaskConfig) },
			func() any { return new(fuzzNumbers) },
			func() any { return new(map[string]any) },
			func() any { return new([]any) },
		}
		for _, mk := range targets {
			out := mk()
			if err := plugin.DecodeConfig(data, out); err != nil {
				checkErr(t, err)
				continue
			}
			if !hasNaN(reflect.ValueOf(out).Elem().Interface()) {
				roundTrip(t, reflect.ValueOf(out).Elem().Interface(), mk)
			}
		}
	})
}

func checkErr(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	if msg == "" {
		t.Fatal("empty error")
	}
	// Every error says where: the decoder's own prefix, or a field path.
	if !strings.HasPrefix(msg, "decode config:") && !strings.Contains(msg, ": ") {
		t.Fatalf("error names no field: %q", msg)
	}
}

// roundTrip encodes v (codec tags) and decodes it again into a fresh target.
func roundTrip(t *testing.T, v any, mk func() any) {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetCustomStructTag("codec")
	if err := enc.Encode(v); err != nil {
		t.Fatalf("re-encode %#v: %v", v, err)
	}
	out := mk()
	if err := plugin.DecodeConfig(buf.Bytes(), out); err != nil {
		t.Fatalf("re-decode of %#v (%x): %v", v, buf.Bytes(), err)
	}
	got := reflect.ValueOf(out).Elem().Interface()
	if !reflect.DeepEqual(got, v) {
		t.Fatalf("round trip changed the value:\n got %#v\nwant %#v", got, v)
	}
}

func hasNaN(v any) bool {
	found := false
	var walk func(reflect.Value)
	walk = func(r reflect.Value) {
		if found || !r.IsValid() {
			return
		}
		switch r.Kind() {
		case reflect.Float32, reflect.Float64:
			found = math.IsNaN(r.Float())
		case reflect.Interface, reflect.Pointer:
			if !r.IsNil() {
				walk(r.Elem())
			}
		case reflect.Slice, reflect.Array:
			for i := 0; i < r.Len(); i++ {
				walk(r.Index(i))
			}
		case reflect.Map:
			for it := r.MapRange(); it.Next(); {
				walk(it.Value())
			}
		case reflect.Struct:
			for i := 0; i < r.NumField(); i++ {
				walk(r.Field(i))
			}
		}
	}
	walk(reflect.ValueOf(v))
	return found
}

// Found while fuzzing: hostile inputs that cost the plugin process dearly.
func TestDecodeHostileInput(t *testing.T) {
	nested := func(depth int) []byte {
		return append(bytes.Repeat([]byte{0x91}, depth), 0xc0) // [[[...nil]]]
	}
	var a any
	if err := plugin.DecodeConfig(nested(plugin.MaxConfigDepth), &a); err != nil {
		t.Fatalf("%d levels: %v", plugin.MaxConfigDepth, err)
	}
	// 4 MiB of nesting overflowed the goroutine stack: a fatal error that
	// recover cannot catch, taking every task's plugin state with it.
	for _, depth := range []int{plugin.MaxConfigDepth + 1, 4 << 20} {
		if err := plugin.DecodeConfig(nested(depth), &a); err == nil || !strings.Contains(err.Error(), "nest deeper") {
			t.Fatalf("%d levels: err = %v", depth, err)
		}
	}
	maps := append(bytes.Repeat([]byte{0x81, 0xa1, 'k'}, plugin.MaxConfigDepth+1), 0xc0) // {"k":{"k":...}}
	if err := plugin.DecodeConfig(maps, &a); err == nil || !strings.Contains(err.Error(), "nest deeper") {
		t.Fatalf("nested maps: err = %v", err)
	}

	// A 5-byte header declaring 16M map entries made the msgpack decoder
	// preallocate a million-entry map (seconds and ~100 MB per request); one
	// declaring a 3.5 GiB bin value made it allocate that much.
	start := time.Now()
	for _, data := range [][]byte{[]byte("\xdf\x01\x00\x80\xa1b\x9200"), []byte("\xdd\xff\xff\xff\xff\xc0"), []byte("\x91\xde\xff\xff"),
		[]byte("\xc6\xd3\x9b\xef\x65"),              // bin32 of 3.5 GiB: the decoder allocated it at once
		[]byte("\x81\xa1k\xc9\xff\xff\xff\xff\x01"), // ext32 likewise
	} {
		if err := plugin.DecodeConfig(data, &a); err == nil {
			t.Fatalf("%x: no error", data)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("hostile headers took %s", d)
	}

	// A decimal string that underflows to 0 when parsed is not the integer 0.
	var n struct {
		I int `codec:"i"`
	}
	for s, want := range map[string]string{"1e-999999999": "non-integral", "1e99999999": "overflows", "1.5": "non-integral"} {
		b, _ := msgpack.Marshal(map[string]any{"i": s})
		if err := plugin.DecodeConfig(b, &n); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", s, err, want)
		}
	}
}
