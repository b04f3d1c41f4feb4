package device

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/agentkernel/agentkernel-pool/plugin"
)

const testNode = "9f4d1c2e-0000-4000-8000-000000000001"

func TestStateRoundTripAndGroups(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "agentkernel-pool")
	st := State{NodeID: testNode, Pools: []PoolState{
		{Name: "py", Warm: []string{"a1", "a2"}, Cold: []string{ColdID("py", 0)}, Taken: []string{"a0", ColdID("py", 1)}},
		{Name: "go", Warm: []string{}, Cold: []string{}, Taken: []string{}},
	}}
	if err := WriteState(dir, st); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode: %v %v", fi, err)
	}
	got, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.NodeID != testNode || len(got.Pools) != 2 || got.Pools[0].Name != "go" || !reflect.DeepEqual(got.Pools[1], st.Pools[0]) {
		t.Fatalf("read back %+v", got)
	}
	groups := Groups(got)
	if err := plugin.ValidateDeviceGroups(groups); err != nil {
		t.Fatalf("groups the client would refuse: %v", err)
	}
	want := []plugin.DeviceGroup{
		{Vendor: "agentkernel", Type: "sandbox", Name: "go", Instances: []plugin.DeviceInstance{}, Attributes: map[string]any{"pool": "go", "warm": true}},
		{Vendor: "agentkernel", Type: "sandbox", Name: "go.cold", Instances: []plugin.DeviceInstance{}, Attributes: map[string]any{"pool": "go", "warm": false}},
		{Vendor: "agentkernel", Type: "sandbox", Name: "py", Instances: []plugin.DeviceInstance{{ID: "a1", Healthy: true}, {ID: "a2", Healthy: true},
			{ID: "a0", HealthDescription: "claimed or gone"}}, Attributes: map[string]any{"pool": "py", "warm": true}},
		{Vendor: "agentkernel", Type: "sandbox", Name: "py.cold", Instances: []plugin.DeviceInstance{{ID: "cold.py.0", Healthy: true},
			{ID: "cold.py.1", HealthDescription: "no capacity left for it"}}, Attributes: map[string]any{"pool": "py", "warm": false}},
	}
	if !reflect.DeepEqual(groups, want) {
		t.Fatalf("groups\n%+v\nwant\n%+v", groups, want)
	}
}

func TestReadStateMissingIsEmpty(t *testing.T) {
	st, err := ReadState(t.TempDir())
	if err != nil || len(st.Pools) != 0 {
		t.Fatalf("missing state: %+v, %v", st, err)
	}
}

// What the device plugin reads must come whole from the driver: a symlink,
// a FIFO, an oversized or malformed file, or a state the client would
// refuse is an error (the plugin keeps what it sent before), never a hang
// or a set that gets the plugin dropped.
func TestReadStateRefusesWhatTheDriverDidNotWrite(t *testing.T) {
	cases := map[string]func(t *testing.T, path string){
		"symlink": func(t *testing.T, path string) {
			target := filepath.Join(t.TempDir(), "elsewhere.json")
			os.WriteFile(target, []byte(`{"pools":[]}`), 0o600)
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		},
		"fifo": func(t *testing.T, path string) { mkfifo(t, path) },
		"oversized": func(t *testing.T, path string) {
			writeFile(t, path, `{"pools":[],"x":"`+strings.Repeat("a", maxStateBytes)+`"}`)
		},
		"not json":   func(t *testing.T, path string) { writeFile(t, path, "pools: [") },
		"bad pool":   func(t *testing.T, path string) { writeFile(t, path, `{"pools":[{"name":"../x"}]}`) },
		"pool twice": func(t *testing.T, path string) { writeFile(t, path, `{"pools":[{"name":"a"},{"name":"a"}]}`) },
		"id twice": func(t *testing.T, path string) {
			writeFile(t, path, `{"pools":[{"name":"a","warm":["x"]},{"name":"b","warm":["x"]}]}`)
		},
		"empty id": func(t *testing.T, path string) { writeFile(t, path, `{"pools":[{"name":"a","warm":[""]}]}`) },
		"long id": func(t *testing.T, path string) {
			writeFile(t, path, `{"pools":[{"name":"a","warm":["`+strings.Repeat("x", 200)+`"]}]}`)
		},
		"cold as warm": func(t *testing.T, path string) { writeFile(t, path, `{"pools":[{"name":"a","warm":["cold.a.0"]}]}`) },
		"other's cold": func(t *testing.T, path string) { writeFile(t, path, `{"pools":[{"name":"a","cold":["cold.b.0"]}]}`) },
		"too many": func(t *testing.T, path string) {
			ids := make([]string, maxInstances+1)
			for i := range ids {
				ids[i] = `"i` + strconv.Itoa(i) + `"`
			}
			writeFile(t, path, `{"pools":[{"name":"a","warm":[`+strings.Join(ids, ",")+`]}]}`)
		},
	}
	for name, plant := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			plant(t, filepath.Join(dir, stateFile))
			if st, err := ReadState(dir); err == nil {
				t.Fatalf("read %+v, want an error", st)
			}
		})
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
}
