package plugin

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/structs"
)

// This file is the one place where wire messages and the plain types of
// driver.go meet. Every message the client dereferences without a nil check
// (the client reads TaskHandle, its Config and their resources unchecked)
// is always filled here.

func agentConfigFromProto(c *base.NomadConfig) *AgentConfig {
	if c == nil {
		return nil
	}
	return &AgentConfig{
		ClientMinPort: c.GetDriver().GetClientMinPort(),
		ClientMaxPort: c.GetDriver().GetClientMaxPort(),
	}
}

// taskConfigFromProto keeps the wire message in Raw so the handle returned to
// the client echoes it unchanged.
func taskConfigFromProto(c *drivers.TaskConfig) *TaskConfig {
	if c == nil {
		return nil
	}
	cfg := &TaskConfig{
		ID:            c.GetId(),
		Name:          c.GetName(),
		JobName:       c.GetJobName(),
		JobID:         c.GetJobId(),
		TaskGroupName: c.GetTaskGroupName(),
		Namespace:     c.GetNamespace(),
		AllocID:       c.GetAllocId(),
		NodeID:        c.GetNodeId(),
		NodeName:      c.GetNodeName(),
		Env:           c.GetEnv(),
		DeviceEnv:     c.GetDeviceEnv(),
		User:          c.GetUser(),
		AllocDir:      c.GetAllocDir(),
		StdoutPath:    c.GetStdoutPath(),
		StderrPath:    c.GetStderrPath(),
		DriverConfig:  c.GetMsgpackDriverConfig(),
		Raw:           c,
	}
	if r := c.GetResources(); r != nil {
		cfg.Resources = &Resources{
			CPUShares:        r.GetAllocatedResources().GetCpu().GetCpuShares(),
			MemoryMB:         r.GetAllocatedResources().GetMemory().GetMemoryMb(),
			MemoryMaxMB:      r.GetAllocatedResources().GetMemory().GetMemoryMaxMb(),
			MemoryLimitBytes: r.GetLinuxResources().GetMemoryLimitBytes(),
			CpusetCpus:       r.GetLinuxResources().GetCpusetCpus(),
			CgroupPath:       r.GetLinuxResources().GetCpusetCgroup(),
		}
	}
	return cfg
}

// taskConfigToProto echoes the wire form when the config came from the client,
// and builds one from the plain fields when a driver made the config itself.
func taskConfigToProto(c *TaskConfig) *drivers.TaskConfig {
	if c == nil {
		return nil
	}
	if raw, ok := c.Raw.(*drivers.TaskConfig); ok && raw != nil {
		return raw
	}
	pc := &drivers.TaskConfig{
		Id:                  c.ID,
		Name:                c.Name,
		JobName:             c.JobName,
		JobId:               c.JobID,
		TaskGroupName:       c.TaskGroupName,
		Namespace:           c.Namespace,
		AllocId:             c.AllocID,
		NodeId:              c.NodeID,
		NodeName:            c.NodeName,
		Env:                 c.Env,
		DeviceEnv:           c.DeviceEnv,
		User:                c.User,
		AllocDir:            c.AllocDir,
		StdoutPath:          c.StdoutPath,
		StderrPath:          c.StderrPath,
		MsgpackDriverConfig: c.DriverConfig,
	}
	if r := c.Resources; r != nil {
		pc.Resources = &drivers.Resources{
			AllocatedResources: &drivers.AllocatedTaskResources{
				Cpu:    &drivers.AllocatedCpuResources{CpuShares: r.CPUShares},
				Memory: &drivers.AllocatedMemoryResources{MemoryMb: r.MemoryMB, MemoryMaxMb: r.MemoryMaxMB},
			},
			LinuxResources: &drivers.LinuxResources{
				CpuShares:        r.CPUShares,
				MemoryLimitBytes: r.MemoryLimitBytes,
				CpusetCpus:       r.CpusetCpus,
				CpusetCgroup:     r.CgroupPath,
			},
		}
	}
	return pc
}

// taskHandleFromProto rebuilds a handle the client sent back; its TaskConfig is
// filled from handle.config (the request's task_id is always empty).
func taskHandleFromProto(h *drivers.TaskHandle) *TaskHandle {
	if h == nil {
		return nil
	}
	return &TaskHandle{
		Version:     h.GetVersion(),
		Config:      taskConfigFromProto(h.GetConfig()),
		State:       TaskState(h.GetState()),
		DriverState: h.GetDriverState(),
	}
}

// taskHandleToProto falls back to the request's config when the driver left
// Config nil: the client addresses the task by handle.config.id forever after.
func taskHandleToProto(h *TaskHandle, reqConfig *drivers.TaskConfig) *drivers.TaskHandle {
	cfg := taskConfigToProto(h.Config)
	if cfg == nil {
		cfg = reqConfig
	}
	version := h.Version
	if version < 1 {
		// 0 marks pre-0.9 handles in Nomad; a handle must never look like one.
		version = 1
	}
	return &drivers.TaskHandle{
		Version:     version,
		Config:      cfg,
		State:       drivers.TaskState(h.State),
		DriverState: h.DriverState,
	}
}

func networkOverrideToProto(n *NetworkOverride) *drivers.NetworkOverride {
	if n == nil {
		return nil
	}
	return &drivers.NetworkOverride{PortMap: n.PortMap, Addr: n.Addr, AutoAdvertise: n.AutoAdvertise}
}

// exitResultToProto never returns nil: clients before 1.11.3 panic on a missing result.
func exitResultToProto(r *ExitResult) *drivers.ExitResult {
	if r == nil {
		return &drivers.ExitResult{}
	}
	return &drivers.ExitResult{
		ExitCode:  clampInt32(r.ExitCode),
		Signal:    clampInt32(r.Signal),
		OomKilled: r.OOMKilled,
	}
}

func clampInt32(v int) int32 {
	switch {
	case v > math.MaxInt32:
		return math.MaxInt32
	case v < math.MinInt32:
		return math.MinInt32
	}
	return int32(v)
}

// timestampToProto maps the zero time to the zero Timestamp (seconds
// -62135596800), which the client accepts, instead of leaving the field unset.
func timestampToProto(t time.Time) *timestamppb.Timestamp {
	return timestamppb.New(t)
}

func capabilitiesToProto(c Capabilities) *drivers.DriverCapabilities {
	modes := make([]drivers.NetworkIsolationSpec_NetworkIsolationMode, 0, len(c.NetworkModes))
	for _, m := range c.NetworkModes {
		modes = append(modes, drivers.NetworkIsolationSpec_NetworkIsolationMode(m))
	}
	mounts := drivers.DriverCapabilities_ANY_MOUNTS
	if c.NoMounts {
		mounts = drivers.DriverCapabilities_NO_MOUNTS
	}
	return &drivers.DriverCapabilities{
		SendSignals:           c.SendSignals,
		Exec:                  c.Exec,
		FsIsolation:           drivers.DriverCapabilities_FSIsolation(c.FSIsolation),
		NetworkIsolationModes: modes,
		MustCreateNetwork:     c.MustCreateNetwork,
		MountConfigs:          mounts,
		DisableLogCollection:  c.DisableLogCollection,
	}
}

func fingerprintToProto(f Fingerprint) *drivers.FingerprintResponse {
	attrs := make(map[string]*structs.Attribute, len(f.Attributes))
	for k, v := range f.Attributes {
		attrs[k] = attributeToProto(v)
	}
	return &drivers.FingerprintResponse{
		Attributes:        attrs,
		Health:            drivers.FingerprintResponse_HealthState(f.Health),
		HealthDescription: f.Description,
	}
}

// attributeToProto renders unsupported types with %v rather than dropping them.
func attributeToProto(v any) *structs.Attribute {
	a := &structs.Attribute{}
	switch x := v.(type) {
	case string:
		a.Value = &structs.Attribute_StringVal{StringVal: x}
	case bool:
		a.Value = &structs.Attribute_BoolVal{BoolVal: x}
	case int:
		a.Value = &structs.Attribute_IntVal{IntVal: int64(x)}
	case int8:
		a.Value = &structs.Attribute_IntVal{IntVal: int64(x)}
	case int16:
		a.Value = &structs.Attribute_IntVal{IntVal: int64(x)}
	case int32:
		a.Value = &structs.Attribute_IntVal{IntVal: int64(x)}
	case int64:
		a.Value = &structs.Attribute_IntVal{IntVal: x}
	case uint:
		a.Value = uintAttr(uint64(x))
	case uint8:
		a.Value = uintAttr(uint64(x))
	case uint16:
		a.Value = uintAttr(uint64(x))
	case uint32:
		a.Value = uintAttr(uint64(x))
	case uint64:
		a.Value = uintAttr(x)
	case float32:
		a.Value = &structs.Attribute_FloatVal{FloatVal: float64(x)}
	case float64:
		a.Value = &structs.Attribute_FloatVal{FloatVal: x}
	case nil:
		a.Value = &structs.Attribute_StringVal{StringVal: ""}
	default:
		a.Value = &structs.Attribute_StringVal{StringVal: fmt.Sprint(x)}
	}
	return a
}

func uintAttr(u uint64) *structs.Attribute_IntVal {
	if u > math.MaxInt64 {
		u = math.MaxInt64
	}
	return &structs.Attribute_IntVal{IntVal: int64(u)}
}

func taskEventToProto(e TaskEvent) *drivers.DriverTaskEvent {
	ts := e.Timestamp
	if ts.IsZero() {
		ts = time.Now()
	}
	return &drivers.DriverTaskEvent{
		TaskId:      e.TaskID,
		AllocId:     e.AllocID,
		TaskName:    e.TaskName,
		Timestamp:   timestamppb.New(ts),
		Message:     e.Message,
		Annotations: e.Annotations,
	}
}

func taskStatusToProto(s *TaskStatus, taskID string) *drivers.InspectTaskResponse {
	if s == nil {
		s = &TaskStatus{ID: taskID}
	}
	return &drivers.InspectTaskResponse{
		Task: &drivers.TaskStatus{
			Id:          s.ID,
			Name:        s.Name,
			State:       drivers.TaskState(s.State),
			StartedAt:   timestampToProto(s.StartedAt),
			CompletedAt: timestampToProto(s.CompletedAt),
			Result:      exitResultToProto(s.ExitResult),
		},
		Driver: &drivers.TaskDriverStatus{Attributes: s.Attributes},
	}
}

// taskStatsToProto always sets stats, timestamp and both usage parts: the
// client dereferences all of them.
func taskStatsToProto(u *TaskResourceUsage, taskID string) *drivers.TaskStatsResponse {
	if u == nil {
		u = &TaskResourceUsage{}
	}
	ts := u.Timestamp
	if ts.IsZero() {
		ts = time.Now()
	}
	cpu := &drivers.CPUUsage{}
	if c := u.CPU; c != nil {
		cpu.SystemMode = c.SystemMode
		cpu.UserMode = c.UserMode
		cpu.TotalTicks = c.TotalTicks
		cpu.Percent = c.Percent
		cpu.MeasuredFields = measuredFields(c.Measured, cpuFieldNames)
	}
	mem := &drivers.MemoryUsage{}
	if m := u.Memory; m != nil {
		mem.Rss = m.RSS
		mem.Cache = m.Cache
		mem.MaxUsage = m.MaxUsage
		mem.Usage = m.Usage
		mem.Swap = m.Swap
		mem.MeasuredFields = measuredFields(m.Measured, memoryFieldNames)
	}
	return &drivers.TaskStatsResponse{Stats: &drivers.TaskStats{
		Id:               taskID,
		Timestamp:        timestamppb.New(ts),
		AggResourceUsage: &drivers.TaskResourceUsage{Cpu: cpu, Memory: mem},
	}}
}

// Measured-field names as documented on CPUUsage and MemoryUsage; unknown names
// are dropped because the wire has no way to carry them.
var (
	cpuFieldNames = map[string]drivers.CPUUsage_Fields{
		"System Mode":       drivers.CPUUsage_SYSTEM_MODE,
		"User Mode":         drivers.CPUUsage_USER_MODE,
		"Total Ticks":       drivers.CPUUsage_TOTAL_TICKS,
		"Throttled Periods": drivers.CPUUsage_THROTTLED_PERIODS,
		"Throttled Time":    drivers.CPUUsage_THROTTLED_TIME,
		"Percent":           drivers.CPUUsage_PERCENT,
	}
	memoryFieldNames = map[string]drivers.MemoryUsage_Fields{
		"RSS":              drivers.MemoryUsage_RSS,
		"Cache":            drivers.MemoryUsage_CACHE,
		"Max Usage":        drivers.MemoryUsage_MAX_USAGE,
		"Kernel Usage":     drivers.MemoryUsage_KERNEL_USAGE,
		"Kernel Max Usage": drivers.MemoryUsage_KERNEL_MAX_USAGE,
		"Usage":            drivers.MemoryUsage_USAGE,
		"Swap":             drivers.MemoryUsage_SWAP,
	}
)

// measuredFields maps the names of measured fields to their wire values
// (cpuFieldNames or memoryFieldNames), in order, dropping unknown names.
func measuredFields[F any](names []string, known map[string]F) []F {
	out := make([]F, 0, len(names))
	for _, n := range names {
		if f, ok := known[n]; ok {
			out = append(out, f)
		}
	}
	return out
}
