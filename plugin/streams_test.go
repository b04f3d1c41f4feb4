package plugin_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/structs"
)

// holdOpen is how long a stream must stay silent to count as held open.
const holdOpen = 200 * time.Millisecond

// assertHeldOpen checks that recv blocks until ctx is cancelled, then ends.
func assertHeldOpen(t *testing.T, cancel context.CancelFunc, recv func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- recv() }()
	select {
	case err := <-errc:
		t.Fatalf("stream ended before the client cancelled: %v", err)
	case <-time.After(holdOpen):
	}
	cancel()
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Fatalf("after cancel: %v, want Canceled", err)
	}
}

func TestFingerprintStream(t *testing.T) {
	d, c, ctx := setup(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.fingerprints <- plugin.Fingerprint{
		Health:      plugin.HealthHealthy,
		Description: "ready",
		Attributes: map[string]any{
			"driver.fake.version": "0.1.0",
			"driver.fake.warm":    3,
			"driver.fake.big":     uint64(1 << 40),
			"driver.fake.ok":      true,
			"driver.fake.ratio":   0.5,
		},
	}
	stream, err := c.Driver.Fingerprint(ctx, &drivers.FingerprintRequest{})
	if err != nil {
		t.Fatal(err)
	}
	fp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	want := &drivers.FingerprintResponse{
		Health:            drivers.FingerprintResponse_HEALTHY,
		HealthDescription: "ready",
		Attributes: map[string]*structs.Attribute{
			"driver.fake.version": {Value: &structs.Attribute_StringVal{StringVal: "0.1.0"}},
			"driver.fake.warm":    {Value: &structs.Attribute_IntVal{IntVal: 3}},
			"driver.fake.big":     {Value: &structs.Attribute_IntVal{IntVal: 1 << 40}},
			"driver.fake.ok":      {Value: &structs.Attribute_BoolVal{BoolVal: true}},
			"driver.fake.ratio":   {Value: &structs.Attribute_FloatVal{FloatVal: 0.5}},
		},
	}
	if !proto.Equal(fp, want) {
		t.Fatalf("fingerprint = %v, want %v", fp, want)
	}

	// The driver giving up its channel must not end the stream: the client
	// would re-open it in a hot loop.
	close(d.fingerprints)
	assertHeldOpen(t, cancel, func() error { _, err := stream.Recv(); return err })
}

func TestFingerprintPanic(t *testing.T) {
	d, c, ctx := setup(t)
	d.locked(func() { d.panicIn = "Fingerprint" })
	stream, err := c.Driver.Fingerprint(ctx, &drivers.FingerprintRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	assertAppError(t, err, "boom in Fingerprint")
}

func TestTaskEventsStream(t *testing.T) {
	d, c, ctx := setup(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Driver.TaskEvents(ctx, &drivers.TaskEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	stamp := time.Unix(1700000000, 5).UTC()
	d.events <- plugin.TaskEvent{TaskID: "a/t/1", AllocID: "a", TaskName: "t", Timestamp: stamp, Message: "claimed warm allocation",
		Annotations: map[string]string{"pool": "python"}}
	d.events <- plugin.TaskEvent{AllocID: "a", TaskName: "t", Message: "no timestamp"}

	ev, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetAllocId() != "a" || ev.GetTaskName() != "t" || ev.GetTaskId() != "a/t/1" || ev.GetMessage() != "claimed warm allocation" ||
		!ev.GetTimestamp().AsTime().Equal(stamp) || ev.GetAnnotations()["pool"] != "python" {
		t.Fatalf("event = %v", ev)
	}
	ev, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetTimestamp() == nil || ev.GetTimestamp().AsTime().IsZero() || ev.GetTimestamp().GetSeconds() < stamp.Unix() {
		t.Fatalf("event without a driver timestamp got %v, want now", ev.GetTimestamp())
	}

	close(d.events)
	assertHeldOpen(t, cancel, func() error { _, err := stream.Recv(); return err })
}

func TestTaskStatsStream(t *testing.T) {
	d, c, ctx := setup(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cfg := fullTaskConfig(t)
	startTask(t, c, cfg)

	stream, err := c.Driver.TaskStats(ctx, &drivers.TaskStatsRequest{TaskId: cfg.Id, CollectionInterval: durationpb.New(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	d.stats <- &plugin.TaskResourceUsage{
		CPU:    &plugin.CPUUsage{TotalTicks: 120, Percent: 12.5, Measured: []string{"Total Ticks", "Percent"}},
		Memory: &plugin.MemoryUsage{RSS: 1 << 20, Usage: 2 << 20, Measured: []string{"RSS", "Usage"}},
	}
	d.stats <- nil // nothing measured yet: still a complete sample

	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	st := resp.GetStats()
	if st.GetTimestamp() == nil || st.GetAggResourceUsage() == nil {
		t.Fatalf("stats = %v, want timestamp and agg usage set", st)
	}
	cpu, mem := st.GetAggResourceUsage().GetCpu(), st.GetAggResourceUsage().GetMemory()
	if cpu.GetTotalTicks() != 120 || cpu.GetPercent() != 12.5 || len(cpu.GetMeasuredFields()) != 2 ||
		mem.GetRss() != 1<<20 || mem.GetUsage() != 2<<20 || mem.GetMeasuredFields()[0] != drivers.MemoryUsage_RSS {
		t.Fatalf("usage = %v", st.GetAggResourceUsage())
	}
	resp, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStats().GetTimestamp() == nil || resp.GetStats().GetAggResourceUsage().GetCpu() == nil || resp.GetStats().GetAggResourceUsage().GetMemory() == nil {
		t.Fatalf("empty sample = %v, want every part set", resp.GetStats())
	}
	d.locked(func() {
		if d.statsIntvl != 2*time.Second {
			t.Errorf("driver got interval %v, want 2s", d.statsIntvl)
		}
	})

	close(d.stats)
	assertHeldOpen(t, cancel, func() error { _, err := stream.Recv(); return err })
}

func TestTaskStatsUnknownTask(t *testing.T) {
	_, c, ctx := setup(t)
	stream, err := c.Driver.TaskStats(ctx, &drivers.TaskStatsRequest{TaskId: "no/such/task"})
	if err == nil {
		_, err = stream.Recv()
	}
	assertAppError(t, err, "task not found")
}
