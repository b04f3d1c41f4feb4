package plugin_test

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/agentkernel/agentkernel-pool/plugin"
)

// Shapes for the fuzzer: one like the driver's plugin block, one like its task
// config, and one with every kind the decoder fills.

type fuzzPool struct {
	Jobspec    string   `codec:"jobspec"`
	Size       string   `codec:"size"`
	Namespaces []string `codec:"namespaces"`
}

type fuzzPluginConfig struct {
	Address   string              `codec:"address"`
	Namespace string              `codec:"namespace"`
	Pools     map[string]fuzzPool `codec:"pool"`
}

type fuzzTaskConfig struct {
	Pool    string   `codec:"pool"`
	Command string   `codec:"command"`
	Args    []string `codec:"args"`
}

type fuzzKinds struct {
	On     bool                `codec:"on"`
	Mounts []mount             `codec:"mount"`
	Labels map[string]string   `codec:"labels"`
	Nested map[string][]string `codec:"nested"`
	Health healthConfig        `codec:"health"`
}

// decodeSeeds are the golden vectors (decode_test.go) and hostile inputs.
var decodeSeeds = []string{
	"82a7656e61626c6564c3a8696e74657276616cc0",
	"82a7656e61626c6564c2a8696e74657276616ca23573",
	"89a461726773c0a3626967c0a7636f6d6d616e64a178a56578747261c0a66c6162656c73c0a76c6f6767696e67c0a56d6f756e7490a36f707490a5726174696fc0",
	"89a46172677392a161a162a3626967cd012ca7636f6d6d616e64a92f62696e2f6563686fa5657874726181a16b01a66c6162656c7381a178a179a76c6f6767696e67c0a56d6f756e749281a3737263a22f6181a3737263a22f62a36f707490a5726174696fcb3fe0000000000000",
	"c0", "80", "a178", "8081", "c1",
	// wrong kinds for "on" (a bool): bin, ext, number, float, list; a number and a nil key
	"81a26f6ec401ff", "81a26f6ed40100", "81a26f6e03", "81a26f6ecb3ff8000000000000", "81a26f6e9100", "8101c3", "81c0c3",
	"", "92c400", // empty; a list missing its second element
}

// hostileHeaders declare more than the data holds: 16M map entries, 4G list
// elements (the library preallocates a slice of structs at full length), a
// 3.5 GiB bin, an ext32, a 4 GiB string.
var hostileHeaders = [][]byte{
	[]byte("\xdf\x01\x00\x80\xa1b\x9200"),
	[]byte("\x81\xa5mount\xdd\xff\xff\xff\xff\xc0"),
	[]byte("\x81\xa6labels\xde\xff\xff"),
	[]byte("\x81\xa1k\xc6\xd3\x9b\xef\x65"),
	[]byte("\x81\xa1k\xc9\xff\xff\xff\xff\x01"),
	[]byte("\x81\xa2on\xdb\xff\xff\xff\xff"),
}

func fuzzSeeds(f *testing.F) {
	for _, s := range decodeSeeds {
		b, err := hex.DecodeString(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range hostileHeaders {
		f.Add(b)
	}
	f.Add(append(bytes.Repeat([]byte{0x91}, plugin.MaxConfigDepth+1), 0xc0))
	for _, v := range []any{
		map[string]any{"address": nil, "namespace": "default", "pool": map[string]any{
			"python": map[string]any{"jobspec": "/etc/warm.nomad.hcl", "size": "3", "namespaces": []string{"a", "b"}}}},
		map[string]any{"pool": map[string]any{"dev": map[string]any{"size": 2, "namespaces": "a"}}},
		map[string]any{"pool": "python", "command": "/bin/sh", "args": []string{"-c", "echo hi"}},
		map[string]any{"pool": "python", "command": nil, "args": []any{"x", nil, 1}},
		map[string]any{"on": true, "mount": []any{map[string]any{"src": "/a"}, nil}, "labels": map[string]any{"k": "v"},
			"nested": map[string]any{"n": []string{"x"}}, "health": map[string]any{"enabled": false, "interval": "5s"}},
		map[string]any{"unknown": []any{map[string]any{"deep": []any{[]any{1.5, "x", []byte{1}}}}}, "on": "yes"},
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
	fuzzSeeds(f)
	targets := []func() any{
		func() any { return new(fuzzPluginConfig) },
		func() any { return new(fuzzTaskConfig) },
		func() any { return new(fuzzKinds) },
		func() any { return new(map[string][]string) },
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, mk := range targets {
			out := mk()
			if err := plugin.DecodeConfig(data, out); err != nil {
				checkErr(t, err)
				continue
			}
			roundTrip(t, reflect.ValueOf(out).Elem().Interface(), mk)
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
	if got := reflect.ValueOf(out).Elem().Interface(); !reflect.DeepEqual(got, v) {
		t.Fatalf("round trip changed the value:\n got %#v\nwant %#v", got, v)
	}
}

// Found while fuzzing: hostile inputs that cost the plugin process dearly.
func TestDecodeHostileInput(t *testing.T) {
	nested := func(depth int) []byte { // {"unknown": [[[...nil]]]}, skipped as a key without a field
		data := append([]byte{0x81, 0xa7}, "unknown"...)
		return append(append(data, bytes.Repeat([]byte{0x91}, depth-1)...), 0xc0)
	}
	var cfg fuzzKinds
	if err := plugin.DecodeConfig(nested(plugin.MaxConfigDepth), &cfg); err != nil {
		t.Fatalf("%d levels: %v", plugin.MaxConfigDepth, err)
	}
	// 4 MiB of nesting overflowed the goroutine stack: a fatal error that
	// recover cannot catch, taking every task's plugin state with it.
	if err := plugin.DecodeConfig(nested(plugin.MaxConfigDepth+1), &cfg); err == nil || !strings.Contains(err.Error(), "nest deeper") {
		t.Fatalf("%d levels: err = %v", plugin.MaxConfigDepth+1, err)
	}
	if err := plugin.DecodeConfig(nested(4<<20), &cfg); err == nil || !strings.Contains(err.Error(), "more than the") {
		t.Fatalf("4 MiB: err = %v", err)
	}

	// None of the hostile headers may cost more than the data's size.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, data := range hostileHeaders {
		if err := plugin.DecodeConfig(data, &cfg); err == nil || !strings.Contains(err.Error(), "bytes left") {
			t.Errorf("%x: err = %v", data, err)
		}
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("hostile headers allocated %d bytes", got)
	}
}
