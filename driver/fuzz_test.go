package driver

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/grpc/status"

	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

func fuzzEncode(f *testing.F, v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// configFieldRE matches how every parseConfig/DecodeConfig problem starts: the
// name of the field (or the pool and then its field) it is about; "config" is
// the whole value.
var configFieldRE = regexp.MustCompile(`^(decode config: |config: |(address|token_file|ca_file|cert_file|key_file|tls_server_name|namespace|pool)[ :.\[]|no pool configured)`)

// FuzzPluginConfig drives the plugin block path SetConfig takes, msgpack bytes →
// DecodeConfig(rawConfig) → parseConfig, on arbitrary bytes: it never panics,
// and every problem reported names its field.
func FuzzPluginConfig(f *testing.F) {
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "w"), []byte(`job "x" {}`), 0o644); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tok"), []byte("secret\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	w := filepath.Join(dir, "w")
	pools := func(p map[string]any) map[string]any {
		return map[string]any{"address": nil, "ca_file": nil, "cert_file": nil, "key_file": nil,
			"namespace": nil, "tls_server_name": nil, "token_file": nil, "pool": p}
	}
	for _, v := range []any{
		pools(map[string]any{"dev": map[string]any{"jobspec": w, "size": "2", "max": "8", "claim_timeout": "5s"}}),
		pools(map[string]any{"dev": map[string]any{"jobspec": w, "size": 2, "max": uint64(math.MaxUint64), "claim_timeout": 1.5}}),
		pools(map[string]any{"Bad Name": map[string]any{"jobspec": "missing", "size": "three", "max": -1, "claim_timeout": "-3s"}}),
		pools(map[string]any{"a": map[string]any{"jobspec": w, "size": 1e300, "max": "NaN", "claim_timeout": "1e300"}}),
		pools(nil),
		map[string]any{"address": "http://127.0.0.1:4646", "token_file": filepath.Join(dir, "tok"), "cert_file": w, "pool": map[string]any{"p": map[string]any{"jobspec": w}}},
		map[string]any{"address": "::", "namespace": 7, "pool": []any{1}},
	} {
		f.Add(fuzzEncode(f, v))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var raw rawConfig
		if err := plugin.DecodeConfig(data, &raw); err != nil {
			checkNamesField(t, err)
			return
		}
		c, err := parseConfig(&raw)
		if err != nil {
			checkNamesField(t, err)
			return
		}
		if c == nil || len(c.Pools) == 0 {
			t.Fatalf("no error but no pools: %+v", c)
		}
		for _, p := range c.Pools {
			if p.Size < 0 || p.Size > p.Max || p.Max < 1 || p.ClaimTimeout <= 0 {
				t.Fatalf("accepted an out-of-range pool: %+v", p)
			}
		}
	})
}

// checkNamesField checks each joined problem of err names its field.
func checkNamesField(t *testing.T, err error) {
	t.Helper()
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		if !configFieldRE.MatchString(e.Error()) {
			t.Fatalf("problem names no field: %q", e.Error())
		}
	}
}

// FuzzStartTaskConfig sends arbitrary bytes as a task's driver config to a
// configured driver's StartTask (over a fake pool and sandbox runner): it never
// panics, a task config it cannot use fails with an error naming the field, and
// a task it starts is released again.
func FuzzStartTaskConfig(f *testing.F) {
	dir := f.TempDir()
	jobspec := filepath.Join(dir, "warm.nomad.hcl")
	if err := os.WriteFile(jobspec, []byte(`job "x" {}`), 0o644); err != nil {
		f.Fatal(err)
	}
	allocDir := filepath.Join(dir, "alloc")
	for _, d := range []string{filepath.Join(allocDir, "t", "private")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			f.Fatal(err)
		}
	}
	for _, name := range []string{"stdout", "stderr"} {
		if err := os.WriteFile(filepath.Join(allocDir, name), nil, 0o644); err != nil {
			f.Fatal(err)
		}
	}
	fp := newFakePool()
	fp.dir = filepath.Dir(allocDir)
	d := New(hclog.NewNullLogger(), fakeBackend(fp, newFakeRunner(), nil))
	f.Cleanup(func() { _ = d.Shutdown(context.Background()) })
	cfg := fuzzEncode(f, map[string]any{"pool": map[string]any{"dev": map[string]any{"jobspec": jobspec, "size": "1", "max": "4", "claim_timeout": "5s"}}})
	if err := d.SetConfig(context.Background(), cfg, &plugin.AgentConfig{ClientMinPort: 14000, ClientMaxPort: 14512}); err != nil {
		f.Fatal(err)
	}

	for _, v := range []any{
		map[string]any{"pool": "dev", "command": nil, "args": nil},
		map[string]any{"pool": "dev", "command": "/bin/echo", "args": []string{"a", "b"}},
		map[string]any{"pool": "dev", "command": nil, "args": []string{"x"}},
		map[string]any{"pool": "other", "command": "x", "args": nil},
		map[string]any{"pool": 1, "command": true, "args": "x"},
		map[string]any{"pool": "dev", "args": []any{1, nil, []any{}}},
		nil,
	} {
		f.Add(fuzzEncode(f, v))
	}
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, data []byte) {
		id := fmt.Sprintf("0000aaaa-0000-0000-0000-000000000000/t/%d", n.Add(1))
		tc := &plugin.TaskConfig{ID: id, Name: "t", AllocID: "0000aaaa-0000-0000-0000-000000000000", JobID: "job", Namespace: "default",
			DriverConfig: data, AllocDir: allocDir, StdoutPath: filepath.Join(allocDir, "stdout"), StderrPath: filepath.Join(allocDir, "stderr")}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		h, _, err := d.StartTask(ctx, tc)
		if err != nil {
			msg := err.Error()
			if plugin.IsRecoverable(err) {
				t.Fatalf("bad task config gave a recoverable error: %v", err)
			}
			if !strings.HasPrefix(msg, "decode task config: ") && !strings.HasPrefix(msg, "config: ") {
				t.Fatalf("error names no field: %q", msg)
			}
			return
		}
		if h == nil {
			t.Fatal("no handle and no error")
		}
		if err := d.DestroyTask(ctx, id, true); err != nil {
			t.Fatalf("destroy: %v", err)
		}
		if _, ok := d.tasks.get(id); ok {
			t.Fatal("task still tracked after destroy")
		}
	})
}

// TestHostileTaskConfigOverGRPC sends task configs that used to exhaust the
// plugin process (4 MiB of nested lists overflowed the stack, a fatal error
// recover cannot catch; a 5-byte bin32 header made the decoder allocate
// 3.5 GiB) through the real gRPC surface: each fails as an error status and
// the plugin keeps serving.
func TestHostileTaskConfigOverGRPC(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	for name, data := range map[string][]byte{
		"deep":  append(bytes.Repeat([]byte{0x91}, 4<<20), 0xc0),
		"bin32": []byte("\xc6\xd3\x9b\xef\x65"),
		"map32": []byte("\xdf\x01\x00\x80\xa1b\x9200"),
	} {
		tc := e.taskConfig(name, nil, nil)
		tc.MsgpackDriverConfig = data
		_, err := e.c.Driver.StartTask(context.Background(), &drivers.StartTaskRequest{Task: tc})
		if st, ok := status.FromError(err); err == nil || !ok || !strings.Contains(st.Message(), "decode task config") {
			t.Fatalf("%s: err = %v, want an error status from decoding", name, err)
		}
	}
	if err := e.c.Ping(); err != nil {
		t.Fatalf("plugin gone after hostile configs: %v", err)
	}
	h := e.start(e.taskConfig("ok", map[string]any{"pool": "dev", "command": "/bin/true"}, nil))
	if h == nil {
		t.Fatal("no handle")
	}
}
