// Package plugin speaks Nomad's task driver and device plugin wire protocols
// (go-plugin handshake, the BasePlugin, Driver and DevicePlugin gRPC services,
// msgpack config decoding) and routes every RPC to the plain Go interface
// Driver (Serve) or Device (ServeDevice). It knows nothing about pools.
package plugin

import (
	"context"
	"io"
	"time"

	"github.com/agentkernel/agentkernel-pool/hclspec"
)

// APIVersion is the only driver plugin API version Nomad clients speak (0.9 to 2.0.x).
const APIVersion = "v0.1.0"

// Driver is what a task driver implements; Serve adapts it to Nomad's gRPC services.
// No generated protobuf type appears here, so drivers never depend on the wire code.
type Driver interface {
	// Base: a bad config belongs in Fingerprint health, not in SetConfig's error.
	Base

	// TaskConfigSchema is the task config schema (root must be an Object).
	TaskConfigSchema() *hclspec.Spec
	// Capabilities is constant for the life of the process.
	Capabilities() Capabilities
	// Fingerprint sends the driver's health and attributes: once at once, then on
	// change, until ctx is done. The channel is closed when ctx is done.
	Fingerprint(ctx context.Context) (<-chan Fingerprint, error)
	// TaskEvents sends driver task events until ctx is done, then closes the channel.
	TaskEvents(ctx context.Context) (<-chan TaskEvent, error)

	// StartTask starts a task and returns its handle; mark retryable failures with
	// Recoverable.
	StartTask(ctx context.Context, cfg *TaskConfig) (*TaskHandle, *NetworkOverride, error)
	// RecoverTask re-attaches to a task from its handle alone (DriverState must suffice).
	RecoverTask(ctx context.Context, handle *TaskHandle) error
	// WaitTask blocks until the task exits or ctx is done; repeatable and concurrent.
	WaitTask(ctx context.Context, taskID string) (*ExitResult, error)
	// StopTask sends signal (empty: driver default), waits timeout, then kills.
	StopTask(ctx context.Context, taskID string, timeout time.Duration, signal string) error
	// DestroyTask frees everything the task holds; unknown ids are not an error.
	DestroyTask(ctx context.Context, taskID string, force bool) error
	// InspectTask reports the task's status.
	InspectTask(ctx context.Context, taskID string) (*TaskStatus, error)
	// TaskStats sends resource usage every interval until ctx is done, then closes
	// the channel. Sending nothing is allowed when no usage is available.
	TaskStats(ctx context.Context, taskID string, interval time.Duration) (<-chan *TaskResourceUsage, error)
	// SignalTask delivers a named signal ("SIGHUP") to the task.
	SignalTask(ctx context.Context, taskID string, signal string) error
	// ExecTask runs a command in the task's context (script checks); ctx carries the timeout.
	ExecTask(ctx context.Context, taskID string, cmd []string) (*ExecResult, error)
	// ExecTaskStreaming runs an interactive command (nomad alloc exec). It returns the
	// command's exit result; ctx is cancelled when the user goes away.
	ExecTaskStreaming(ctx context.Context, taskID string, opts *ExecOptions) (*ExitResult, error)
}

// Initializer is optionally implemented by drivers that want Nomad's Init call (>= 2.0.4).
type Initializer interface {
	Init(ctx context.Context) error
}

// Shutdowner is optionally implemented by drivers that want Nomad's Shutdown call (>= 2.0.4).
type Shutdowner interface {
	Shutdown(ctx context.Context) error
}

// Info is the answer to PluginInfo.
type Info struct {
	Name    string // driver name, equal to the binary name and the plugin block label
	Version string // semver, parsed by the Nomad client
}

// AgentConfig is what the Nomad agent tells a long-lived plugin about itself.
type AgentConfig struct {
	ClientMinPort uint32
	ClientMaxPort uint32
}

// FSIsolation says how the client prepares a task's directories.
type FSIsolation int

// FSIsolation values, as on the wire.
const (
	FSIsolationNone   FSIsolation = 0
	FSIsolationChroot FSIsolation = 1
	FSIsolationImage  FSIsolation = 2
)

// NetworkMode is a network isolation mode.
type NetworkMode int

// NetworkMode values, as on the wire.
const (
	NetworkModeHost  NetworkMode = 0
	NetworkModeGroup NetworkMode = 1
	NetworkModeTask  NetworkMode = 2
	NetworkModeNone  NetworkMode = 3
)

// Capabilities tells the client what the driver supports.
type Capabilities struct {
	SendSignals          bool
	Exec                 bool
	FSIsolation          FSIsolation
	NetworkModes         []NetworkMode
	MustCreateNetwork    bool
	NoMounts             bool // reject host/CSI volume mounts
	DisableLogCollection bool
}

// Health is a driver's fingerprint health.
type Health int

// Health values, as on the wire.
const (
	HealthUndetected Health = 0
	HealthUnhealthy  Health = 1
	HealthHealthy    Health = 2
)

// Fingerprint is one fingerprint report. Attribute values may be string, bool,
// int, int64, uint64 or float64; an empty string deletes an attribute.
type Fingerprint struct {
	Health      Health
	Description string
	Attributes  map[string]any
}

// TaskEvent is a driver event shown in the task's event list.
type TaskEvent struct {
	TaskID      string
	AllocID     string
	TaskName    string
	Timestamp   time.Time
	Message     string
	Annotations map[string]string
}

// TaskState is a task's state in a handle or status.
type TaskState int

// TaskState values, as on the wire.
const (
	TaskStateUnknown TaskState = 0
	TaskStateRunning TaskState = 1
	TaskStateExited  TaskState = 2
)

// TaskConfig is the client's description of a task to start.
type TaskConfig struct {
	ID            string // <alloc id>/<task name>/<invocation id>; new on every start
	Name          string
	JobName       string
	JobID         string
	TaskGroupName string
	Namespace     string
	AllocID       string
	NodeID        string
	NodeName      string
	Env           map[string]string
	DeviceEnv     map[string]string
	User          string
	AllocDir      string
	StdoutPath    string
	StderrPath    string
	// DriverConfig is the task's config block as msgpack (see DecodeConfig). It is
	// empty after an agent restart, so recovery must not depend on it.
	DriverConfig []byte
	Resources    *Resources

	// Raw holds the wire form of the config so handles echo it unchanged;
	// drivers leave it alone.
	Raw any
}

// Resources is the subset of task resources drivers commonly use.
type Resources struct {
	CPUShares        int64
	MemoryMB         int64
	MemoryMaxMB      int64
	MemoryLimitBytes int64
	CpusetCpus       string
	CgroupPath       string
}

// TaskHandle is what the client persists to recover a task.
type TaskHandle struct {
	Version     int32 // driver state schema version, >= 1
	Config      *TaskConfig
	State       TaskState
	DriverState []byte
}

// NetworkOverride tells the client the task's address and port map.
type NetworkOverride struct {
	PortMap       map[string]int32
	Addr          string
	AutoAdvertise bool
}

// ExitResult is how a task or command ended.
type ExitResult struct {
	ExitCode  int
	Signal    int
	OOMKilled bool
	Err       string // non-empty: the exit counts as a failure with this message
}

// TaskStatus answers InspectTask.
type TaskStatus struct {
	ID          string
	Name        string
	State       TaskState
	StartedAt   time.Time
	CompletedAt time.Time
	ExitResult  *ExitResult
	Attributes  map[string]string
}

// TaskResourceUsage is one stats sample of a task.
type TaskResourceUsage struct {
	Timestamp time.Time
	CPU       *CPUUsage
	Memory    *MemoryUsage
}

// CPUUsage is CPU usage; Measured names the fields that were measured
// ("System Mode", "User Mode", "Total Ticks", "Percent", ...).
type CPUUsage struct {
	SystemMode float64
	UserMode   float64
	TotalTicks float64
	Percent    float64
	Measured   []string
}

// MemoryUsage is memory usage in bytes; Measured names the measured fields
// ("RSS", "Cache", "Max Usage", "Usage", "Swap", ...).
type MemoryUsage struct {
	RSS      uint64
	Cache    uint64
	MaxUsage uint64
	Usage    uint64
	Swap     uint64
	Measured []string
}

// ExecResult is the outcome of a non-interactive exec.
type ExecResult struct {
	Stdout []byte
	Stderr []byte
	Exit   ExitResult
}

// TerminalSize is a tty size.
type TerminalSize struct {
	Height int
	Width  int
}

// ExecOptions wires an interactive exec to the user's stream. Stdin reaches EOF when
// the user closes stdin; Resize receives tty resizes and is closed with the stream.
type ExecOptions struct {
	Command []string
	Tty     bool
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
	Resize  <-chan TerminalSize
}
