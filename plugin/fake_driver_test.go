package plugin_test

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/agentkernel/agentkernel-pool/hclspec"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

// fakeDriver is a scriptable in-memory Driver. Tasks "run" until StopTask or
// the test calls exit.
type fakeDriver struct {
	mu          sync.Mutex
	tasks       map[string]*fakeTask
	setConfigs  []setConfigCall
	started     []*plugin.TaskConfig
	recovered   []*plugin.TaskHandle
	stops       []stopCall
	destroys    []destroyCall
	signals     []string
	statsIntvl  time.Duration
	execStarted chan struct{} // closed when a `hang` exec starts
	execCtxDone chan struct{} // closed when a `hang` exec's context ends

	// Scripting knobs, set before the first RPC.
	configSchema  *hclspec.Spec
	startErr      error
	panicIn       string
	nilWaitResult bool
	fingerprints  chan plugin.Fingerprint
	events        chan plugin.TaskEvent
	stats         chan *plugin.TaskResourceUsage
}

type fakeTask struct {
	cfg    *plugin.TaskConfig
	done   chan struct{}
	result *plugin.ExitResult
}

type setConfigCall struct {
	data  []byte
	agent *plugin.AgentConfig
}

type stopCall struct {
	id      string
	timeout time.Duration
	signal  string
}

type destroyCall struct {
	id    string
	force bool
}

func newFakeDriver() *fakeDriver {
	return &fakeDriver{
		tasks:        map[string]*fakeTask{},
		configSchema: hclspec.NewObject(map[string]*hclspec.Spec{"size": hclspec.NewAttr("size", "string", false)}),
		fingerprints: make(chan plugin.Fingerprint, 4),
		events:       make(chan plugin.TaskEvent, 4),
		stats:        make(chan *plugin.TaskResourceUsage, 4),
		execStarted:  make(chan struct{}),
		execCtxDone:  make(chan struct{}),
	}
}

func (f *fakeDriver) maybePanic(method string) {
	f.mu.Lock()
	p := f.panicIn == method
	f.mu.Unlock()
	if p {
		panic("boom in " + method)
	}
}

func (f *fakeDriver) task(id string) (*fakeTask, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tasks[id]
	if !ok {
		return nil, fmt.Errorf("task not found: %q", id)
	}
	return t, nil
}

// exit ends a task with the given result.
func (f *fakeDriver) exit(id string, res plugin.ExitResult) {
	t, err := f.task(id)
	if err != nil {
		panic(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if t.result == nil {
		t.result = &res
		close(t.done)
	}
}

func (f *fakeDriver) PluginInfo() plugin.Info {
	f.maybePanic("PluginInfo")
	return plugin.Info{Name: "fake", Version: "0.1.0"}
}

func (f *fakeDriver) ConfigSchema() *hclspec.Spec { return f.configSchema }

func (f *fakeDriver) SetConfig(_ context.Context, data []byte, agent *plugin.AgentConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setConfigs = append(f.setConfigs, setConfigCall{data: data, agent: agent})
	var cfg struct {
		Size string `codec:"size"`
	}
	if err := plugin.DecodeConfig(data, &cfg); err != nil {
		return err
	}
	if n, err := strconv.Atoi(cfg.Size); cfg.Size != "" && (err != nil || n < 0) {
		return fmt.Errorf("size must be a whole number, not negative, got %q", cfg.Size)
	}
	return nil
}

func (f *fakeDriver) TaskConfigSchema() *hclspec.Spec {
	return hclspec.NewObject(map[string]*hclspec.Spec{"command": hclspec.NewAttr("command", "string", true)})
}

func (f *fakeDriver) Capabilities() plugin.Capabilities {
	return plugin.Capabilities{
		SendSignals:  true,
		Exec:         true,
		FSIsolation:  plugin.FSIsolationImage,
		NetworkModes: []plugin.NetworkMode{plugin.NetworkModeHost, plugin.NetworkModeGroup},
		NoMounts:     true,
	}
}

func (f *fakeDriver) Fingerprint(ctx context.Context) (<-chan plugin.Fingerprint, error) {
	f.maybePanic("Fingerprint")
	return f.fingerprints, nil
}

func (f *fakeDriver) TaskEvents(ctx context.Context) (<-chan plugin.TaskEvent, error) {
	return f.events, nil
}

func (f *fakeDriver) StartTask(_ context.Context, cfg *plugin.TaskConfig) (*plugin.TaskHandle, *plugin.NetworkOverride, error) {
	f.maybePanic("StartTask")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.startErr != nil {
		return nil, nil, f.startErr
	}
	f.started = append(f.started, cfg)
	f.tasks[cfg.ID] = &fakeTask{cfg: cfg, done: make(chan struct{})}
	h := &plugin.TaskHandle{Version: 1, Config: cfg, State: plugin.TaskStateRunning, DriverState: []byte("state:" + cfg.ID)}
	n := &plugin.NetworkOverride{PortMap: map[string]int32{"http": 8080}, Addr: "10.0.0.2", AutoAdvertise: true}
	return h, n, nil
}

func (f *fakeDriver) RecoverTask(_ context.Context, h *plugin.TaskHandle) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recovered = append(f.recovered, h)
	if string(h.DriverState) != "state:"+h.Config.ID {
		return fmt.Errorf("recover task %q: bad driver state %q", h.Config.ID, h.DriverState)
	}
	if _, ok := f.tasks[h.Config.ID]; !ok {
		f.tasks[h.Config.ID] = &fakeTask{cfg: h.Config, done: make(chan struct{})}
	}
	return nil
}

func (f *fakeDriver) WaitTask(ctx context.Context, id string) (*plugin.ExitResult, error) {
	f.maybePanic("WaitTask")
	t, err := f.task(id)
	if err != nil {
		return nil, err
	}
	select {
	case <-t.done:
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.nilWaitResult {
			return nil, nil
		}
		r := *t.result
		return &r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakeDriver) StopTask(_ context.Context, id string, timeout time.Duration, signal string) error {
	if _, err := f.task(id); err != nil {
		return err
	}
	f.mu.Lock()
	f.stops = append(f.stops, stopCall{id: id, timeout: timeout, signal: signal})
	f.mu.Unlock()
	f.exit(id, plugin.ExitResult{ExitCode: 130, Signal: 2})
	return nil
}

func (f *fakeDriver) DestroyTask(_ context.Context, id string, force bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.destroys = append(f.destroys, destroyCall{id: id, force: force})
	delete(f.tasks, id)
	return nil
}

func (f *fakeDriver) InspectTask(_ context.Context, id string) (*plugin.TaskStatus, error) {
	t, err := f.task(id)
	if err != nil {
		return nil, err
	}
	return &plugin.TaskStatus{ID: id, Name: t.cfg.Name, State: plugin.TaskStateRunning,
		StartedAt: time.Unix(1700000000, 0), Attributes: map[string]string{"pool": "python"}}, nil
}

func (f *fakeDriver) TaskStats(_ context.Context, id string, interval time.Duration) (<-chan *plugin.TaskResourceUsage, error) {
	if _, err := f.task(id); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.statsIntvl = interval
	f.mu.Unlock()
	return f.stats, nil
}

func (f *fakeDriver) SignalTask(_ context.Context, id string, signal string) error {
	if _, err := f.task(id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.signals = append(f.signals, signal)
	return nil
}

// ExecTask understands `echo ARGS...` and `exit N`; `sleep` waits for ctx.
func (f *fakeDriver) ExecTask(ctx context.Context, id string, cmd []string) (*plugin.ExecResult, error) {
	if _, err := f.task(id); err != nil {
		return nil, err
	}
	switch cmd[0] {
	case "echo":
		return &plugin.ExecResult{Stdout: []byte(fmt.Sprintln(cmd[1:]))}, nil
	case "exit":
		code, _ := strconv.Atoi(cmd[1])
		return &plugin.ExecResult{Stderr: []byte("bye"), Exit: plugin.ExitResult{ExitCode: code}}, nil
	case "sleep":
		<-ctx.Done()
		return nil, ctx.Err()
	case "nothing":
		return nil, nil
	}
	return nil, fmt.Errorf("unknown command %q", cmd[0])
}

// ExecTaskStreaming: `cat` echoes stdin to stdout and every resize to stderr,
// then exits 7; `hang` blocks until the stream's context ends.
func (f *fakeDriver) ExecTaskStreaming(ctx context.Context, id string, opts *plugin.ExecOptions) (*plugin.ExitResult, error) {
	f.maybePanic("ExecTaskStreaming")
	if _, err := f.task(id); err != nil {
		return nil, err
	}
	switch opts.Command[0] {
	case "cat":
		if _, err := io.Copy(opts.Stdout, opts.Stdin); err != nil {
			return nil, err
		}
		_, _ = io.WriteString(opts.Stdout, "<eof>")
		// Resizes sent before stdin ended are queued by now: frames are handled in order.
	drain:
		for {
			select {
			case sz, ok := <-opts.Resize:
				if !ok {
					break drain
				}
				fmt.Fprintf(opts.Stderr, "resize %dx%d\n", sz.Height, sz.Width)
			default:
				break drain
			}
		}
		return &plugin.ExitResult{ExitCode: 7}, nil
	case "hang":
		close(f.execStarted)
		<-ctx.Done()
		close(f.execCtxDone)
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("unknown command %q", opts.Command[0])
}

// Init and Shutdown make fakeDriver an Initializer and a Shutdowner.
func (f *fakeDriver) Init(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.panicIn == "Init" {
		return fmt.Errorf("init failed")
	}
	return nil
}

func (f *fakeDriver) Shutdown(context.Context) error { return nil }

// plainDriver hides the optional interfaces of the driver it wraps.
type plainDriver struct{ plugin.Driver }

// locked runs fn under the driver's lock, for tests that script the driver or
// inspect the calls it recorded while RPCs run.
func (f *fakeDriver) locked(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}
